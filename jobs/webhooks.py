"""Webhook deliveries: what a job or batch asked for, and the delivery queue in Redis.

A job that carries a webhook holds it in its state (`WEBHOOK_FIELD`: the URL and the events
it wants). When the job is over, the persister adds its `completed` delivery in the same
transaction that takes the job out of the persist set (`add_delivery` in that MULTI), so a
finished job's webhook is never lost and never added twice: a delivery's id is made from the
job's id and the event, and adding an existing delivery does nothing.

Deliveries have their own queue, `DUE_KEY` (a sorted set: delivery id -> when its next attempt
is due, ms), drained by `switchyard webhooks` (`workers.webhooks`), never by the job workers:
a slow or dead receiver delays nothing but its own deliveries. A deliverer takes due deliveries
under a lease (their score moves a lease into the future), so one killed mid-delivery leaves
them to the next. Each delivery's hash (`DELIVERY_KEY`) holds its attempts for
`GET /api/v1/webhooks/deliveries`; the owner's index and the index of all deliveries order them
by creation, and everything is kept `RETENTION_MS` after it was created.
"""

from __future__ import annotations

from typing import Any

import orjson

from jobs.records import iso

# Replicate's values; Switchyard sends `start` (a worker started the job) and `completed`
# (it is over: succeeded, failed or canceled), and has no `output` or `logs` to send.
EVENTS: tuple[str, ...] = ("start", "output", "logs", "completed")
SENT_EVENTS = frozenset({"start", "completed"})
DEFAULT_EVENTS: tuple[str, ...] = ("completed",)

WEBHOOK_FIELD = "webhook"  # in a job's state: {"url": ..., "events": [...]}, JSON

DUE_KEY = "sy:wh:due"
DELIVERY_KEY = "sy:wh:d:"  # + delivery id: a hash
OWNER_KEY = "sy:wh:o:"  # + key id: delivery id -> created ms
ALL_KEY = "sy:wh:all"  # delivery id -> created ms
RETENTION_MS = 8 * 86_400_000

PENDING, DELIVERED, FAILED, GONE = "pending", "delivered", "failed", "gone"
STATES: tuple[str, ...] = (PENDING, DELIVERED, FAILED, GONE)

# ARGV: delivery id, owner, created_ms, retention_ms, then field/value pairs of its hash.
# Adds the delivery (due now) unless it exists; returns 1 when added.
ADD = r"""
local dkey = 'sy:wh:d:' .. ARGV[1]
if redis.call('EXISTS', dkey) == 1 then return 0 end
redis.call('HSET', dkey, unpack(ARGV, 5))
redis.call('PEXPIRE', dkey, ARGV[4])
local now = tonumber(ARGV[3])
local cutoff = now - tonumber(ARGV[4])
redis.call('ZADD', 'sy:wh:due', now, ARGV[1])
redis.call('ZADD', 'sy:wh:o:' .. ARGV[2], now, ARGV[1])
redis.call('ZADD', 'sy:wh:all', now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', 'sy:wh:o:' .. ARGV[2], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', 'sy:wh:all', '-inf', cutoff)
return 1
"""

# Take up to ARGV[3] due deliveries under a lease of ARGV[2] ms. ARGV: now_ms, lease_ms, limit.
TAKE = r"""
local ids = redis.call('ZRANGEBYSCORE', 'sy:wh:due', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', 'sy:wh:due', until_ms, id) end
return ids
"""


def webhook_state(url: str, events: list[str] | tuple[str, ...]) -> str:
    return orjson.dumps({"url": url, "events": list(events)}).decode()


def read_webhook(raw: bytes | str | None) -> dict[str, Any] | None:
    """A job state's webhook, or None (absent or unreadable: a bad one sends nothing)."""
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        return None
    return value


def delivery_id(subject_id: str, event: str) -> str:
    return f"msg_{subject_id}_{event}"


def add_delivery(
    target: Any,
    *,
    subject: str,
    subject_id: str,
    event: str,
    owner: str,
    url: str,
    snapshot: dict[str, Any],
    now_ms: int,
) -> Any:
    """Queue a delivery on `target`: a pipeline (queued in it) or a Redis client (the caller
    awaits what this returns).

    `subject` is "job" or "batch"; `snapshot` what the payload is rendered from (the job's
    state, or the batch's id)."""
    did = delivery_id(subject_id, event)
    fields: dict[str, Any] = {
        "id": did,
        "subject": subject,
        f"{subject}_id": subject_id,
        "event": event,
        "owner": owner,
        "url": url,
        "created": now_ms,
        "next": now_ms,
        "state": PENDING,
        "attempts": "[]",
        "snapshot": orjson.dumps(snapshot).decode(),
    }
    argv: list[Any] = [did, owner, now_ms, RETENTION_MS]
    for name, value in fields.items():
        argv += (name, value)
    return target.eval(ADD, 0, *argv)


def wants(webhook: dict[str, Any], event: str) -> bool:
    return event in (webhook.get("events") or DEFAULT_EVENTS)


def delivery_view(h: dict[bytes, bytes]) -> dict[str, Any]:
    """A delivery as `GET /api/v1/webhooks/deliveries` shows it."""

    def text(name: str) -> str | None:
        v = h.get(name.encode())
        return v.decode("utf-8", "replace") if v is not None else None

    def ms(name: str) -> int | None:
        v = text(name)
        return int(v) if v not in (None, "") else None

    try:
        attempts = orjson.loads(h.get(b"attempts") or b"[]")
    except orjson.JSONDecodeError:
        attempts = []
    state = text("state")
    return {
        "id": text("id"),
        "object": "webhook_delivery",
        "event": text("event"),
        "url": text("url"),
        "job_id": text("job_id"),
        "batch_id": text("batch_id"),
        "status": state,
        "created_at": iso(ms("created")),
        "attempts": attempts,
        "next_attempt_at": iso(ms("next")) if state == PENDING else None,
        "finished_at": iso(ms("finished")),
    }
