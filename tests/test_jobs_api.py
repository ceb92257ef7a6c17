"""The job API: get, list (status filter, cursor pages), cancel; ownership; jobs persisted to the
database and readable from it once Redis has let them go; bounded synchronous waits."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from sqlmodel import col, func, select

from jobs import queues
from storage.db import Database
from storage.models import Job
from switchyard.standin import StandIn
from tests.conftest import Gateway, chat_body, eventually, get_job, wait_for_status


async def submit_batch(gw: Gateway, key: str, text: str = "batch", **extra: Any) -> str:
    response = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body(text, **extra), headers={"X-API-Key": key}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["job_id"])


async def list_all(gw: Gateway, key: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every page of the caller's jobs; returns the jobs and the number of pages."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await gw.client.get("/api/v1/jobs", params=query, headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True
        pages += 1
        jobs.extend(body["data"])
        cursor = body["pagination"]["next_cursor"]
        assert body["pagination"]["has_more"] is (cursor is not None)
        if cursor is None:
            return jobs, pages
        assert pages < 50, "pagination does not end"


async def db_rows(settings_url: str, *ids: str) -> dict[str, Job]:
    db = Database(settings_url)
    try:
        async with db.session() as session:
            rows = (await session.exec(select(Job).where(col(Job.id).in_(ids)))).all()
            return {r.id: r for r in rows}
    finally:
        await db.dispose()


async def db_count(url: str) -> int:
    db = Database(url)
    try:
        async with db.session() as session:
            return int((await session.exec(select(func.count()).select_from(Job))).one())
    finally:
        await db.dispose()


async def test_list_pages_through_every_job_newest_first_with_a_status_filter(gw: Gateway, key: str) -> None:
    gw.start_worker()
    finished = []
    for i in range(7):
        response = await gw.client.post(
            "/api/v1/completion", json=chat_body(f"done {i}"), headers={"X-API-Key": key}
        )
        assert response.status_code == 200
        finished.append(response.headers["x-job-id"])
    # Let the persister move them to the database, so the listing reads both sources.
    await eventually(
        lambda: db_count(gw.settings.database_url_or_default), what="finished jobs in the database"
    )
    await eventually(lambda: _count_equals(gw, 7), what="all 7 finished jobs persisted")
    await gw.stop_workers()
    queued = [await submit_batch(gw, key, f"waiting {i}") for i in range(5)]

    everything, pages = await list_all(gw, key, limit=5)
    assert pages == 3
    assert [j["id"] for j in everything] == list(reversed(finished + queued))
    assert all(j["object"] == "job" for j in everything)
    created = [j["created_at"] for j in everything]
    assert created == sorted(created, reverse=True)

    only_queued, _ = await list_all(gw, key, status="queued", limit=2)
    assert [j["id"] for j in only_queued] == list(reversed(queued))
    only_done, pages = await list_all(gw, key, status="succeeded", limit=3)
    assert [j["id"] for j in only_done] == list(reversed(finished))
    assert pages == 3
    assert all(j["result"]["success"] is True for j in only_done)
    none_failed, _ = await list_all(gw, key, status="failed")
    assert none_failed == []


async def _count_equals(gw: Gateway, n: int) -> bool:
    return await db_count(gw.settings.database_url_or_default) == n


async def test_status_filter_finds_live_jobs_behind_newer_ones_of_another_status(
    gw: Gateway, key: str
) -> None:
    """Jobs still live in Redis (not yet written to the database) are filtered by status too:
    newer jobs of another status must not hide them."""
    queued = [await submit_batch(gw, key, f"keep {i}") for i in range(3)]
    canceled = [await submit_batch(gw, key, f"drop {i}") for i in range(3)]
    for job_id in canceled:  # no worker runs: nothing persists them, they stay live in Redis
        response = await gw.client.delete(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key})
        assert response.json()["data"]["status"] == "canceled"

    found, _ = await list_all(gw, key, status="queued", limit=2)
    assert [j["id"] for j in found] == list(reversed(queued))


async def test_cancel_a_queued_job(gw: Gateway, key: str, standin: StandIn) -> None:
    job_id = await submit_batch(gw, key, "never run me")
    response = await gw.client.delete(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key})
    assert response.status_code == 200
    job = response.json()["data"]
    assert job["status"] == "canceled"
    assert job["error"] == {"type": "canceled", "message": "canceled by the client"}
    assert job["finished_at"] is not None
    assert job["result"] is None

    worker = gw.start_worker(burst=True)
    await asyncio.wait_for(next(t for w, t in gw.workers if w is worker), 10)
    assert standin.chat_calls == 0
    assert (await get_job(gw.client, key, job_id))["status"] == "canceled"
    # Canceling a finished job changes nothing.
    again = await gw.client.delete(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key})
    assert again.status_code == 200 and again.json()["data"]["status"] == "canceled"
    # The canceled job reaches the database like any finished one.
    rows = await eventually(
        lambda: db_rows(gw.settings.database_url_or_default, job_id), what="the canceled row"
    )
    assert rows[job_id].status == "canceled"


async def test_cancel_a_running_job(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    job_id = await submit_batch(gw, key, "[hang] forever")
    await wait_for_status(gw.client, key, job_id, "running")
    await eventually(lambda: _async(standin.chat_calls == 1), what="the provider call")

    response = await gw.client.delete(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key})
    assert response.status_code == 200
    job = await wait_for_status(gw.client, key, job_id, "canceled", "failed", "succeeded", timeout=5)
    assert job["status"] == "canceled"
    assert job["error"]["type"] == "canceled"
    assert job["attempts"] == 1


async def test_a_synchronous_caller_learns_its_job_was_canceled(gw: Gateway, key: str) -> None:
    gw.start_worker()
    call = asyncio.create_task(
        gw.client.post("/api/v1/chat", json=chat_body("[hang]"), headers={"Authorization": f"Bearer {key}"})
    )

    async def running_job() -> str | None:
        listing = await gw.client.get(
            "/api/v1/jobs", params={"status": "running"}, headers={"X-API-Key": key}
        )
        data = listing.json()["data"]
        return data[0]["id"] if data else None

    job_id = await eventually(running_job, what="the synchronous job to run")
    await gw.client.delete(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key})
    response = await asyncio.wait_for(call, 5)
    assert response.status_code == 409
    assert response.json() == {"error": "canceled by the client"}
    assert response.headers["x-job-id"] == job_id


async def _async(value: Any) -> Any:
    return value


async def test_a_key_sees_only_its_own_jobs(gw: Gateway, key: str) -> None:
    other = await gw.create_key("mallory")
    job_id = await submit_batch(gw, key)
    for method in ("GET", "DELETE"):
        response = await gw.client.request(method, f"/api/v1/jobs/{job_id}", headers={"X-API-Key": other})
        assert response.status_code == 404
        body = response.json()
        assert body == {
            "success": False,
            "error": "Not Found",
            "message": f"Job '{job_id}' not found",
            "details": [],
        }
    assert (await gw.client.get("/api/v1/jobs", headers={"X-API-Key": other})).json()["data"] == []
    # The owner's job was not canceled by the stranger.
    assert (await get_job(gw.client, key, job_id))["status"] == "queued"


async def test_unknown_job_is_404(gw: Gateway, key: str) -> None:
    for method in ("GET", "DELETE"):
        response = await gw.client.request(
            method, "/api/v1/jobs/0123456789abcdef", headers={"X-API-Key": key}
        )
        assert response.status_code == 404
        assert response.json()["success"] is False
    assert (await gw.client.get("/api/v1/jobs/x")).status_code == 401


async def test_finished_jobs_are_persisted_and_read_back_after_redis_lets_go(gw: Gateway, key: str) -> None:
    gw.start_worker()
    ok = await gw.client.post("/api/v1/completion", json=chat_body("keep me"), headers={"X-API-Key": key})
    assert ok.status_code == 200
    ok_id = ok.headers["x-job-id"]
    failed = await gw.client.post(
        "/api/v1/completion", json=chat_body("[400] refuse"), headers={"X-API-Key": key}
    )
    assert failed.status_code == 502
    failed_id = failed.headers["x-job-id"]
    live_view = {i: await get_job(gw.client, key, i) for i in (ok_id, failed_id)}

    url = gw.settings.database_url_or_default
    rows = await eventually(
        lambda: _all_rows(url, ok_id, failed_id), timeout=5, interval=0.05, what="both jobs in the database"
    )
    assert rows[ok_id].status == "succeeded"
    assert (
        rows[ok_id].result is not None
        and rows[ok_id].result["choices"][0]["message"]["content"] == "echo: keep me"
    )
    assert (
        rows[ok_id].attempts == 1 and rows[ok_id].credits_charged == 1 and rows[ok_id].provider == "standin"
    )
    assert rows[failed_id].status == "failed"
    assert "stand-in says 400" in (rows[failed_id].error_message or "")

    async with aioredis.Redis.from_url(gw.settings.redis_url) as r:  # type: ignore[arg-type]
        assert await r.delete(*(queues.STATE_KEY + i for i in (ok_id, failed_id))) == 2
    for job_id, before in live_view.items():
        assert await get_job(gw.client, key, job_id) == before
    listing, _ = await list_all(gw, key)
    assert {j["id"] for j in listing} == {ok_id, failed_id}
    stranger = await gw.create_key("stranger")
    assert (await gw.client.get(f"/api/v1/jobs/{ok_id}", headers={"X-API-Key": stranger})).status_code == 404


async def _all_rows(url: str, *ids: str) -> dict[str, Job] | None:
    rows = await db_rows(url, *ids)
    return rows if len(rows) == len(ids) else None


async def test_an_interactive_worker_leaves_batch_rows_to_the_batch_side_until_they_wait_too_long(
    gw: Gateway, key: str
) -> None:
    interactive = gw.start_worker("interactive", persist_others_after_s=3.0)
    batch = gw.start_worker("batch")

    async def started() -> bool:
        return batch.persister is not None

    await eventually(started, timeout=5, what="the batch worker's persister")
    assert batch.persister is not None
    await batch.persister.stop()  # the batch side stops writing: a batch persister far behind, or gone
    batch_id = await submit_batch(gw, key, "drained")
    await wait_for_status(gw.client, key, batch_id, "succeeded")
    finished = asyncio.get_running_loop().time()
    sync = await gw.client.post("/api/v1/chat", json=chat_body("now"), headers={"X-API-Key": key})
    assert sync.status_code == 200, sync.text
    sync_id = sync.headers["x-job-id"]

    url = gw.settings.database_url_or_default
    await eventually(lambda: _all_rows(url, sync_id), timeout=5, interval=0.05, what="the sync job's row")
    async with aioredis.Redis.from_url(gw.settings.redis_url) as r:  # type: ignore[arg-type]
        if asyncio.get_running_loop().time() - finished < 2.0:  # still young: not the interactive side's
            assert await r.zscore(queues.persist_set(queues.BATCH), batch_id) is not None
            assert batch_id not in await db_rows(url, batch_id)
        rows = await eventually(
            lambda: _all_rows(url, batch_id), timeout=10, interval=0.1, what="the batch row, written late"
        )
        assert rows[batch_id].status == "succeeded" and rows[batch_id].priority == "batch"
        assert await r.zscore(queues.persist_set(queues.BATCH), batch_id) is None
    assert interactive.persister is not None and interactive.persister.rows_written >= 2


async def test_prefer_wait_bounds_a_synchronous_call(gw: Gateway, key: str) -> None:
    gw.start_worker()
    started = asyncio.get_running_loop().time()
    response = await gw.client.post(
        "/api/v1/chat",
        json=chat_body("[sleep:3] slow"),
        headers={"Authorization": f"Bearer {key}", "Prefer": "wait=1"},
    )
    elapsed = asyncio.get_running_loop().time() - started
    assert response.status_code == 202, response.text
    assert 0.9 <= elapsed < 2.5
    data = response.json()["data"]
    assert data["status"] in ("queued", "running")
    assert response.headers["location"] == data["poll_url"]
    job = await wait_for_status(gw.client, key, data["job_id"], "succeeded", "failed", timeout=5)
    assert job["status"] == "succeeded"
    assert job["priority"] == "interactive" and job["credits_charged"] == 1
    assert job["result"]["choices"][0]["message"]["content"] == "echo: [sleep:3] slow"


async def test_a_result_read_from_the_database_is_exactly_the_synchronous_body(gw: Gateway) -> None:
    gw.start_worker()
    metered = await gw.create_key("metered", credits=10)
    native = await gw.client.post(
        "/api/v1/completion", json=chat_body("native"), headers={"X-API-Key": metered}
    )
    credits = await gw.client.post(
        "/api/v1/chat", json=chat_body("credits"), headers={"Authorization": f"Bearer {metered}"}
    )
    assert native.status_code == 200 and credits.status_code == 200
    ids = [native.headers["x-job-id"], credits.headers["x-job-id"]]
    url = gw.settings.database_url_or_default
    await eventually(lambda: _all_rows(url, *ids), timeout=5, interval=0.05, what="both jobs in the database")
    async with aioredis.Redis.from_url(gw.settings.redis_url) as r:  # type: ignore[arg-type]
        await r.delete(*(queues.STATE_KEY + i for i in ids))
    assert (await get_job(gw.client, metered, ids[1]))["result"] == credits.json()
    assert (await get_job(gw.client, metered, ids[0]))["result"] == native.json()
