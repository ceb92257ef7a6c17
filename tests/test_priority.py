"""Interactive jobs run before queued batch jobs; batch jobs still drain when nothing interactive
waits."""

from __future__ import annotations

import asyncio
from typing import Any

from switchyard.standin import StandIn
from tests.conftest import Gateway, chat_body, eventually, get_job, wait_for_status


async def submit(gw: Gateway, key: str, text: str, *, batch: bool) -> str:
    """A batch job, or an interactive one whose caller does not wait (`Prefer: wait=0`)."""
    if batch:
        response = await gw.client.post(
            "/api/v1/chat?batch=1", json=chat_body(text), headers={"Authorization": f"Bearer {key}"}
        )
    else:
        response = await gw.client.post(
            "/api/v1/chat",
            json=chat_body(text),
            headers={"Authorization": f"Bearer {key}", "Prefer": "wait=0"},
        )
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["status"] == "queued"
    assert data["job"]["priority"] == ("batch" if batch else "interactive")
    return str(data["job_id"])


async def jobs_by_id(gw: Gateway, key: str, ids: list[str]) -> list[dict[str, Any]]:
    return [await get_job(gw.client, key, i) for i in ids]


async def test_interactive_jobs_start_before_queued_batch_jobs(gw: Gateway, key: str) -> None:
    # Batch work was queued first, so only priority (not age) can put interactive work ahead.
    batch = [await submit(gw, key, f"[sleep:0.01] batch {i}", batch=True) for i in range(6)]
    interactive = [await submit(gw, key, f"[sleep:0.01] interactive {i}", batch=False) for i in range(6)]

    worker = gw.start_worker("interactive", "batch", max_jobs=1, burst=True)
    await asyncio.wait_for(next(t for w, t in gw.workers if w is worker), 20)

    done_interactive = await jobs_by_id(gw, key, interactive)
    done_batch = await jobs_by_id(gw, key, batch)
    assert {j["status"] for j in done_interactive + done_batch} == {"succeeded"}
    last_interactive = max(j["started_at"] for j in done_interactive)
    first_batch = min(j["started_at"] for j in done_batch)
    assert last_interactive <= first_batch, (last_interactive, first_batch)
    # Within a queue, the order of arrival.
    assert [j["started_at"] for j in done_batch] == sorted(j["started_at"] for j in done_batch)


async def test_a_batch_worker_waits_while_interactive_jobs_wait_then_drains(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    interactive = [await submit(gw, key, f"interactive {i}", batch=False) for i in range(3)]
    batch = [await submit(gw, key, f"batch {i}", batch=True) for i in range(5)]

    gw.start_worker("batch")
    await asyncio.sleep(0.5)  # ample time for a batch worker that ignored priority to start
    assert standin.chat_calls == 0
    assert {j["status"] for j in await jobs_by_id(gw, key, batch)} == {"queued"}

    gw.start_worker("interactive")
    for job_id in batch:
        await wait_for_status(gw.client, key, job_id, "succeeded", timeout=10)
    done_interactive = await jobs_by_id(gw, key, interactive)
    assert {j["status"] for j in done_interactive} == {"succeeded"}
    first_batch = min(j["started_at"] for j in await jobs_by_id(gw, key, batch))
    assert max(j["started_at"] for j in done_interactive) <= first_batch


async def test_batch_work_drains_when_no_interactive_work_waits(gw: Gateway, key: str) -> None:
    gw.start_worker("batch")
    batch = [await submit(gw, key, f"alone {i}", batch=True) for i in range(10)]
    for job_id in batch:
        job = await wait_for_status(gw.client, key, job_id, "succeeded", "failed", timeout=10)
        assert job["status"] == "succeeded"


async def test_an_interactive_worker_does_not_take_batch_jobs(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker("interactive")
    batch_id = await submit(gw, key, "batch only", batch=True)
    response = await gw.client.post(
        "/api/v1/chat", json=chat_body("now"), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    await asyncio.sleep(0.3)
    assert (await get_job(gw.client, key, batch_id))["status"] == "queued"
    assert standin.chat_calls == 1
    gw.start_worker("batch")
    await eventually(lambda: _is(gw, key, batch_id, "succeeded"), what="the batch job to run")


async def _is(gw: Gateway, key: str, job_id: str, status: str) -> bool:
    return (await get_job(gw.client, key, job_id))["status"] == status


async def test_a_claim_reaches_past_a_queue_head_of_running_jobs(redis_url: str) -> None:
    """Running jobs stay in their queue: a claim reads it a page at a time past them."""
    from redis.asyncio import Redis

    from jobs import queues
    from jobs.records import now_ms
    from jobs.scripts import CLAIM

    redis = Redis.from_url(redis_url)
    queue = queues.queue_name("batch")
    try:
        await redis.flushdb()
        ids = [f"head-{i:03d}" for i in range(100)]
        await redis.zadd(queue, {job_id: i for i, job_id in enumerate(ids)})
        for job_id in ids[:90]:  # three pages of running jobs before the first ready one
            await redis.psetex(queues.IN_PROGRESS_KEY + job_id, 60_000, "1")
        claim = redis.register_script(CLAIM)
        interactive = queues.queue_name("interactive")
        args = [now_ms(), 4, 60_000, 512, 2, interactive, 0, queue, 1]
        claimed, _, blocked = await claim(args=args)
        assert [row[0].decode() for row in claimed] == ids[90:94]
        assert blocked == 0
        # ... but not past `scan` ids: a claim is bounded however many jobs run
        claimed, _, _ = await claim(args=[now_ms(), 4, 60_000, 40, 2, interactive, 0, queue, 1])
        assert claimed == []
    finally:
        await redis.flushdb()
        await redis.aclose()


async def test_a_batch_worker_claims_several_jobs_at_a_time_and_drains_everything(
    gw: Gateway, key: str
) -> None:
    batch = [await submit(gw, key, f"[sleep:0.01] drain {i}", batch=True) for i in range(48)]
    worker = gw.start_worker("batch", max_jobs=8)
    claims: list[int] = []
    claim = worker._claim

    async def counted(limit: int) -> tuple[int, int | None, bool]:
        result = await claim(limit)
        if result[0]:
            claims.append(result[0])
        return result

    worker._claim = counted  # type: ignore[method-assign]
    for job_id in batch:
        job = await wait_for_status(gw.client, key, job_id, "succeeded", "failed", timeout=20)
        assert job["status"] == "succeeded"
    assert sum(claims) >= 48 - 8  # all but what the first claim took before counting
    # a quarter of 8 slots at least, never one job per claim; only the queue's tail may be less
    assert min(claims[:-1]) >= 2, claims
