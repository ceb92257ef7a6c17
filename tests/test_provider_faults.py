"""Provider failures: retried, then the next provider, then failed with the reason (502 to a
synchronous caller, a `failed` job to a poller); refusals are not retried; hung providers time out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from switchyard.redis_server import free_port
from switchyard.standin import StandIn
from tests.conftest import (
    Gateway,
    chat_body,
    get_job,
    make_settings,
    running_gateway,
    wait_for_status,
    write_providers,
)


@pytest.fixture
async def backup() -> AsyncIterator[StandIn]:
    server = await StandIn(models=["mock/echo"]).start()
    yield server
    await server.stop()


def two_providers(tmp_path: Path, first_url: str, second_url: str) -> Path:
    return write_providers(
        tmp_path / "two-providers.toml",
        [
            {"name": "primary", "kind": "openai", "base_url": first_url, "models": ["mock/echo"]},
            {"name": "secondary", "kind": "openai", "base_url": second_url, "models": ["mock/echo"]},
        ],
    )


@pytest.fixture
async def fallback_gw(
    env: dict[str, str], tmp_path: Path, standin: StandIn, backup: StandIn
) -> AsyncIterator[Gateway]:
    """`primary` is the standin fixture, `secondary` is `backup`; both serve mock/echo."""
    settings = make_settings(
        {**env, "SWITCHYARD_PROVIDERS": str(two_providers(tmp_path, standin.base_url, backup.base_url))}
    )
    async with running_gateway(settings) as gateway:
        gateway.start_worker()
        yield gateway


async def test_a_failing_provider_falls_back_to_the_next(
    fallback_gw: Gateway, standin: StandIn, backup: StandIn
) -> None:
    gw = fallback_gw
    key = await gw.create_key()
    standin.status = 500
    response = await gw.client.post(
        "/api/v1/chat", json=chat_body("fall back"), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: fall back"
    assert standin.chat_calls == 2  # provider_attempts on the first provider
    assert backup.chat_calls == 1
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "succeeded"
    assert job["provider"] == "secondary"
    assert job["attempts"] == 3


async def test_an_unreachable_provider_falls_back_to_the_next(
    env: dict[str, str], tmp_path: Path, backup: StandIn
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    settings = make_settings(
        {**env, "SWITCHYARD_PROVIDERS": str(two_providers(tmp_path, closed, backup.base_url))}
    )
    async with running_gateway(settings) as gw:
        gw.start_worker()
        key = await gw.create_key()
        response = await gw.client.post(
            "/api/v1/completion", json=chat_body("reach"), headers={"X-API-Key": key}
        )
        assert response.status_code == 200, response.text
        job = await get_job(gw.client, key, response.headers["x-job-id"])
        assert job["provider"] == "secondary"


async def test_every_provider_failing_is_502_and_a_failed_job(
    fallback_gw: Gateway, standin: StandIn, backup: StandIn
) -> None:
    gw = fallback_gw
    key = await gw.create_key()
    standin.status = 500
    backup.status = 503
    response = await gw.client.post(
        "/api/v1/completion", json=chat_body("doomed"), headers={"X-API-Key": key}
    )
    assert response.status_code == 502
    body = response.json()
    assert body["success"] is False and body["error"] == "Bad Gateway"
    assert "secondary" in body["message"] and "HTTP 503" in body["message"]
    assert standin.chat_calls == 2 and backup.chat_calls == 2
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "failed"
    assert job["attempts"] == 4
    assert job["result"] is None
    assert job["error"]["type"] == "provider_error"
    assert job["error"]["message"] == body["message"]

    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("doomed too"), headers={"X-API-Key": key}
    )
    polled = await wait_for_status(gw.client, key, submitted.json()["data"]["job_id"], "failed", "succeeded")
    assert polled["status"] == "failed"
    assert "stand-in status" in polled["error"]["message"]


async def test_a_transient_failure_is_retried_on_the_same_provider(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    response = await gw.client.post(
        "/api/v1/chat", json=chat_body("[fail:1] once"), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["attempts"] == 2
    assert job["provider"] == "standin"
    assert standin.chat_calls == 2


@pytest.mark.parametrize(
    ("dialect", "path", "headers"),
    [
        ("native", "/api/v1/completion", "X-API-Key"),
        ("credits", "/api/v1/chat", "Authorization"),
        ("openai", "/v1/chat/completions", "Authorization"),
    ],
)
async def test_a_provider_refusal_is_not_retried(
    gw: Gateway, key: str, standin: StandIn, dialect: str, path: str, headers: str
) -> None:
    gw.start_worker()
    value = key if headers == "X-API-Key" else f"Bearer {key}"
    response = await gw.client.post(path, json=chat_body("[400] no"), headers={headers: value})
    assert response.status_code == 502, response.text
    assert standin.chat_calls == 1
    body: dict[str, Any] = response.json()
    if dialect == "native":
        message = body["message"]
        assert body["success"] is False
    elif dialect == "credits":
        message = body["error"]
    else:
        message = body["error"]["message"]
        assert body["error"]["type"] == "provider_rejected"
    assert "refused" in message and "stand-in says 400" in message
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "failed" and job["attempts"] == 1


@pytest.mark.parametrize(
    ("marker", "reason"), [("[429]", "HTTP 429"), ("[html]", "not JSON"), ("[fail]", "HTTP 500")]
)
async def test_retryable_failures_are_retried_then_fail_with_the_reason(
    gw: Gateway, key: str, standin: StandIn, marker: str, reason: str
) -> None:
    gw.start_worker()
    response = await gw.client.post(
        "/api/v1/chat", json=chat_body(f"{marker} again"), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 502
    assert reason in response.json()["error"]
    assert standin.chat_calls == 2
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "failed" and job["attempts"] == 2


@pytest.mark.settings(SWITCHYARD_JOB_TIMEOUT_S="1")
async def test_a_hung_provider_times_the_job_out(gw: Gateway, key: str) -> None:
    gw.start_worker()
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("[hang]"), headers={"X-API-Key": key}
    )
    sync = await gw.client.post(
        "/api/v1/completion", json=chat_body("[hang] sync"), headers={"X-API-Key": key}
    )
    assert sync.status_code == 502, sync.text
    assert "timed out" in sync.json()["message"]
    job = await wait_for_status(
        gw.client, key, submitted.json()["data"]["job_id"], "failed", "succeeded", timeout=5
    )
    assert job["status"] == "failed"
    assert job["error"]["type"] == "timeout"
    assert "timed out after 1s" in job["error"]["message"]


@pytest.mark.settings(SWITCHYARD_PROVIDER_TIMEOUT_S="0.3")
async def test_a_slow_provider_call_times_out_and_is_retried(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    response = await gw.client.post(
        "/api/v1/completion", json=chat_body("[sleep:1] slow"), headers={"X-API-Key": key}
    )
    assert response.status_code == 502
    assert "timed out after 0.3s" in response.json()["message"]
    assert standin.chat_calls == 2


async def test_a_retry_runs_after_its_backoff_not_after_an_idle_sweep(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    """SWITCHYARD_RETRY_BACKOFF_S is 0.01 here: the retry is due at once, and nothing else
    happening on the queue must not be what makes the worker look again."""
    gw.start_worker()
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await gw.client.post(
        "/api/v1/chat", json=chat_body("[fail:1] quick"), headers={"Authorization": f"Bearer {key}"}
    )
    elapsed = loop.time() - started
    assert response.status_code == 200
    assert standin.chat_calls == 2
    assert elapsed < 2.0, f"a retry with a 10 ms backoff took {elapsed:.1f}s"


@pytest.mark.settings(SWITCHYARD_WORKER_MAX_TRIES="3")
async def test_failing_providers_are_the_reason_even_when_attempts_exceed_max_tries(
    fallback_gw: Gateway, standin: StandIn, backup: StandIn
) -> None:
    gw = fallback_gw
    key = await gw.create_key()
    standin.status = 500
    backup.status = 500
    response = await gw.client.post("/api/v1/completion", json=chat_body("many"), headers={"X-API-Key": key})
    assert response.status_code == 502
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["error"]["type"] == "provider_error", job["error"]
    assert "HTTP 500" in job["error"]["message"]
