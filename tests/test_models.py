"""Model discovery, the model routes of every dialect, and routing around failing providers.

Two stand-in providers over real HTTP: `alpha` has no model list in the file (its models are
discovered from its `GET /models`), `beta` lists its models with metadata and prices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from jobs.catalog import CATALOG_KEY, STATUS_KEY
from jobs.discovery import request_refresh
from switchyard.settings import Settings
from switchyard.standin import StandIn
from tests.conftest import Gateway, base_env, eventually, make_settings, running_gateway

ALPHA_MODELS = ["alpha/chat-one", "alpha/chat-two", "shared/model"]
BETA_MODELS = ["shared/model", "beta/painter", "beta/thinker", "beta/clip"]


def providers_toml(alpha_url: str, beta_url: str) -> str:
    return f"""
[[providers]]
name = "alpha"
kind = "openai"
base_url = "{alpha_url}"

[[providers]]
name = "beta"
kind = "openai"
base_url = "{beta_url}"
models = {orjson.dumps(BETA_MODELS).decode()}

[providers.prices."shared/model"]
prompt = 1000.0
completion = 2000.0

[providers.meta."beta/painter"]
type = "image"
company = "Painters"
description = "Paints pictures"

[providers.meta."beta/thinker"]
type = "chat"
name = "Beta Thinker"
context_length = 200000
supports_thinking = true
capabilities = ["vision", "function_calling"]

[providers.meta."beta/clip"]
type = "video"
max_duration_s = 8
"""


@pytest.fixture
async def alpha() -> AsyncIterator[StandIn]:
    server = await StandIn(models=list(ALPHA_MODELS)).start()
    yield server
    await server.stop()


@pytest.fixture
async def beta() -> AsyncIterator[StandIn]:
    server = await StandIn(models=["shared/model", "beta/painter", "beta/thinker", "beta/clip"]).start()
    yield server
    await server.stop()


@pytest.fixture
def models_settings(
    request: pytest.FixtureRequest,
    redis_url: str,
    sqlite_url: str,
    tmp_path: Path,
    alpha: StandIn,
    beta: StandIn,
) -> Settings:
    path = tmp_path / "providers.toml"
    path.write_text(providers_toml(alpha.base_url, beta.base_url))
    env = base_env(redis_url, sqlite_url, path, tmp_path / "data")
    marker = request.node.get_closest_marker("settings")
    if marker:
        env.update({k: str(v) for k, v in marker.kwargs.items()})
    return make_settings(env)


@pytest.fixture
async def mgw(models_settings: Settings) -> AsyncIterator[Gateway]:
    """The gateway with one worker, once its first discovery run has stored both listings."""
    async with running_gateway(models_settings) as gateway:
        gateway.start_worker()
        async with aioredis.Redis.from_url(models_settings.redis_url) as r:  # type: ignore[arg-type]
            await eventually(lambda: _statuses_of(r, "alpha", "beta"), what="the first discovery run")
        yield gateway


async def _statuses_of(r: aioredis.Redis, *names: str) -> dict[str, Any] | None:
    raw = await r.hgetall(STATUS_KEY)
    found = {k.decode(): orjson.loads(v) for k, v in raw.items()}
    return found if all(n in found for n in names) else None


@pytest.fixture
async def redis(models_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(models_settings.redis_url) as r:  # type: ignore[arg-type]
        yield r


# --- discovery -----------------------------------------------------------------------------------
async def test_discovery_stores_listings_and_provider_status(
    mgw: Gateway, redis: aioredis.Redis, alpha: StandIn, beta: StandIn
) -> None:
    statuses = await _statuses_of(redis, "alpha", "beta")
    assert statuses is not None
    assert statuses["alpha"]["status"] == "active" and statuses["alpha"]["error"] is None
    assert statuses["alpha"]["models_count"] == 3
    assert statuses["beta"]["models_count"] == 4
    assert statuses["alpha"]["response_time_ms"] >= 0 and statuses["alpha"]["last_check"] > 0
    stored = orjson.loads(await redis.hget(CATALOG_KEY, "alpha"))
    assert [m["id"] for m in stored["models"]] == ALPHA_MODELS
    assert alpha.models_calls == 1 and beta.models_calls == 1


async def test_one_worker_runs_each_period_s_discovery(
    mgw: Gateway, redis: aioredis.Redis, alpha: StandIn
) -> None:
    mgw.start_worker()

    async def both_waiting_for_requests() -> bool:
        clients = await redis.client_list()
        return sum(1 for c in clients if c.get("cmd") == "blpop") == 2

    # Both workers are past their period check and wait for refresh requests: one listing call.
    await eventually(both_waiting_for_requests, what="both workers to wait for refresh requests")
    assert alpha.models_calls == 1
    assert (await request_refresh(redis, None, 10) or {}).get("status") == "success"
    assert alpha.models_calls == 2


async def test_a_failing_or_garbage_listing_keeps_the_old_catalog_and_shows_the_error(
    mgw: Gateway, redis: aioredis.Redis, alpha: StandIn
) -> None:
    before = await redis.hget(CATALOG_KEY, "alpha")
    for status, body, reason in [
        (500, None, "HTTP 500"),
        (200, b"<html>not a listing</html>", "not JSON"),
        (200, b'{"data": "nope"}', "no list of models"),
        (200, b'{"data": [{"name": "no id"}]}', "no model ids"),
    ]:
        alpha.models_status, alpha.models_body = status, body
        outcome = await request_refresh(redis, None, 10)
        assert outcome is not None
        assert outcome["status"] == "partial"
        assert outcome["providers_updated"] == ["beta"]
        assert reason in outcome["providers_failed"]["alpha"]
        statuses = await _statuses_of(redis, "alpha")
        assert statuses is not None
        assert statuses["alpha"]["status"] == "error"
        assert reason in statuses["alpha"]["error"]
        assert statuses["alpha"]["models_count"] == 3  # still routed from the old listing
        assert await redis.hget(CATALOG_KEY, "alpha") == before
    alpha.models_status, alpha.models_body = 200, None
    outcome = await request_refresh(redis, ["alpha"], 10)
    assert outcome is not None and outcome["status"] == "success"
    assert outcome["providers_updated"] == ["alpha"]
    statuses = await _statuses_of(redis, "alpha")
    assert statuses is not None and statuses["alpha"]["status"] == "active"
