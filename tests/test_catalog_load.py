"""The model catalog of a web process: loaded once however many calls arrive together, a 503
(not a 500) while Redis cannot be reached before it ever loaded, the loaded catalog kept
serving through an outage after it did."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from jobs.catalog import Catalog
from switchyard.errors import ServiceUnavailable
from switchyard.providers import load_providers
from switchyard.redis_server import EmbeddedRedis, free_port
from switchyard.standin import StandIn
from tests.conftest import base_env, chat_body, make_settings, running_gateway, write_providers


@pytest.fixture
def discovered_providers(tmp_path: Path, standin: StandIn) -> Path:
    """A provider with no model list in the file: its models are whatever its listing says."""
    return write_providers(
        tmp_path / "providers.toml", [{"name": "alpha", "kind": "openai", "base_url": standin.base_url}]
    )


async def test_a_burst_on_a_fresh_web_process_routes_every_call(
    redis_url: str, sqlite_url: str, discovered_providers: Path, tmp_path: Path
) -> None:
    async with Redis.from_url(redis_url) as r:
        await Catalog(load_providers(discovered_providers), r).store_listing(
            "alpha", [{"id": "mock/echo"}], int(time.time() * 1000)
        )
    settings = make_settings(base_env(redis_url, sqlite_url, discovered_providers, tmp_path / "data"))
    async with running_gateway(settings) as gw:
        key = await gw.create_key(
            "burst", limits={"hourly": 1000, "daily_requests": 1000, "per_minute": {"chat": 1000}}
        )
        headers = {"Authorization": f"Bearer {key}"}
        answers = await asyncio.gather(
            *(
                gw.client.post("/api/v1/chat?batch=1", json=chat_body(f"{i}"), headers=headers)
                for i in range(120)
            )
        )
    codes = [a.status_code for a in answers]
    assert codes.count(404) == 0, [a.text for a in answers if a.status_code == 404][:2]
    assert codes == [202] * 120, {c: codes.count(c) for c in set(codes)}


async def test_redis_out_of_reach_before_the_first_load_is_a_503(discovered_providers: Path) -> None:
    async with Redis.from_url(f"redis://127.0.0.1:{free_port()}/0") as dead:
        catalog = Catalog(load_providers(discovered_providers), dead)
        with pytest.raises(ServiceUnavailable, match="Redis"):
            await catalog.require("mock/echo")


async def test_a_loaded_catalog_keeps_serving_while_redis_is_down(
    discovered_providers: Path, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persistent=False).start()
    try:
        async with Redis.from_url(server.url) as r:
            catalog = Catalog(load_providers(discovered_providers), r, refresh_s=0.01)
            await catalog.store_listing("alpha", [{"id": "mock/echo"}], int(time.time() * 1000))
            assert await catalog.require("mock/echo") == "chat"
            server.stop()
            await asyncio.sleep(0.02)
            assert await catalog.require("mock/echo") == "chat"  # stale, not a 503
            with pytest.raises(RedisConnectionError):
                await catalog.refresh(force=True)  # who asks for the fresh catalog is told
    finally:
        server.stop()
