"""A dependency that hangs (rather than refuses) ends a request in a 503 within the bound
(`SWITCHYARD_DEPENDENCY_TIMEOUT_S`, 2 s by default), in the dialect's shape, and the
gateway recovers once it answers again.

Redis and PostgreSQL are reached through a relay the test stalls (`tests/relay_support.py`);
SQLite is held by another connection's `BEGIN EXCLUSIVE`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from switchyard.redis_server import EmbeddedRedis
from tests.conftest import (
    Gateway,
    admin_headers,
    base_env,
    chat_body,
    eventually,
    make_settings,
    running_gateway,
    wait_for_status,
)
from tests.relay_support import Relay

BOUND_S = 3.0  # the 2 s bound plus scheduling slack on a busy 2-core machine


async def timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call  # type: ignore[misc]
    return response, time.monotonic() - started


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "own-redis", persistent=False).start()
    yield server
    server.stop()


@pytest.fixture
async def redis_relay(own_redis: EmbeddedRedis) -> AsyncIterator[Relay]:
    relay = await Relay("127.0.0.1", own_redis.port).start()
    yield relay
    relay.resume()
    await relay.stop()


async def test_a_stalled_redis_is_a_503_within_the_bound_in_every_dialect_and_recovers(
    redis_relay: Relay, sqlite_url: str, providers_file: Path, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{redis_relay.port}/0"
    settings = make_settings(
        base_env(url, sqlite_url, providers_file, tmp_path / "data")
        | {"SWITCHYARD_DEPENDENCY_TIMEOUT_S": "2"}
    )
    async with running_gateway(settings) as gw:
        gw.start_worker()
        key = await gw.create_key()
        bearer = {"Authorization": f"Bearer {key}"}
        first = await gw.client.post("/api/v1/chat", json=chat_body("before"), headers=bearer)
        assert first.status_code == 200, first.text

        redis_relay.stall()
        credits, took = await timed(gw.client.post("/api/v1/chat", json=chat_body("x"), headers=bearer))
        assert credits.status_code == 503 and took < BOUND_S, (credits.text, took)
        assert "Redis" in credits.json()["error"]
        native, took = await timed(
            gw.client.post("/api/v1/completion", json=chat_body("x"), headers={"X-API-Key": key})
        )
        assert native.status_code == 503 and took < BOUND_S, (native.text, took)
        assert native.json()["success"] is False and native.json()["error"] == "Service Unavailable"
        # the submission itself timed out: the answer names the job, which may yet be accepted
        assert native.headers["x-job-id"] in native.json()["message"]
        openai, took = await timed(
            gw.client.post("/v1/chat/completions", json=chat_body("x"), headers=bearer)
        )
        assert openai.status_code == 503 and took < BOUND_S, (openai.text, took)
        assert openai.json()["error"]["type"] == "service_unavailable"
        job, took = await timed(gw.client.get("/api/v1/jobs/" + first.headers["x-job-id"], headers=bearer))
        assert job.status_code == 503 and took < BOUND_S, (job.text, took)
        health, took = await timed(gw.client.get("/health"))
        assert health.status_code == 503 and took < BOUND_S, (health.text, took)
        assert health.json()["status"] == "unhealthy" and "Redis" in health.json()["services"]["redis"]
        assert health.json()["services"]["database"] == "ok"

        redis_relay.resume()

        async def answered() -> bool:
            response = await gw.client.post("/api/v1/chat", json=chat_body("after"), headers=bearer)
            return response.status_code == 200

        await eventually(answered, timeout=10, interval=0.2, what="chat to answer again after the stall")
        # the submission that timed out was taken once Redis answered: it is done, not lost
        job = await wait_for_status(
            gw.client, key, native.headers["x-job-id"], "succeeded", "failed", timeout=10
        )
        assert job["status"] == "succeeded", job


async def test_a_locked_sqlite_is_a_503_within_the_bound_and_recovers(
    sqlite_url: str, redis_url: str, providers_file: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        base_env(redis_url, sqlite_url, providers_file, tmp_path / "data")
        | {"SWITCHYARD_DEPENDENCY_TIMEOUT_S": "2"}
    )
    path = sqlite_url.split("///", 1)[1]
    async with running_gateway(settings) as gw:
        gw.start_worker()
        unseen = await gw.create_key("unseen")  # never looked up: authenticating it needs the database
        holder = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            native, took = await timed(
                gw.client.post("/api/v1/completion", json=chat_body("x"), headers={"X-API-Key": unseen})
            )
            assert native.status_code == 503 and took < BOUND_S, (native.text, took)
            assert native.json()["success"] is False and "database" in native.json()["message"]
            admin, took = await timed(gw.client.get("/api/keys", headers=admin_headers()))
            assert admin.status_code == 503 and took < BOUND_S, (admin.text, took)
            assert admin.json()["error"]["type"] == "service_unavailable"
            health, took = await timed(gw.client.get("/health"))
            assert health.status_code == 503 and took < BOUND_S, (health.text, took)
            assert health.json()["status"] == "unhealthy" and health.json()["services"]["redis"] == "ok"
            assert "database" in health.json()["services"]["database"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await _recovers(gw, unseen)


async def _recovers(gw: Gateway, key: str) -> None:
    async def answered() -> bool:
        response = await gw.client.post(
            "/api/v1/completion", json=chat_body("back"), headers={"X-API-Key": key}
        )
        return response.status_code == 200

    await eventually(answered, timeout=10, interval=0.2, what="the API to use the database again")


@pytest.fixture
async def pg_relay(pg_database: str) -> AsyncIterator[tuple[Relay, str]]:
    parts = urlsplit(pg_database)
    relay = await Relay(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    netloc = f"{parts.username}@127.0.0.1:{relay.port}" if parts.username else f"127.0.0.1:{relay.port}"
    yield relay, urlunsplit(parts._replace(netloc=netloc))
    relay.resume()
    await relay.stop()


async def test_a_stalled_postgresql_is_a_503_within_the_bound_and_recovers(
    pg_relay: tuple[Relay, str], redis_url: str, providers_file: Path, tmp_path: Path
) -> None:
    relay, url = pg_relay
    settings = make_settings(
        base_env(redis_url, url, providers_file, tmp_path / "data") | {"SWITCHYARD_DEPENDENCY_TIMEOUT_S": "2"}
    )
    async with running_gateway(settings) as gw:
        gw.start_worker()
        known = await gw.create_key("known")
        unseen = await gw.create_key("unseen")
        assert (
            await gw.client.post("/api/v1/completion", json=chat_body("up"), headers={"X-API-Key": known})
        ).status_code == 200

        relay.stall()
        # A key the process already knows (for the key cache's 5 s) gets its work done: no
        # database on its path.
        during = await gw.client.post(
            "/api/v1/completion", json=chat_body("on"), headers={"X-API-Key": known}
        )
        assert during.status_code == 200, during.text
        native, took = await timed(
            gw.client.post("/api/v1/completion", json=chat_body("x"), headers={"X-API-Key": unseen})
        )
        assert native.status_code == 503 and took < BOUND_S, (native.text, took)
        assert "database" in native.json()["message"]
        listing, took = await timed(gw.client.get("/api/v1/jobs", headers={"X-API-Key": known}))
        assert listing.status_code == 503 and took < BOUND_S, (listing.text, took)
        health, took = await timed(gw.client.get("/health"))
        assert health.status_code == 503 and took < BOUND_S, (health.text, took)
        assert health.json()["status"] == "unhealthy"

        relay.resume()
        await _recovers(gw, unseen)
