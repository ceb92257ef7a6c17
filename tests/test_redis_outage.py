"""Redis unreachable at request time: 503 in the dialect's shape, and recovery without a restart
once it is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.redis_server import EmbeddedRedis
from tests.conftest import base_env, chat_body, eventually, make_settings, running_gateway, wait_for_status


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, so stopping it disturbs no other test."""
    server = EmbeddedRedis(tmp_path / "own-redis", persistent=False).start()
    yield server
    server.stop()


async def test_redis_down_is_503_and_recovers_when_it_is_back(
    own_redis: EmbeddedRedis, sqlite_url: str, providers_file: Path, tmp_path: Path
) -> None:
    settings = make_settings(base_env(own_redis.url, sqlite_url, providers_file, tmp_path / "data"))
    async with running_gateway(settings) as gw:
        gw.start_worker()
        key = await gw.create_key()
        headers = {"Authorization": f"Bearer {key}"}
        assert (
            await gw.client.post("/api/v1/chat", json=chat_body("before"), headers=headers)
        ).status_code == 200

        own_redis.stop()
        down = await gw.client.post("/api/v1/chat", json=chat_body("during"), headers=headers)
        assert down.status_code == 503
        assert "Redis" in down.json()["error"]
        native = await gw.client.post(
            "/api/v1/completion?batch=1", json=chat_body("during"), headers={"X-API-Key": key}
        )
        assert native.status_code == 503
        assert native.json()["success"] is False and native.json()["error"] == "Service Unavailable"
        openai_shape = await gw.client.post("/v1/chat/completions", json=chat_body("during"), headers=headers)
        assert openai_shape.status_code == 503
        assert openai_shape.json()["error"]["type"] == "service_unavailable"
        jobs = await gw.client.get("/api/v1/jobs", headers=headers)
        assert jobs.status_code == 503
        assert (await gw.client.get("/health")).status_code == 503
        await asyncio.sleep(0.3)  # the worker and the web process notice the loss meanwhile

        own_redis.start()  # the same port, empty: what a restarted non-persistent Redis looks like

        async def healthy() -> bool:
            return (await gw.client.get("/health")).status_code == 200

        await eventually(healthy, timeout=5, what="/health to answer 200 again")
        after = await gw.client.post("/api/v1/chat", json=chat_body("after"), headers=headers)
        assert after.status_code == 200, after.text
        assert after.json()["choices"][0]["message"]["content"] == "echo: after"
        batch = await gw.client.post("/api/v1/chat?batch=1", json=chat_body("after, batch"), headers=headers)
        assert batch.status_code == 202


async def test_an_accepted_job_survives_a_redis_restart(
    sqlite_url: str, providers_file: Path, tmp_path: Path
) -> None:
    """A 202 means the job is durably in Redis (AOF on, as `switchyard up` runs it)."""
    redis = EmbeddedRedis(tmp_path / "durable-redis", persistent=True).start()
    try:
        settings = make_settings(base_env(redis.url, sqlite_url, providers_file, tmp_path / "data"))
        async with running_gateway(settings) as gw:
            key = await gw.create_key()
            submitted = await gw.client.post(
                "/api/v1/chat?batch=1", json=chat_body("kept"), headers={"Authorization": f"Bearer {key}"}
            )
            assert submitted.status_code == 202
            job_id = submitted.json()["data"]["job_id"]

            redis.stop()  # a clean shutdown, as a restart or a deploy does
            redis.start()

            async def healthy() -> bool:
                return (await gw.client.get("/health")).status_code == 200

            await eventually(healthy, timeout=5, what="Redis to be back")
            gw.start_worker()
            job = await wait_for_status(gw.client, key, job_id, "succeeded", "failed", timeout=10)
            assert job["status"] == "succeeded"
            assert job["result"]["choices"][0]["message"]["content"] == "echo: kept"
    finally:
        redis.stop()
