"""Structured logs (structlog): JSON lines when stderr is not a terminal, readable ones when it is.

Every process calls `configure` once at start (`switchyard.cli.main`). Two ways in, one output:
- `logging.getLogger("switchyard.…")` (and libraries' loggers) go through the standard library
  and structlog's `ProcessorFormatter`;
- the lines written per request (`access`) and per job (`job_log`) use structlog's own bound
  logger straight to stderr: no `LogRecord`, a few microseconds a line.

Field names are the same everywhere: `request_id`, `job_id`, `key_id`, `duration_ms`.
`SWITCHYARD_LOG_LEVEL` sets the level of Switchyard's own loggers; libraries (the database
drivers, httpx, ...) stay at WARNING whatever it says. `SWITCHYARD_LOG_FORMAT=json|console`
forces a format.

`REQUEST_ID` carries a request's id from the web's request log to the job it submits (its
state hash), and in a worker from the job to the provider call (`x-request-id`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import sys
from contextvars import ContextVar
from typing import Any

import orjson
import structlog

REQUEST_ID: ContextVar[str | None] = ContextVar("switchyard_request_id", default=None)
REQUEST_ID_FIELD = "request_id"  # in a job's state hash
# A client's own id is kept when it is this sane: short, printable, no spaces or quotes.
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-/+=@]{1,128}")
QUIET_LIBRARIES = ("sqlalchemy", "aiosqlite", "asyncpg", "httpx", "httpcore", "alembic", "arq", "uvicorn")

# Until `configure` runs (a test's process, a library use), structlog hands its lines to the
# standard library's loggers, whatever handlers those have, and never prints them itself.
structlog.configure(
    processors=[structlog.stdlib.render_to_log_kwargs],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    cache_logger_on_first_use=False,
)

# structlog's own loggers for the hot lines; each line names its logger (`logger=`) itself
ACCESS = "switchyard.access"
access = structlog.get_logger(ACCESS)
JOBS = "switchyard.job"
jobs = structlog.get_logger(JOBS)
CONFIGURED_ENV = "_SWITCHYARD_LOGS_CONFIGURED"  # set by `configure`: uvicorn's spawned web workers see it


# A new id: 20 random hex digits per process, then a count (a uuid4 costs ~2 us a request).
_ID_PREFIX = secrets.token_hex(10)
_ids = itertools.count()


def request_id_from(value: bytes | str | None) -> str:
    """The client's `x-request-id` when it is sane, else a new one (32 hex digits)."""
    if value:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if _SANE_ID.fullmatch(text):
            return text
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFFFFFF:012x}"


def _json(_: Any, __: str, event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, default=str)


def _logger_name(logger: Any, _: str, event: dict[str, Any]) -> dict[str, Any]:
    if "logger" not in event:
        name = getattr(logger, "name", None)
        if name:
            event["logger"] = name
    return event


def configure_from_env() -> None:
    """`configure` with `SWITCHYARD_LOG_LEVEL` and `SWITCHYARD_LOG_FORMAT`."""
    configure(os.environ.get("SWITCHYARD_LOG_LEVEL"), os.environ.get("SWITCHYARD_LOG_FORMAT"))


def configure_if_asked() -> None:
    """In a process started by a configured one (uvicorn's web workers): configure it the same way.
    A process that never configured logging (a test's app) is left alone."""
    if os.environ.get(CONFIGURED_ENV) and not _configured:
        configure_from_env()


_configured = False


def configure(level: str | None = None, fmt: str | None = None) -> None:
    """Set up logging for this process (idempotent)."""
    global _configured
    _configured = True
    os.environ[CONFIGURED_ENV] = "1"
    level_name = (level or "INFO").upper()
    numeric = logging.getLevelName(level_name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    fmt = (fmt or "").lower()
    as_json = fmt == "json" or (fmt != "console" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        renderer: Any = _json
        shared_tail: list[Any] = [structlog.processors.format_exc_info]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        shared_tail = []
    structlog.configure(
        processors=[*shared, *shared_tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer)
        if as_json
        else structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *shared_tail,
            (lambda *a: _json(*a).decode()) if as_json else renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.INFO))
    logging.getLogger("switchyard").setLevel(numeric)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
