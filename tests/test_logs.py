"""Structured logs of real web and worker processes: their stderr parsed as JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage.migrate import upgrade
from switchyard.redis_server import free_port
from switchyard.standin import StandIn
from tests.conftest import ADMIN_KEY, chat_body, eventually, process_env


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


class Procs:
    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env = process_env(env)
        self.tmp_path = tmp_path
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, *args: str, **env: str) -> int:
        err = self.tmp_path / f"{name}.stderr"
        with open(err, "wb") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "switchyard.cli", *args],
                env=self.env | env,
                cwd=self.tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=f,
            )
        self.procs.append((proc, err))
        return len(self.procs) - 1

    def lines(self, index: int) -> list[dict[str, Any]]:
        """Every stderr line of a process, each of which must be a JSON object."""
        text = self.procs[index][1].read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def procs(env: dict[str, str], tmp_path: Path, db_url: str) -> Iterator[Procs]:
    upgrade(db_url)
    p = Procs(env, tmp_path)
    yield p
    p.stop()


async def _serving(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as c:
            return (await c.get(url + "/health")).status_code < 500
    except httpx.HTTPError:
        return False


async def test_web_and_worker_write_one_json_line_per_request_and_per_job(
    procs: Procs, standin: StandIn
) -> None:
    standin.record = True
    port = free_port()
    web = procs.start("web", "web", "--port", str(port))
    worker = procs.start("worker", "worker", "--queue", "interactive", SWITCHYARD_LOG_LEVEL="DEBUG")
    url = f"http://127.0.0.1:{port}"
    await eventually(lambda: _serving(url), timeout=30, what="the web process")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=url, timeout=20) as c:
        created = await c.post("/api/keys", json={"name": "logs"}, headers=admin)
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        ok = await c.post(
            "/api/v1/completion",
            json=chat_body("hi"),
            headers={"X-API-Key": key, "x-request-id": "req-abc.1"},
        )
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-request-id"] == "req-abc.1"
        job_id = ok.headers["x-job-id"]
        # an id that is not sane is replaced by a new one
        odd = await c.get("/api/v1/jobs/" + job_id, headers={"X-API-Key": key, "x-request-id": 'a b"c' * 50})
        assert odd.status_code == 200
        assert len(odd.headers["x-request-id"]) == 32
        missing = await c.get("/no/such/route")
        assert missing.status_code == 404
        failed = await c.post("/api/v1/completion", json=chat_body("[400] no"), headers={"X-API-Key": key})
        assert failed.status_code == 502  # the provider refused it

    # the provider was called with the request's id
    assert standin.request_ids[0] == "req-abc.1"

    def web_lines() -> list[dict[str, Any]]:
        return [r for r in procs.lines(web) if r.get("event") == "request"]

    requests = await eventually(lambda: _ready(web_lines(), 5), timeout=10, what="5 request lines")
    by_status = {(r["method"], r["status"]): r for r in requests}
    line = by_status[("POST", 200)]
    assert line["route"] == "/api/v1/completion"
    assert line["request_id"] == "req-abc.1"
    assert line["job_id"] == job_id
    assert line["key_id"] == key_id
    assert line["level"] == "info" and line["logger"] == "switchyard.access"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert "timestamp" in line
    assert by_status[("GET", 200)]["route"] == "/api/v1/jobs/{job_id}"
    assert by_status[("GET", 404)]["route"] == "/no/such/route"
    assert by_status[("POST", 201)]["key_id"] == "admin"

    def job_lines() -> list[dict[str, Any]]:
        return [r for r in procs.lines(worker) if r.get("event") == "job"]

    jobs = await eventually(lambda: _ready(job_lines(), 2), timeout=10, what="2 job lines")
    done = next(j for j in jobs if j["job_id"] == job_id)
    assert done["outcome"] == "succeeded"
    assert done["kind"] == "chat_completion"
    assert done["provider"] == "standin"
    assert done["attempts"] == 1
    assert done["request_id"] == "req-abc.1"
    assert done["key_id"] == key_id
    assert done["duration_ms"] > 0
    bad = next(j for j in jobs if j["job_id"] != job_id)
    assert bad["outcome"] == "failed"
    assert bad["error_type"] and "400" in bad["error"] and bad["error_status"] >= 400
    # DEBUG shows Switchyard's own events, not the database driver's
    every = procs.lines(worker)
    assert not [r for r in every if r.get("logger", "").startswith(("aiosqlite", "sqlalchemy"))]


async def _ready(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]] | None:
    return rows if len(rows) >= n else None


async def test_console_format_when_forced(procs: Procs) -> None:
    i = procs.start("status", "worker", "--queue", "interactive", SWITCHYARD_LOG_FORMAT="console")
    path = procs.procs[i][1]

    async def started() -> bool:
        return "worker serving interactive" in path.read_text()

    await eventually(started, timeout=20, what="the worker's start line")
    text = path.read_text()
    assert not text.lstrip().startswith("{")
