"""`switchyard doctor` against a running test cluster (all ok), and against each broken part:
Redis down, migrations behind, a blob store that cannot be written, a provider out of reach."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from storage.migrate import upgrade
from switchyard import doctor
from switchyard.metrics import WORKERS_KEY
from switchyard.redis_server import EmbeddedRedis
from tests.conftest import Gateway, eventually, make_settings, process_env, write_providers


@pytest.fixture(scope="module")
def persistent_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis with AOF on, as `switchyard up` runs it (the session's has no persistence)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-aof"), persistent=True).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(persistent_redis: EmbeddedRedis) -> str:
    with sync_redis.Redis.from_url(persistent_redis.url) as r:
        r.flushall()
    return persistent_redis.url


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_doctor(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchyard.cli", "doctor", *args,
        env=process_env(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode()


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


async def test_all_ok_against_a_running_cluster(gw: Gateway, env: dict[str, str]) -> None:
    gw.start_worker()

    async def heartbeat() -> bool:
        with sync_redis.Redis.from_url(env["REDIS_URL"]) as r:
            return bool(r.zcard(WORKERS_KEY))

    await eventually(heartbeat, timeout=15, what="the worker's heartbeat")
    code, out = await run_doctor(env, "--json")  # the stand-in provider answers in this loop
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {
        "settings": "ok",
        "redis": "ok",
        "clock": "ok",
        "worker clocks": "ok",
        "database": "ok",
        "blob store": "ok",
        "provider standin": "ok",
    }, report

    table = doctor.table(await doctor.run_checks(gw.settings))
    assert table.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert "0 failed" in table


async def test_redis_down_fails_and_the_command_exits_non_zero(env: dict[str, str]) -> None:
    down = env | {"REDIS_URL": f"redis://127.0.0.1:{closed_port()}"}
    checks = by_name(await doctor.run_checks(make_settings(down), timeout_s=3))
    assert checks["redis"].status == "fail" and "Connection" in checks["redis"].detail
    assert checks["database"].status == "ok" and checks["blob store"].status == "ok"
    code, out = await run_doctor(down, "--timeout", "3")
    assert code == 1
    assert any(line.split()[:2] == ["redis", "fail"] for line in out.splitlines()), out


async def test_migrations_behind_fail(env: dict[str, str], tmp_path: Path) -> None:
    behind = tmp_path / "behind.db"
    url = f"sqlite+aiosqlite:///{behind}"
    await asyncio.to_thread(upgrade, url, "head-1")  # Alembic runs a loop of its own
    checks = by_name(await doctor.run_checks(make_settings(env | {"DATABASE_URL": url})))
    assert checks["database"].status == "fail"
    assert "switchyard migrate" in checks["database"].detail
    await asyncio.to_thread(upgrade, url)
    checks = by_name(await doctor.run_checks(make_settings(env | {"DATABASE_URL": url})))
    assert checks["database"].status == "ok"

    def migrated_by_a_newer_build() -> None:
        with sqlite3.connect(behind) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")

    await asyncio.to_thread(migrated_by_a_newer_build)
    checks = by_name(await doctor.run_checks(make_settings(env | {"DATABASE_URL": url})))
    assert checks["database"].status == "fail" and "does not know" in checks["database"].detail


async def test_a_blob_store_that_cannot_be_written_fails(
    env: dict[str, str], tmp_path: Path, s3_env: dict[str, str]
) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("blobs cannot live under a file")
    local = env | {"SWITCHYARD_BLOB_URL": f"file://{not_a_dir}/blobs"}
    checks = by_name(await doctor.run_checks(make_settings(local)))
    assert checks["blob store"].status == "fail", checks["blob store"]

    s3 = env | s3_env
    assert by_name(await doctor.run_checks(make_settings(s3)))["blob store"].status == "ok"
    no_bucket = s3 | {"SWITCHYARD_BLOB_URL": "s3://no-such-bucket/blobs"}
    checks = by_name(await doctor.run_checks(make_settings(no_bucket)))
    assert checks["blob store"].status == "fail" and "blob store" in checks["blob store"].detail


async def test_an_unreachable_provider_fails(env: dict[str, str], tmp_path: Path) -> None:
    providers = write_providers(
        tmp_path / "gone.toml",
        [
            {"name": "gone", "kind": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1"},
        ],
    )
    checks = by_name(await doctor.run_checks(make_settings(env | {"SWITCHYARD_PROVIDERS": str(providers)})))
    assert checks["provider gone"].status == "fail" and "unreachable" in checks["provider gone"].detail
    assert doctor.failed(list(checks.values()))
