"""The job timeout must leave room for one provider's tries: checked at start (settings_problems)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from switchyard.settings import Settings, settings_problems


def _settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


def test_the_defaults_are_consistent() -> None:
    settings = _settings()
    assert settings.job_timeout_s == 150
    assert settings.job_timeout_s > settings.provider_timeout_s * settings.provider_attempts
    assert settings_problems(settings) == []


def test_the_test_suites_settings_are_consistent(settings: Settings) -> None:
    assert settings_problems(settings) == []


@pytest.mark.parametrize(
    ("job", "provider", "attempts"),
    [("60", "60", "2"), ("120", "60", "2"), ("30", "10", "3")],
)
def test_a_job_timeout_within_the_providers_tries_is_a_problem(
    job: str, provider: str, attempts: str
) -> None:
    problems = settings_problems(
        _settings(
            SWITCHYARD_JOB_TIMEOUT_S=job,
            SWITCHYARD_PROVIDER_TIMEOUT_S=provider,
            SWITCHYARD_PROVIDER_ATTEMPTS=attempts,
        )
    )
    assert len(problems) == 1
    assert "SWITCHYARD_JOB_TIMEOUT_S" in problems[0] and "SWITCHYARD_PROVIDER_TIMEOUT_S" in problems[0]


@pytest.mark.parametrize("command", [["up"], ["web"], ["worker", "--queue", "interactive"]])
def test_up_web_and_worker_refuse_to_start_with_inconsistent_timeouts(
    command: list[str], tmp_path: Path
) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "REDIS_URL", "DATABASE_URL"))
    }
    env |= {
        "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHYARD_JOB_TIMEOUT_S": "60",
        "SWITCHYARD_PROVIDER_TIMEOUT_S": "60",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "switchyard.cli", *command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "SWITCHYARD_JOB_TIMEOUT_S (60) must exceed" in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was started
