# Every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test bench lint format migrate clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## install, migrate, start embedded Redis (if REDIS_URL unset), web and workers
	$(BIN)/switchyard up

test: $(STAMP)  ## install and run the whole test suite
	$(BIN)/python -m pytest -q -n auto

bench: $(STAMP)  ## run the benchmarks and print their figures beside DESIGN.md's targets
	$(BIN)/python -m bench

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy switchyard api jobs storage workers

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: $(STAMP)  ## apply the database migrations
	$(BIN)/switchyard migrate

clean:  ## remove .venv and caches (data/ is kept)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
