"""Real worker processes (`python -m switchyard.cli worker`) killed or stopped mid-job: the job is
retried or finished, never lost and never left `running`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.standin import StandIn
from tests.conftest import Gateway, chat_body, eventually, get_job, process_env, wait_for_status


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """These tests are about processes dying, not about the database kind: SQLite only."""
    return sqlite_url


class WorkerProcesses:
    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env = process_env(env)
        self.env["SWITCHYARD_LOG_LEVEL"] = "WARNING"
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, queue: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [sys.executable, "-m", "switchyard.cli", "worker", "--queue", queue],
            env=self.env,
            cwd=self.tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, index: int) -> str:
        return (self.tmp_path / f"worker-{index}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def processes(env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(env, tmp_path)
    yield procs
    procs.stop_all()


async def exited(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return int(
        await eventually(lambda: _async(proc.poll() is not None), timeout=timeout, what="the worker to exit")
        and proc.returncode
    )


async def _async(value: object) -> object:
    return value


async def wait_for_provider_call(standin: StandIn, n: int = 1) -> None:
    await eventually(lambda: _async(standin.chat_calls >= n), timeout=15, what=f"provider call #{n}")


@pytest.mark.settings(SWITCHYARD_WORKER_LEASE_S="1")
async def test_a_killed_worker_s_batch_job_is_retried_by_another(
    gw: Gateway, key: str, standin: StandIn, processes: WorkerProcesses
) -> None:
    first = processes.start("batch")
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("[sleep:1.5] survive"), headers={"X-API-Key": key}
    )
    job_id = submitted.json()["data"]["job_id"]
    await wait_for_status(gw.client, key, job_id, "running", timeout=15)
    await wait_for_provider_call(standin)

    first.kill()
    first.wait(5)
    assert (await get_job(gw.client, key, job_id))["status"] == "running"  # until its lease lapses

    processes.start("batch")
    job = await wait_for_status(gw.client, key, job_id, "succeeded", "failed", timeout=20)
    assert job["status"] == "succeeded", processes.log(1)
    assert job["attempts"] >= 2
    assert job["result"]["data"]["choices"][0]["message"]["content"] == "echo: [sleep:1.5] survive"


@pytest.mark.settings(SWITCHYARD_WORKER_LEASE_S="1")
async def test_a_synchronous_caller_gets_its_answer_when_its_worker_is_killed(
    gw: Gateway, key: str, standin: StandIn, processes: WorkerProcesses
) -> None:
    first = processes.start("interactive")
    call = asyncio.create_task(
        gw.client.post(
            "/api/v1/chat",
            json=chat_body("[sleep:1.5] wait for me"),
            headers={"Authorization": f"Bearer {key}"},
        )
    )
    await wait_for_provider_call(standin)
    first.kill()
    first.wait(5)
    processes.start("interactive")
    response = await asyncio.wait_for(call, 20)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: [sleep:1.5] wait for me"
    assert (await get_job(gw.client, key, response.headers["x-job-id"]))["attempts"] >= 2


@pytest.mark.settings(SWITCHYARD_SHUTDOWN_GRACE_S="10")
@pytest.mark.settings(SWITCHYARD_SHUTDOWN_GRACE_S="60")
async def test_sigterm_lets_the_job_in_flight_finish(
    gw: Gateway, key: str, standin: StandIn, processes: WorkerProcesses
) -> None:
    worker = processes.start("batch")
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("[sleep:1] finish me"), headers={"X-API-Key": key}
    )
    job_id = submitted.json()["data"]["job_id"]
    await wait_for_provider_call(standin)

    worker.send_signal(signal.SIGTERM)
    job = await wait_for_status(gw.client, key, job_id, "succeeded", "failed", "queued", timeout=10)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    # Once its last job is done the worker has nothing to wait for: it exits well before the
    # 60 s grace (the bound leaves room for a loaded machine; 3 s once failed so in CI).
    assert await exited(worker, timeout=20) == 0, processes.log(0)
    # It took no new work while stopping.
    assert standin.chat_calls == 1


@pytest.mark.settings(SWITCHYARD_SHUTDOWN_GRACE_S="1")
async def test_sigterm_past_the_grace_period_requeues_the_job_for_another_worker(
    gw: Gateway, key: str, standin: StandIn, processes: WorkerProcesses
) -> None:
    worker = processes.start("batch")
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("[sleep:3] too long"), headers={"X-API-Key": key}
    )
    job_id = submitted.json()["data"]["job_id"]
    await wait_for_provider_call(standin)

    worker.send_signal(signal.SIGTERM)
    assert await exited(worker, timeout=8) == 0, processes.log(0)
    job = await get_job(gw.client, key, job_id)
    assert job["status"] == "queued", job  # given back, not left running

    processes.start("batch")
    job = await wait_for_status(gw.client, key, job_id, "succeeded", "failed", timeout=15)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 2


async def test_a_batch_worker_process_yields_the_cpu_to_interactive_ones(processes: WorkerProcesses) -> None:
    """SWITCHYARD_BATCH_NICE (19 by default): batch work takes only the CPU nothing else wants."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    batch = processes.start("batch")
    interactive = processes.start("interactive")

    async def niced() -> bool:
        return os.getpriority(os.PRIO_PROCESS, batch.pid) == min(19, base + 19)

    await eventually(niced, timeout=15, what="the batch worker to lower its priority")
    assert os.getpriority(os.PRIO_PROCESS, interactive.pid) == base
    assert batch.poll() is None and interactive.poll() is None
