"""Two machines, started the way an operator starts them: each has its own data directory and
its own `switchyard web` and `switchyard worker` processes, and they share one Redis, one
database (PostgreSQL when reachable, else one SQLite file), one S3 bucket (moto's server) and
the providers file. What one machine makes, the other serves; killing one machine's worker
loses no job.

The machines share the loopback interface: separate network namespaces would need a bridge
between them to reach the shared Redis, database and S3 endpoint, more set-up than a test should
own. Nothing here reaches another machine's files: a machine's data directory is its own.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.ext.asyncio import create_async_engine

from switchyard.redis_server import free_port
from switchyard.standin import StandIn
from switchyard.standin_images import ImageStandIn
from tests.conftest import (
    _pg_truncate_all,
    admin_headers,
    base_env,
    chat_body,
    eventually,
    process_env,
    write_providers,
)

pytestmark = pytest.mark.timeout(180)

LEASE_S = 1.0  # SWITCHYARD_WORKER_LEASE_S: how long a dead worker's job stays claimed


@pytest.fixture
def db_url(request: pytest.FixtureRequest) -> str:
    """PostgreSQL, what several machines share, when it is reachable; else one SQLite file that
    both machines open (as a test stands in for a database server)."""
    try:
        url = str(request.getfixturevalue("pg_database"))
    except pytest.skip.Exception:
        return str(request.getfixturevalue("sqlite_url"))
    asyncio.run(_pg_truncate_all(url))
    return url


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn, pics: ImageStandIn) -> Path:
    """The one providers file every machine is given."""
    return write_providers(
        tmp_path / "providers.toml",
        [
            {"name": "standin", "kind": "openai", "base_url": standin.base_url, "models": ["mock/echo"]},
            {"name": "pics", "kind": "pollinations-image", "base_url": pics.base_url, "models": ["flux"]},
        ],
    )


@dataclass
class Machine:
    """One machine's processes, its directory (data dir and logs) and its settings."""

    name: str
    root: Path
    env: dict[str, str]
    port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.root / f"{role}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "switchyard.cli", *args],
                env=process_env(self.env),
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs[role] = proc
        return proc

    def start_web(self) -> None:
        self.start("web", "web")

    def start_worker(self) -> subprocess.Popen[bytes]:
        # Both queues of the default lane in one process: the Procfile's `worker` and `batch`.
        return self.start("worker", "worker", "--queue", "interactive,batch")

    def log(self, role: str) -> str:
        return (self.root / f"{role}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


async def _serving(machine: Machine, client: httpx.AsyncClient) -> bool:
    assert machine.procs["web"].poll() is None, f"{machine.name}'s web exited:\n{machine.log('web')}"
    try:
        await client.get(f"{machine.url}/health", timeout=1)
    except httpx.HTTPError:
        return False
    return True


@pytest.fixture
def machine_env(
    redis_url: str, db_url: str, providers_file: Path, s3_env: dict[str, str], tmp_path: Path
) -> Iterator[Any]:
    """Settings of a machine named `name`: what all share, and its own data dir and address."""
    shared = {
        "SWITCHYARD_WORKER_LEASE_S": str(LEASE_S),
        "SWITCHYARD_LOG_LEVEL": "WARNING",
        "SWITCHYARD_BATCH_NICE": "0",
    }

    def make(name: str, port: int, **own: str) -> dict[str, str]:
        root = tmp_path / name
        root.mkdir()
        env = base_env(redis_url, db_url, providers_file, root / "data") | s3_env | shared
        return env | {"SWITCHYARD_PORT": str(port), "SWITCHYARD_PUBLIC_URL": f"http://127.0.0.1:{port}"} | own

    yield make


@pytest.fixture
async def cluster(machine_env: Any, tmp_path: Path) -> AsyncIterator[tuple[Machine, Machine]]:
    """Machines A and B with their web processes serving (no workers yet)."""
    machines = []
    for name in ("a", "b"):
        port = free_port()
        machines.append(Machine(name, tmp_path / name, machine_env(name, port), port))
    a, b = machines
    try:
        for m in machines:
            m.start_web()
        async with httpx.AsyncClient() as probe:
            for m in machines:
                await eventually(partial(_serving, m, probe), timeout=60, interval=0.2, what=m.name + " web")
        yield a, b
    finally:
        for m in machines:
            m.stop()


async def _create_key(client: httpx.AsyncClient, machine: Machine) -> str:
    response = await client.post(f"{machine.url}/api/keys", json={"name": "cluster"}, headers=admin_headers())
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


async def _job(client: httpx.AsyncClient, machine: Machine, key: str, job_id: str) -> dict[str, Any]:
    response = await client.get(f"{machine.url}/api/v1/jobs/{job_id}", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def _finished(client: httpx.AsyncClient, machine: Machine, key: str, job_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = await _job(client, machine, key, job_id)
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return await eventually(check, timeout=30, interval=0.05, what=f"job {job_id} to finish")  # type: ignore[no-any-return]


async def _submit_batch(client: httpx.AsyncClient, machine: Machine, key: str, text: str) -> str:
    response = await client.post(
        f"{machine.url}/api/v1/completion?batch=1", json=chat_body(text), headers={"X-API-Key": key}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["job_id"])


async def _now(value: object) -> object:
    return value


async def test_what_one_machine_makes_the_other_serves(
    cluster: tuple[Machine, Machine], standin: StandIn, pics: ImageStandIn
) -> None:
    a, b = cluster
    a.start_worker()
    b.start_worker()
    async with httpx.AsyncClient(timeout=30) as http:
        key = await _create_key(http, a)
        auth = {"Authorization": f"Bearer {key}"}

        # (a) a file uploaded through A is served by B, byte for byte
        lines = [orjson.dumps({"custom_id": f"r{i}", "pad": secrets.token_hex(256)}) for i in range(600)]
        data = b"\n".join(lines) + b"\n"  # ~320 KB: more than one part of a streamed upload
        uploaded = await http.post(
            f"{a.url}/v1/files", headers=auth, files={"file": ("r.jsonl", data)}, data={"purpose": "batch"}
        )
        assert uploaded.status_code == 200, uploaded.text
        served = await http.get(f"{b.url}/v1/files/{uploaded.json()['id']}/content", headers=auth)
        assert served.status_code == 200, served.text[:500]
        assert served.content == data

        # (b) an image made through A: its URL (under A's address) is served by B as well
        made = await http.post(
            f"{a.url}/v1/images/generations",
            headers=auth,
            json={"model": "flux", "prompt": "a lighthouse", "size": "256x256", "response_format": "url"},
        )
        assert made.status_code == 200, made.text
        url = made.json()["data"][0]["url"]
        assert url.startswith(a.url + "/api/v1/files/"), url
        from_a = await http.get(url, headers=auth)
        from_b = await http.get(b.url + url.removeprefix(a.url), headers=auth)
        assert from_b.status_code == 200, from_b.text[:500]
        assert from_b.content == from_a.content
        assert Image.open(io.BytesIO(from_b.content)).size == (256, 256)
        assert pics.calls["image"] == 1

        # (c) a ?batch=1 job submitted to A, polled to success through B
        job_id = await _submit_batch(http, a, key, "made on a")
        job = await _finished(http, b, key, job_id)
        assert job["status"] == "succeeded", job
        assert job["result"]["data"]["choices"][0]["message"]["content"] == "echo: made on a"

        # (d) a stream through B run by A's worker: B's is stopped (SIGSTOP) while it streams
        b.procs["worker"].send_signal(signal.SIGSTOP)
        try:
            async with http.stream(
                "POST",
                f"{b.url}/v1/chat/completions",
                headers=auth,
                json=chat_body("streamed across machines", stream=True),
            ) as response:
                assert response.status_code == 200, (await response.aread())[:500]
                chunks = [
                    orjson.loads(line[6:])
                    async for line in response.aiter_lines()
                    if line.startswith("data: ") and line != "data: [DONE]"
                ]
        finally:
            b.procs["worker"].send_signal(signal.SIGCONT)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        assert text == "echo: streamed across machines"
        assert standin.stream_calls == 1


async def test_killing_one_machines_worker_loses_no_job(
    cluster: tuple[Machine, Machine], standin: StandIn, db_url: str
) -> None:
    """A's worker takes half of N slow ?batch=1 jobs, B's the other half, and A's is SIGKILLed
    while they run; B's worker, with room to spare, runs A's again once their leases lapse.
    Every job succeeds and has its row in the database."""
    n = 8
    a, b = cluster
    a.env["SWITCHYARD_WORKER_MAX_JOBS"] = str(n // 2)
    a_worker = a.start_worker()
    b_worker = b.start_worker()
    async with httpx.AsyncClient(timeout=30) as http:
        key = await _create_key(http, a)
        # B's worker held back (SIGSTOP) until A's has taken its half, so each runs half.
        b_worker.send_signal(signal.SIGSTOP)
        try:
            ids = [await _submit_batch(http, a, key, f"[sleep:2] job {i}") for i in range(n)]
            await eventually(
                lambda: _now(standin.chat_calls >= n // 2), timeout=20, what="A's worker to be full"
            )
        finally:
            b_worker.send_signal(signal.SIGCONT)
        await eventually(
            lambda: _now(standin.chat_calls >= n), timeout=20, what="B's worker to take the rest"
        )

        a_worker.kill()
        killed = time.monotonic()
        a_worker.wait(5)
        await eventually(
            lambda: _now(standin.chat_calls > n), timeout=20, interval=0.01, what="a job run again"
        )
        rerun_s = time.monotonic() - killed
        jobs = [await _finished(http, b, key, job_id) for job_id in ids]
        all_done_s = time.monotonic() - killed

    assert [j["status"] for j in jobs] == ["succeeded"] * n, b.log("worker")
    assert sorted(j["attempts"] for j in jobs) == [1] * (n // 2) + [2] * (n // 2)
    assert standin.chat_calls == n + n // 2

    engine = create_async_engine(db_url)
    try:

        async def rows() -> dict[str, tuple[str, int]] | None:
            async with engine.connect() as conn:
                result = await conn.execute(
                    sa.text("SELECT id, status, attempts FROM jobs WHERE id IN :ids").bindparams(
                        sa.bindparam("ids", expanding=True)
                    ),
                    {"ids": ids},
                )
                found = {r.id: (r.status, r.attempts) for r in result}
            return found if len(found) == n else None

        found = await eventually(rows, timeout=15, interval=0.1, what="every job's row")
    finally:
        await engine.dispose()
    assert {s for s, _ in found.values()} == {"succeeded"}
    print(f"\nrecovery: a killed worker's job ran again in {rerun_s:.2f} s, all done in {all_done_s:.2f} s")
    # B's worker takes A's jobs within about one lease (and its wake-up), not a job timeout.
    assert rerun_s < LEASE_S + 3, rerun_s
