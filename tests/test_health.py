"""/health: healthy, degraded or unhealthy (503), with each service's detail, and what a restart
of the Redis in use would lose (jobs/durability.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from jobs import durability
from jobs.deadletters import DeadLetters
from switchyard.cli import _warn_durability
from switchyard.redis_server import EmbeddedRedis, free_port
from tests.conftest import base_env, eventually, make_settings, running_gateway, write_providers


async def test_healthy_with_a_persistent_redis_and_reachable_providers(
    sqlite_url: str, providers_file: Path, tmp_path: Path
) -> None:
    redis = EmbeddedRedis(tmp_path / "aof-redis", persistent=True).start()
    try:
        settings = make_settings(base_env(redis.url, sqlite_url, providers_file, tmp_path / "data"))
        async with running_gateway(settings) as gw:
            gw.start_worker()  # its discovery run checks the provider

            async def healthy() -> bool:
                return (await gw.client.get("/health")).json()["status"] == "healthy"

            await eventually(healthy, timeout=10, what="/health to say healthy")
            body = (await gw.client.get("/health")).json()
            assert body["warnings"] == [] and body["dead_letters"] == 0
            assert body["services"]["redis_persistence"] == "aof"
            assert body["services"]["providers"]["standin"] in ("ok", "unknown")
    finally:
        redis.stop()


async def test_unhealthy_503_when_no_provider_is_reachable(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    providers = write_providers(
        tmp_path / "providers.toml",
        [{"name": "gone", "kind": "openai", "base_url": nowhere, "models": ["m"]}],
    )
    settings = make_settings(base_env(redis_url, sqlite_url, providers, tmp_path / "data"))
    async with running_gateway(settings) as gw:
        gw.start_worker()

        async def unhealthy() -> bool:
            return (await gw.client.get("/health")).status_code == 503

        await eventually(unhealthy, timeout=15, what="/health to see no provider reachable")
        body = (await gw.client.get("/health")).json()
        assert body["status"] == "unhealthy" and "no provider is reachable" in body["problems"]
        assert body["services"]["redis"] == "ok" and body["services"]["database"] == "ok"


async def test_persistence_is_read_from_redis_and_unknown_when_config_is_disabled(tmp_path: Path) -> None:
    class NoConfig(EmbeddedRedis):
        def command(self) -> list[str]:
            return [*super().command(), "--rename-command", "CONFIG", '""']

    plain = EmbeddedRedis(tmp_path / "plain", persistent=False).start()
    hidden = NoConfig(tmp_path / "hidden", persistent=False).start()
    try:
        async with Redis.from_url(plain.url) as r:
            found = await durability.check(r)
            assert (found.appendonly, found.save) == ("no", "")
            assert "no persistence" in found.warnings[0]
            await r.config_set("save", "3600 1")
            assert "snapshots only" in (await durability.check(r)).warnings[0]
        async with Redis.from_url(hidden.url) as r:
            unknown = await durability.check(r)
            assert (unknown.appendonly, unknown.save) == ("unknown", "unknown")
            assert "unknown" in unknown.warnings[0]
    finally:
        plain.stop()
        hidden.stop()


async def test_degraded_with_dead_letters_and_their_count(
    sqlite_url: str, providers_file: Path, tmp_path: Path
) -> None:
    redis = EmbeddedRedis(tmp_path / "aof-redis", persistent=True).start()
    try:
        settings = make_settings(base_env(redis.url, sqlite_url, providers_file, tmp_path / "data"))
        async with running_gateway(settings) as gw:
            first = (await gw.client.get("/health")).json()
            assert first["status"] == "healthy" and first["dead_letters"] == 0
            async with Redis.from_url(redis.url) as r:
                assert await DeadLetters(r).add("test", "unreadable", message=b"\xff")
            response = await gw.client.get("/health")
            assert response.status_code == 200
            body = response.json()
            assert body["status"] == "degraded" and body["dead_letters"] == 1
            assert any("dead letter" in w for w in body["warnings"])
    finally:
        redis.stop()


async def test_web_and_up_say_loudly_what_a_restart_of_a_non_persistent_redis_loses(
    redis_url: str,
    sqlite_url: str,
    providers_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(base_env(redis_url, sqlite_url, providers_file, tmp_path / "data"))
    with caplog.at_level(logging.WARNING, logger="switchyard.durability"):
        async with running_gateway(settings) as gw:
            body = (await gw.client.get("/health")).json()
    assert body["status"] == "degraded" and body["services"]["redis_persistence"] == "none"
    said = [r for r in caplog.records if r.name == "switchyard.durability" and r.levelno == logging.WARNING]
    assert said and "web: Redis has no persistence" in said[0].getMessage()
    assert "loses every accepted job" in said[0].getMessage()

    await asyncio.to_thread(_warn_durability, redis_url)  # what `switchyard up` does before starting
    assert "switchyard: WARNING: Redis has no persistence" in capsys.readouterr().err
