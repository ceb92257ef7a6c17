"""api-reference 003 against its own examples, with content services (lrclib, tmdb) in the
providers file beside a model provider: `count` is the total, reads of stored listings are
hits, `force` and `?batch=1` on refresh mean what they say."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from jobs.catalog import STATUS_KEY
from jobs.discovery import REQUESTS_KEY
from switchyard.media_standin import ContentStandIn
from switchyard.standin import StandIn
from tests.conftest import Gateway, eventually, write_providers


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
async def content() -> AsyncIterator[ContentStandIn]:
    server = await ContentStandIn(api_key="k").start()
    yield server
    await server.stop()


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn, content: ContentStandIn) -> Path:
    return write_providers(
        tmp_path / "providers.toml",
        [
            {"name": "standin", "kind": "openai", "base_url": standin.base_url},
            {"name": "lyrics", "kind": "lrclib", "base_url": content.lrclib_url},
            {"name": "movies", "kind": "tmdb", "base_url": content.tmdb_url, "api_key": "k"},
        ],
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(redis_url) as r:
        yield r


async def _listed(redis: aioredis.Redis) -> bool:
    return bool(await redis.hexists(STATUS_KEY, "standin"))


async def test_count_is_the_total_and_stored_listings_are_hits(gw: Gateway, redis: aioredis.Redis) -> None:
    gw.start_worker()
    await eventually(lambda: _listed(redis), what="the first discovery run")
    page = (await gw.client.get("/api/models", params={"limit": 1})).json()
    assert len(page["models"]) == 1
    assert page["count"] == 2  # 003: "Total number of models"
    assert page["cache_hit"] is True  # lyrics and movies list no models: not misses
    search = (await gw.client.get("/api/models/search", params={"q": "mock", "limit": 1})).json()
    assert len(search["models"]) == 1 and search["count"] == 2
    one = (await gw.client.get("/api/providers/standin/models", params={"limit": 1})).json()
    assert one["count"] == 2 and one["cache_hit"] is True
    stats = (await gw.client.get("/api/cache/stats")).json()
    assert stats["cache_stats"]["hit_rate"] == 100.0
    assert set(stats["provider_stats"]) == {"standin"}
    health = (await gw.client.get("/health")).json()
    assert health["metrics"]["cache_hit_rate"] == 100.0


@pytest.mark.parametrize("force", [False, True])
async def test_force_lists_again_where_a_fresh_run_would_answer(
    gw: Gateway, key: str, redis: aioredis.Redis, standin: StandIn, force: bool
) -> None:
    """A refresh asked before a worker's first run: that run started after it and answers it,
    unless `force` asks for a listing of its own."""
    body = {"force": True} if force else {}
    call = asyncio.create_task(gw.client.post("/api/models/refresh", json=body, headers={"X-API-Key": key}))
    await eventually(lambda: redis.llen(REQUESTS_KEY), what="the refresh request")
    gw.start_worker()
    response = await asyncio.wait_for(call, 10)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "success"
    assert standin.models_calls == (2 if force else 1)


async def test_batch_refresh_answers_202_at_once(gw: Gateway, key: str, redis: aioredis.Redis) -> None:
    started = time.monotonic()
    response = await gw.client.post("/api/models/refresh?batch=1", headers={"X-API-Key": key})
    assert response.status_code == 202, response.text
    assert time.monotonic() - started < 2  # not the synchronous wait (15 s here) for no worker
    assert response.json()["status"] == "queued"
    assert await redis.llen(REQUESTS_KEY) == 1  # a worker runs it when one is there
    gw.start_worker()
    await eventually(lambda: _listed(redis), what="the queued refresh")
