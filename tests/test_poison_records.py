"""No record stops a background loop: what the web's done listener, the worker's persister, the
stream hub, model events, discovery, wake-ups and the file sweeper do with a record they cannot
read or write (log it, set it aside as a dead letter, go on), and the supervisor that restarts
a loop that dies anyway.

The poison is real: hashes with numbers as Lua writes them past 10^16 (`1e+17`), garbage
published where the web listens, a provider's error text with a NUL in it (PostgreSQL's text
refuses U+0000), a row the database refuses, a key of the wrong type where a stream should be.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from api.model_events import ModelEvents
from jobs import queues
from jobs.accounting import CREDITS_KEY
from jobs.deadletters import DeadLetters
from jobs.discovery import EVENTS_CHANNEL, REQUESTS_KEY, request_refresh
from jobs.records import JobRecord
from jobs.streams import CHUNK, ERROR, Entry, StreamHub, stream_key
from jobs.tasks import restarts, supervise
from storage.blobs import LocalBlobStore
from storage.db import Database
from storage.files import Files
from storage.keys import utcnow
from storage.models import StoredFile
from switchyard.errors import RecordUnreadable
from switchyard.standin import StandIn
from tests.conftest import Gateway, admin_headers, chat_body, eventually, wait_for_status
from tests.records_support import all_written, finished_state, put_finished, rows
from workers.files import sweep_expired_files

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def redis(gw: Gateway) -> AsyncIterator[Redis]:
    client = Redis.from_url(gw.settings.redis_url or "")
    yield client
    await client.aclose()


async def sync_chat(gw: Gateway, key: str, text: str = "hello", wait: float = 10) -> Any:
    return await gw.client.post(
        "/api/v1/completion", json=chat_body(text), headers={"X-API-Key": key, "Prefer": f"wait={wait:g}"}
    )


async def done_channel(redis: Redis) -> bytes:
    """The done channel of the one web process under test, as Redis knows it."""
    channels = await redis.pubsub_channels(queues.DONE_CHANNEL_PREFIX + "*")
    assert len(channels) == 1, channels
    return channels[0]  # type: ignore[no-any-return]


# --- reading numbers as Lua writes them ----------------------------------------------------------
def test_numbers_in_lua_notation_read_exactly() -> None:
    state = {
        k.encode(): str(v).encode()
        for k, v in finished_state(
            "j-lua", rl_hourly="1e+17", rl_daily="12.0", rl_tokens="-1", metered="1", balance="1e+17"
        ).items()
    }
    record = JobRecord.from_hash(state)
    assert record.limits_remaining == {"hourly": 10**17, "daily_requests": 12, "daily_tokens": -1}
    assert record.balance == 10**17 and isinstance(record.balance, int)


@pytest.mark.parametrize(
    "state, reason",
    [
        (finished_state("j-bad", created="yesterday"), "'created' is not a number"),
        (finished_state("j-bad", created="1e999999999"), "'created' is not a usable number"),
        (finished_state("j-bad", result="{not json"), "'result' is not JSON"),
        ({"id": "j-bad", "status": "failed"}, "'kind' is missing"),
        ([1, 2], "not a hash"),
    ],
)
def test_a_record_that_cannot_be_read_names_its_job(state: Any, reason: str) -> None:
    with pytest.raises(RecordUnreadable) as caught:
        JobRecord.from_hash(state, job_id="j-bad")
    assert caught.value.job_id == "j-bad" and reason in caught.value.reason
    assert "j-bad" in caught.value.message and caught.value.headers == {"x-job-id": "j-bad"}


# --- the web's done listener ----------------------------------------------------------------------
@SQLITE_ONLY
async def test_the_done_listener_survives_poison_messages(gw: Gateway, key: str, redis: Redis) -> None:
    gw.start_worker()
    assert (await sync_chat(gw, key, "before")).status_code == 200
    channel = await done_channel(redis)
    poison = [
        b"not json at all",
        orjson.dumps([1, 2, 3]),
        orjson.dumps({"id": "ghost-1", "kind": "chat_completion"}),  # most of a record missing
        orjson.dumps({"id": ["not", "an", "id"], "status": "succeeded"}),
        # readable: a key whose limits are past 10^16 makes Lua write them this way
        orjson.dumps(finished_state("ghost-2", rl_hourly="1e+17", rl_daily="1e+17", rl_tokens="12.0")),
    ]
    for message in poison:
        assert await redis.publish(channel, message) == 1

    after = await sync_chat(gw, key, "after", wait=5)
    assert after.status_code == 200, after.text
    assert after.json()["data"]["choices"][0]["message"]["content"] == "echo: after"
    dead = DeadLetters(redis)
    await eventually(lambda: _count_is(dead, 4), what="four messages set aside")
    entries = {e.reason: e for e in await dead.list()}
    assert any("not JSON" in reason for reason in entries)
    ghost = await dead.get("ghost-1")
    assert ghost is not None and ghost.where == "done-listener" and "'priority' is missing" in ghost.reason
    assert ghost.raw_kind == "message" and orjson.loads(ghost.raw["message"])["id"] == "ghost-1"


async def _count_is(dead: DeadLetters, n: int) -> bool:
    return await dead.count() == n


@SQLITE_ONLY
async def test_a_waiting_caller_gets_the_error_of_its_unreadable_record_at_once(
    gw: Gateway, key: str, redis: Redis, standin: StandIn
) -> None:
    gw.start_worker()
    call = asyncio.create_task(sync_chat(gw, key, "[sleep:3] slow", wait=20))

    async def running_job() -> str | None:
        for name in await redis.keys(queues.STATE_KEY + "*"):
            if await redis.hget(name, "status") == b"running":
                return name.decode().removeprefix(queues.STATE_KEY)
        return None

    job_id = await eventually(running_job, what="the job to run")
    garbage = orjson.dumps(finished_state(job_id, created="garbage"))
    await redis.publish(await done_channel(redis), garbage)
    response = await call
    assert response.status_code == 500  # at once: not the job's answer 3 s later, nor a 202 after 20 s
    body = response.json()
    assert body["success"] is False and job_id in body["message"] and "'created'" in body["message"]
    assert response.headers["x-job-id"] == job_id
    entry = await eventually(lambda: DeadLetters(redis).get(job_id), what="the record set aside")
    assert entry.where == "done-listener" and entry.raw_kind == "hash"  # the job's own state, kept
    assert entry.raw["owner"] and entry.raw["kind"] == "chat_completion"
    # the listener serves the next caller, and the job itself still finishes and is written
    assert (await sync_chat(gw, key, "next")).status_code == 200
    await eventually(lambda: all_written(gw, {job_id}), what="the slow job in the database")


async def test_a_balance_past_10_to_the_16_is_read_and_written(gw: Gateway, redis: Redis) -> None:
    """Old data: a balance that Lua writes back as `1e+17` into the job's state."""
    gw.start_worker()
    created = await gw.client.post("/api/keys", json={"name": "rich", "credits": 5}, headers=admin_headers())
    secret, key_id = created.json()["key"], created.json()["id"]
    await redis.hset(CREDITS_KEY, key_id, str(10**17 + 5))
    response = await gw.client.post(
        "/api/v1/chat",
        json=chat_body("rich"),
        headers={"Authorization": f"Bearer {secret}", "Prefer": "wait=5"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["credits_remaining"] == 10**17  # what Lua's %.17g kept of 10^17 + 4
    job_id = response.headers["x-job-id"]
    assert await redis.hget(queues.STATE_KEY + job_id, "balance") == b"1e+17"
    written = await eventually(lambda: all_written(gw, {job_id}), what="the job in the database")
    assert written[job_id].accounting is not None and written[job_id].accounting["balance"] == 10**17


# --- the persister ----------------------------------------------------------------------------------
async def test_a_poison_record_is_set_aside_and_the_next_jobs_are_written(
    gw: Gateway, key: str, redis: Redis
) -> None:
    poison = finished_state("poison-1", created="garbage")
    await put_finished(redis, poison)
    worker = gw.start_worker()
    first = await sync_chat(gw, key, "first")
    assert first.status_code == 200
    await eventually(lambda: all_written(gw, {first.headers["x-job-id"]}), what="the first job written")
    dead = DeadLetters(redis)
    # the persister sets a record aside after it has written the rows beside it
    entry = await eventually(lambda: dead.get("poison-1"), what="the poison record set aside")
    assert entry.where == "persister:read" and "'created'" in entry.reason
    assert entry.raw == {k: str(v) for k, v in poison.items()}  # kept as it was

    # ...and takes it out of the set right after (the same loop turn, not the same command)
    async def out_of_the_set() -> bool:
        return await redis.zscore(queues.PERSIST_SET, "poison-1") is None

    await eventually(out_of_the_set, timeout=5, what="the poison record out of the persist set")

    # A poison record left before a worker starts is the first it meets: it must not stop it.
    await gw.stop_worker(worker)
    no_kind = finished_state("poison-2")
    del no_kind["kind"]
    await put_finished(redis, no_kind)
    gw.start_worker()
    second = await sync_chat(gw, key, "second")
    assert second.status_code == 200
    await eventually(lambda: all_written(gw, {second.headers["x-job-id"]}), what="the second job written")
    await eventually(lambda: dead.get("poison-2"), what="the second poison record set aside")
    assert await dead.count() == 2


async def test_a_row_the_database_refuses_does_not_hold_back_the_others(gw: Gateway, redis: Redis) -> None:
    """One row neither database can hold (an integer past 64 bits) among good ones: the batch is
    split, every good row written, the refused one set aside with the database's reason."""
    good = [finished_state(f"good-{i}") for i in range(9)]
    refused = finished_state("refused-1", attempts=str(2**64))
    for state in [*good[:4], refused, *good[4:]]:
        await put_finished(redis, state)
    gw.start_worker()  # its persister catches up with what is waiting
    ids = {s["id"] for s in good}
    await eventually(lambda: all_written(gw, ids), what="every good row written")
    entry = await eventually(lambda: DeadLetters(redis).get("refused-1"), what="the refused row set aside")
    assert entry.where in ("persister:write", "persister:row") and entry.raw["attempts"] == str(2**64)
    assert await redis.zcard(queues.PERSIST_SET) == 0
    assert "refused-1" not in await rows(gw, {"refused-1"})


async def test_a_nul_in_a_providers_error_is_written_cleaned(
    gw: Gateway, key: str, standin: StandIn, redis: Redis
) -> None:
    """PostgreSQL's text refuses U+0000: one such error message used to block every batch."""
    gw.start_worker()
    standin.status, standin.status_message = 400, "bad\x00request"
    failed = await sync_chat(gw, key, "refused")
    assert failed.status_code >= 400
    failed_id = failed.headers["x-job-id"]
    standin.status = None
    echoed = await sync_chat(gw, key, "nul\x00inside")  # a NUL in the result's JSON: kept as is
    assert echoed.status_code == 200
    echoed_id = echoed.headers["x-job-id"]
    written = await eventually(lambda: all_written(gw, {failed_id, echoed_id}), what="both rows written")
    message = written[failed_id].error_message or ""
    assert "bad\ufffdrequest" in message and "\x00" not in message
    result = written[echoed_id].result or {}
    assert result["choices"][0]["message"]["content"] == "echo: nul\x00inside"
    assert await DeadLetters(redis).count() == 0


# --- the other loops ---------------------------------------------------------------------------------
@SQLITE_ONLY
async def test_the_stream_hub_sets_aside_a_key_that_is_not_a_stream(gw: Gateway, redis: Redis) -> None:
    hub = StreamHub(redis, block_ms=1000)
    try:
        await redis.set(stream_key("wrong-type"), "a string where a stream should be")
        bad = await hub.subscribe("wrong-type")
        good = await hub.subscribe("fine")
        await redis.xadd(stream_key("fine"), {CHUNK: b'{"n": 1}'})
        async with asyncio.timeout(5):
            item = await good.next(redis)
            failed = await bad.next(redis)
        assert item == Entry(CHUNK, b'{"n": 1}')
        assert isinstance(failed, Entry) and failed.kind == ERROR
        assert b"wrong-type" in failed.data
        await redis.xadd(stream_key("fine"), {CHUNK: b'{"n": 2}'})
        async with asyncio.timeout(5):
            assert await good.next(redis) == Entry(CHUNK, b'{"n": 2}')
        entry = await eventually(lambda: DeadLetters(redis).get("wrong-type"), what="the stream set aside")
        assert entry.where == "stream-hub" and "not a stream" in entry.reason
    finally:
        await hub.close()


@SQLITE_ONLY
async def test_model_events_set_garbage_aside_and_relay_the_rest(gw: Gateway, redis: Redis) -> None:
    events = ModelEvents(redis)
    try:
        queue = await events.subscribe()
        await redis.publish(EVENTS_CHANNEL, b"{garbage")
        await redis.publish(EVENTS_CHANNEL, orjson.dumps([{"type": "model_added", "model": {"id": "m"}}]))
        async with asyncio.timeout(5):
            assert (await queue.get())["model"]["id"] == "m"
        entry = (await eventually(lambda: DeadLetters(redis).list(), what="the garbage set aside"))[0]
        assert entry.where == "model-events" and entry.raw == {"message": "{garbage"}
    finally:
        await events.close()


@SQLITE_ONLY
async def test_discovery_sets_aside_a_request_it_cannot_read(gw: Gateway, redis: Redis) -> None:
    gw.start_worker()
    await redis.rpush(REQUESTS_KEY, orjson.dumps(["not", "a", "request"]), b"\xff\xfe")  # type: ignore[misc]
    outcome = await request_refresh(redis, None, 10)
    assert outcome is not None and outcome["status"] == "success"
    await eventually(lambda: _count_is(DeadLetters(redis), 2), what="both requests set aside")
    assert {e.where for e in await DeadLetters(redis).list()} == {"discovery"}


@SQLITE_ONLY
async def test_a_wake_up_that_cannot_be_read_does_not_end_the_wake_ups(
    gw: Gateway, key: str, redis: Redis
) -> None:
    """Without wake-ups, a worker would only see new work at its idle sweep (a minute here)."""
    gw.start_worker(idle_sweep_s=60)
    await eventually(lambda: _subscribed(redis, queues.CANCEL_CHANNEL), what="the worker's wake-ups")
    assert await redis.publish(queues.CANCEL_CHANNEL, b"\xff\xfe not text") == 1
    response = await sync_chat(gw, key, "woken", wait=5)
    assert response.status_code == 200, response.text


@SQLITE_ONLY
async def test_a_job_state_that_is_not_text_does_not_end_the_claim_loop(
    gw: Gateway, key: str, redis: Redis
) -> None:
    queued = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("odd"), headers={"X-API-Key": key}
    )
    job_id = queued.json()["data"]["job_id"]
    await redis.hset(queues.STATE_KEY + job_id, "note", b"\xff\xfe not UTF-8")
    gw.start_worker()
    job = await wait_for_status(gw.client, key, job_id, "succeeded", "failed")
    assert job["status"] == "succeeded"
    assert (await sync_chat(gw, key, "next", wait=5)).status_code == 200


async def _subscribed(redis: Redis, channel: str) -> bool:
    counts = await redis.pubsub_numsub(channel)
    return bool(counts and counts[0][1] > 0)


@SQLITE_ONLY
async def test_the_file_sweeper_sets_aside_a_blob_it_cannot_remove(gw: Gateway, redis: Redis) -> None:
    """A row whose blob key is no blob key (old data, a hand edit) among expired files: the
    others' blobs are still removed."""
    db = Database(gw.settings.database_url_or_default)
    files = Files.from_settings(gw.settings, db)
    assert isinstance(files.blobs, LocalBlobStore)
    try:
        stored = [
            await files.store(f"old {i}".encode(), mime="text/plain", filename=f"{i}.txt", expires_in_s=None)
            for i in range(4)
        ]
        old = utcnow() - timedelta(hours=2)
        async with db.session() as session:
            session.add(
                StoredFile(
                    id="f-bad-blob", blob_key="not-a-blob-key", mime_type="text/plain", size=1,
                    filename="bad.txt", created_at=old, expires_at=old,
                )
            )  # fmt: skip
            for s in stored:
                s.expires_at = old
                session.add(s)
        long_ago = time.time() - 3600  # the sweep keeps blobs written just now
        for s in stored:
            os.utime(files.blobs.path(s.blob_key), (long_ago, long_ago))
        ctx: dict[str, Any] = {"settings": gw.settings, "files": files, "redis": redis}
        assert await sweep_expired_files(ctx) == 5
        for s in stored:
            assert not await files.blobs.exists(s.blob_key)
        entry = (await DeadLetters(redis).list())[0]
        assert entry.where == "file-sweeper" and "not-a-blob-key" in entry.reason
    finally:
        await db.dispose()


# --- the supervisor ---------------------------------------------------------------------------------
async def test_a_supervised_task_that_raises_is_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"bug number {runs}")
        steady.set()
        await asyncio.Event().wait()

    before = restarts["test-flaky"]
    with caplog.at_level(logging.ERROR, logger="switchyard.tasks"):
        task = supervise("test-flaky", flaky, first_backoff_s=0.01)
        async with asyncio.timeout(5):
            await steady.wait()
    assert runs == 3 and restarts["test-flaky"] - before == 2
    logged = [r for r in caplog.records if "test-flaky" in r.getMessage()]
    assert len(logged) == 2 and all(r.exc_info for r in logged)  # with the traceback
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def done() -> None:  # a loop told to stop returns: supervision ends with it
        return None

    finished = supervise("test-done", done)
    await finished
    assert restarts["test-done"] == 0
