"""Helpers shared by the tests of poison records and dead letters: finished jobs' state as
workers leave it in Redis, and their rows read back from the database."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis
from sqlmodel import col, select

from jobs import queues
from jobs.records import JobRecord, now_ms
from storage.db import Database
from storage.models import Job
from tests.conftest import Gateway


def finished_state(job_id: str, owner: str = "k-poison", **fields: Any) -> dict[str, Any]:
    """A finished job's state hash as a worker leaves it, with `fields` over it."""
    now = now_ms()
    record = JobRecord(
        id=job_id,
        kind="chat_completion",
        dialect="native",
        priority="interactive",
        owner=owner,
        status="succeeded",
        created_ms=now - 5,
        model="mock/echo",
    )
    state: dict[str, Any] = {**record.to_hash(), "started": now - 4, "finished": now}
    state["result"] = orjson.dumps({"choices": [{"message": {"content": "ok"}}]}).decode()
    state.update(fields)
    return state


async def put_finished(redis: Redis, state: dict[str, Any]) -> None:
    """As the finish script leaves a job: its state, and its entry in the persist set."""
    await redis.hset(queues.STATE_KEY + state["id"], mapping=state)
    await redis.zadd(queues.PERSIST_SET, {state["id"]: now_ms()})


async def rows(gw: Gateway, ids: set[str]) -> dict[str, Job]:
    db = Database(gw.settings.database_url_or_default)
    try:
        async with db.session() as session:
            found = (await session.exec(select(Job).where(col(Job.id).in_(ids)))).all()
    finally:
        await db.dispose()
    return {row.id: row for row in found}


async def all_written(gw: Gateway, ids: set[str]) -> dict[str, Job] | None:
    found = await rows(gw, ids)
    return found if set(found) == ids else None
