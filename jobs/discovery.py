"""The contract of model discovery between the API and the workers: where a refresh is asked
for and answered, where catalog changes are announced, and how two catalogs differ.

A refresh request is pushed on a Redis list that workers block on; the worker that pops it
runs discovery (one run at a time across all workers, under a lock) and publishes the outcome
on the request's own reply channel. Changes to the catalog are published on one channel that
every web process relays to its `/ws/models` sockets.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from redis.asyncio import Redis

from jobs.records import iso_s

REQUESTS_KEY = "sy:discovery:requests"  # list: refresh requests, JSON {"id", "providers", "force", "at"}
REPLY_CHANNEL_PREFIX = "sy:discovery:done:"  # pub/sub per request id: the outcome of its run
EVENTS_CHANNEL = "sy:models:events"  # pub/sub: JSON list of model_added/removed/updated events
RUN_LOCK_KEY = "sy:discovery:running"  # one discovery at a time, across every worker
DUE_KEY = "sy:discovery:due"  # set by the worker that takes a period's scheduled run
LAST_RUN_KEY = "sy:discovery:last"  # JSON outcome of the last run (for /health and refresh)
CACHE_STATS_KEY = "sy:catalog:stats"  # hash: hits, misses, and `<provider>:hits|misses`
COOLDOWN_KEY = "sy:provider:cooldown:"  # per provider: present (with a TTL) while it cools down
FAILS_KEY = "sy:provider:fails:"  # per provider: consecutive failed calls

ADDED, REMOVED, UPDATED = "model_added", "model_removed", "model_updated"


def catalog_events(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], at_ms: int
) -> list[dict[str, Any]]:
    """What changed between two catalogs (model id -> summary), as `/ws/models` messages."""
    timestamp = iso_s(at_ms)
    events: list[dict[str, Any]] = []
    for model_id, summary in after.items():
        old = before.get(model_id)
        if old is None:
            events.append({"type": ADDED, "model": summary, "timestamp": timestamp})
        elif old != summary:
            changed = sorted(k for k in summary.keys() | old.keys() if summary.get(k) != old.get(k))
            events.append({"type": UPDATED, "model": summary, "changes": changed, "timestamp": timestamp})
    for model_id, summary in before.items():
        if model_id not in after:
            events.append({"type": REMOVED, "model": summary, "timestamp": timestamp})
    return events


async def request_refresh(
    redis: Redis, providers: list[str] | None, timeout: float, *, force: bool = False
) -> dict[str, Any] | None:
    """Ask the workers for a discovery run and wait up to `timeout` for its outcome; None when
    it did not come in time (the request stays queued and a worker still runs it).

    Without `force`, a run that started after the request was made and covered its providers
    answers it (the listings are already as fresh as asked); `force` always lists again."""
    request_id = uuid.uuid4().hex
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    request = {"id": request_id, "providers": providers, "force": force, "at": int(time.time() * 1000)}
    try:
        await pubsub.subscribe(REPLY_CHANNEL_PREFIX + request_id)
        await redis.rpush(REQUESTS_KEY, orjson.dumps(request))  # type: ignore[misc]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if msg is not None and msg["type"] == "message":
                return orjson.loads(msg["data"])  # type: ignore[no-any-return]
        return None
    finally:
        await pubsub.aclose()
