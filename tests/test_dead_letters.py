"""Dead letters as an admin sees them: `GET /api/admin/dead-letters` (what was set aside, where,
why, when, and the record as it was), `DELETE .../{id}`, `POST .../{id}/retry` (back to the
persister, after a fix), the admin key only; and the store's bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from jobs import queues
from jobs.deadletters import INDEX_KEY, RAW_KEY, DeadLetters
from jobs.records import now_ms
from tests.conftest import Gateway, admin_headers, eventually
from tests.records_support import all_written, finished_state, put_finished

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def redis(gw: Gateway) -> AsyncIterator[Redis]:
    client = Redis.from_url(gw.settings.redis_url or "")
    yield client
    await client.aclose()


ROUTE = "/api/admin/dead-letters"


async def listing(gw: Gateway) -> dict[str, Any]:
    response = await gw.client.get(ROUTE, headers=admin_headers())
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@SQLITE_ONLY
async def test_only_the_admin_sees_dead_letters(gw: Gateway, key: str) -> None:
    anonymous = await gw.client.get(ROUTE)
    assert anonymous.status_code == 401 and anonymous.json()["success"] is False
    for method, path in [("GET", ROUTE), ("DELETE", f"{ROUTE}/x"), ("POST", f"{ROUTE}/x/retry")]:
        response = await gw.client.request(method, path, headers={"X-API-Key": key})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["success"] is False
        assert response.json()["message"] == "only the admin key may manage dead letters"
    assert await listing(gw) == {"success": True, "count": 0, "data": []}
    bad = await gw.client.get(f"{ROUTE}?limit=lots", headers=admin_headers())
    assert bad.status_code == 400 and bad.json()["details"][0]["field"] == "limit"


async def test_list_drop_and_retry_after_a_fix(gw: Gateway, redis: Redis) -> None:
    poison = finished_state("poison-a", created="garbage")
    await put_finished(redis, poison)
    await put_finished(redis, finished_state("poison-b", created="x"))
    gw.start_worker()
    body = await eventually(lambda: _with_count(gw, 2), what="the poison records listed")
    entry = next(e for e in body["data"] if e["id"] == "poison-a")
    assert entry["job_id"] == "poison-a"
    assert entry["where"] == "persister:read" and "'created'" in entry["reason"]
    assert entry["at"].endswith("Z") and entry["raw_kind"] == "hash"
    assert entry["raw"]["created"] == "garbage" and entry["raw"]["owner"] == poison["owner"]

    # Fixed by hand where it lives, then retried: the persister writes it this time.
    await redis.hset(queues.STATE_KEY + "poison-a", "created", str(now_ms() - 10))
    retried = await gw.client.post(f"{ROUTE}/poison-a/retry", headers=admin_headers())
    assert retried.status_code == 200, retried.text
    assert retried.json()["data"] == {"id": "poison-a", "job_id": "poison-a", "requeued": True}
    await eventually(lambda: all_written(gw, {"poison-a"}), what="the fixed job written")
    assert [e["id"] for e in (await listing(gw))["data"]] == ["poison-b"]

    # Dropping: gone for good.
    dropped = await gw.client.delete(f"{ROUTE}/poison-b", headers=admin_headers())
    assert dropped.status_code == 200 and dropped.json()["data"] == {"id": "poison-b", "deleted": True}
    again = await gw.client.delete(f"{ROUTE}/poison-b", headers=admin_headers())
    assert again.status_code == 404 and again.json()["success"] is False
    assert not await redis.exists(RAW_KEY + "poison-b")
    assert (await listing(gw))["count"] == 0


async def _with_count(gw: Gateway, n: int) -> dict[str, Any] | None:
    body = await listing(gw)
    return body if body["count"] == n else None


async def test_a_retry_restores_a_job_whose_state_has_expired(gw: Gateway, redis: Redis) -> None:
    """Set aside by an older version that could not read `1e+17`; its job's key is gone since:
    the kept copy goes back to Redis and is written."""
    state = finished_state("old-1e17", rl_hourly="1e+17", rl_daily="1e+17", rl_tokens="-1")
    await DeadLetters(redis).add(
        "persister:read", "ValueError: invalid literal for int()", job_id="old-1e17", raw=state
    )
    assert not await redis.exists(queues.STATE_KEY + "old-1e17")
    gw.start_worker()
    retried = await gw.client.post(f"{ROUTE}/old-1e17/retry", headers=admin_headers())
    assert retried.status_code == 200, retried.text
    written = await eventually(lambda: all_written(gw, {"old-1e17"}), what="the restored job written")
    accounting = written["old-1e17"].accounting or {}
    assert accounting["limits_remaining"]["hourly"] == 10**17
    assert 0 < await redis.ttl(queues.STATE_KEY + "old-1e17") <= gw.settings.result_ttl_s
    assert (await listing(gw))["count"] == 0


@SQLITE_ONLY
async def test_what_cannot_be_retried(gw: Gateway, redis: Redis) -> None:
    dead = DeadLetters(redis)
    await dead.add("model-events", "not JSON", message=b"{garbage")
    [entry] = await dead.list()
    assert entry.job_id is None and entry.id.startswith("dl-")
    not_a_job = await gw.client.post(f"{ROUTE}/{entry.id}/retry", headers=admin_headers())
    assert not_a_job.status_code == 409 and "not a job" in not_a_job.json()["message"]
    await dead.add("done-listener", "unreadable", job_id="gone-job", message=b"{}")
    only_message = await gw.client.post(f"{ROUTE}/gone-job/retry", headers=admin_headers())
    assert only_message.status_code == 409 and "no state" in only_message.json()["message"]
    missing = await gw.client.post(f"{ROUTE}/no-such-entry/retry", headers=admin_headers())
    assert missing.status_code == 404


@SQLITE_ONLY
async def test_the_store_is_bounded_in_count_and_age(gw: Gateway, redis: Redis) -> None:
    dead = DeadLetters(redis, max_entries=3, retention_s=3600)
    for i in range(5):
        await dead.add("test", f"number {i}", job_id=f"job-{i}", raw={"n": str(i)})
    assert await dead.count() == 3
    assert [e.id for e in await dead.list()] == ["job-4", "job-3", "job-2"]
    assert not await redis.exists(RAW_KEY + "job-0") and await redis.exists(RAW_KEY + "job-2")
    assert 0 < await redis.ttl(RAW_KEY + "job-4") <= 3600
    await redis.zadd(INDEX_KEY, {"job-2": now_ms() - 3_601_000})  # as if set aside over an hour ago
    await dead.add("test", "number 5", job_id="job-5")
    assert [e.id for e in await dead.list()] == ["job-5", "job-4", "job-3"]
    assert not await redis.exists(RAW_KEY + "job-2")
