"""An in-process worker's start and close: closing never loses a job and never fails, whatever the
job was doing at that moment."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from jobs import queues
from switchyard.standin import StandIn
from tests.conftest import Gateway, chat_body, eventually, get_job, wait_for_status


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """About the worker's own lifecycle, not the database kind: SQLite only."""
    return sqlite_url


async def _calls(standin: StandIn, n: int) -> bool:
    return standin.chat_calls >= n


async def test_closing_while_a_job_is_finishing(gw: Gateway, key: str, standin: StandIn) -> None:
    """Redis is made to stall (DEBUG SLEEP) just as the job's provider call returns, so the close's
    cancellation lands while the worker is writing the job's outcome."""
    worker = gw.start_worker()
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("[sleep:0.5] closing"), headers={"X-API-Key": key}
    )
    job_id = submitted.json()["data"]["job_id"]
    await eventually(lambda: _calls(standin, 1), what="the provider call")

    async with Redis.from_url(gw.settings.redis_url) as stall:  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        sleeper = asyncio.create_task(stall.execute_command("DEBUG", "SLEEP", "1"))
        await asyncio.sleep(0.6)  # the job has its answer now, and its finish waits on Redis
        try:
            await gw.stop_worker(worker)
        except asyncio.CancelledError:
            pytest.fail("closing the worker re-raised the cancellation of a job that was finishing")
        await sleeper

    job = await get_job(gw.client, key, job_id)
    if job["status"] != "succeeded":  # its finish did not make it: then it must come back and run
        assert job["status"] in ("running", "queued")
        gw.start_worker()
        job = await wait_for_status(gw.client, key, job_id, "succeeded", timeout=20)
    assert job["result"]["data"]["choices"][0]["message"]["content"] == "echo: [sleep:0.5] closing"


async def test_closing_an_idle_worker_and_starting_another(gw: Gateway, key: str) -> None:
    first = gw.start_worker()
    ok = await gw.client.post(
        "/api/v1/chat", json=chat_body("one"), headers={"Authorization": f"Bearer {key}"}
    )
    assert ok.status_code == 200
    await gw.stop_worker(first)
    gw.start_worker()
    again = await gw.client.post(
        "/api/v1/chat", json=chat_body("two"), headers={"Authorization": f"Bearer {key}"}
    )
    assert again.status_code == 200


async def test_closing_mid_job_gives_the_job_back(gw: Gateway, key: str, standin: StandIn) -> None:
    worker = gw.start_worker()
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("[sleep:1] interrupted"), headers={"X-API-Key": key}
    )
    job_id = submitted.json()["data"]["job_id"]
    await eventually(lambda: _calls(standin, 1), what="the provider call")
    await gw.stop_worker(worker)
    assert (await get_job(gw.client, key, job_id))["status"] == "queued"
    gw.start_worker()
    job = await wait_for_status(gw.client, key, job_id, "succeeded", "failed", timeout=10)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 2


@pytest.mark.settings(SWITCHYARD_WORKER_LEASE_S="1")
async def test_an_idle_worker_takes_a_dead_workers_job_when_its_lease_lapses(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    """A job whose worker died holding it (its lease set, nobody renewing it) is run by an idle
    worker as its lease lapses, not at that worker's next idle sweep (5 s)."""
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("orphaned"), headers={"X-API-Key": key}
    )
    job_id = submitted.json()["data"]["job_id"]
    async with Redis.from_url(gw.settings.redis_url) as r:  # type: ignore[arg-type]
        await r.psetex(queues.IN_PROGRESS_KEY + job_id, 1000, b"1")  # what a dead worker's claim leaves
    started = time.monotonic()
    gw.start_worker()
    job = await wait_for_status(gw.client, key, job_id, "succeeded", "failed", timeout=10)
    elapsed = time.monotonic() - started
    assert job["status"] == "succeeded", job
    assert 0.5 < elapsed < 4, elapsed  # an idle sweep would make it 6 s
    assert standin.chat_calls == 1


async def test_giving_back_a_control_job_leaves_it_without_a_state(gw: Gateway) -> None:
    """A batch's control job (`jobs.batches.add_control`) has no job state. Giving it back (a
    retry, or a worker closing) must not make one: a hash holding only `status` would be a record
    the persister cannot read, set aside as a dead letter."""
    from jobs.batches import BATCH_DISPATCH, enqueue_control
    from jobs.records import now_ms
    from workers.worker import Run

    async with Redis.from_url(gw.settings.redis_url) as r:  # type: ignore[arg-type]
        job_id = await enqueue_control(r, BATCH_DISPATCH, "batch_" + "0" * 32, now_ms())
        worker = gw.start_worker("interactive")  # not the batch queue: it never claims the job

        async def connected() -> bool:
            return worker.pool is not None

        await eventually(connected, what="the worker connected")
        await worker._requeue(Run(job_id, queues.queue_name(queues.BATCH), {}, 1), None)
        assert await r.exists(queues.STATE_KEY + job_id) == 0
        assert await r.zscore(queues.queue_name(queues.BATCH), job_id) is not None  # still queued
