"""Dead letters: records a background loop could not read or write, set aside in Redis.

A loop (the web's done listener, the persister, the stream hub, model events, discovery, the
file sweeper) that meets a record it cannot handle logs it with its id and the reason, adds
it here and goes on with the next one. An entry keeps the record exactly as it was (a job's
state hash, byte for byte, or the message as it came), so nothing is lost once the job's own
key expires; an admin lists, drops or retries entries (`api/dialects/admin.py`).

Redis keys:
- `sy:dead`         hash: entry id -> entry (JSON: id, job_id, where, reason, at, raw kind)
- `sy:dead:at`      zset: entry id -> when it was set aside (ms), oldest first
- `sy:dead:raw:<id>` hash: the record as it was (`kind` "hash") or `{message: ...}` ("message")

An entry's id is its job's id when the record names one (a job set aside twice is one entry,
the latest), else a fresh `dl-...` id. The store is bounded: each addition drops entries
older than the retention and then the oldest beyond the maximum count, in the same script.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs import queues
from jobs.records import iso, now_ms
from switchyard.errors import Conflict, NotFound

log = logging.getLogger("switchyard.deadletters")

ENTRIES_KEY = "sy:dead"
INDEX_KEY = "sy:dead:at"
RAW_KEY = "sy:dead:raw:"

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_RETENTION_S = 30 * 86_400
RAW_MESSAGE_FIELD = "message"

# ARGV: id, at_ms, entry JSON, max entries, kept since (ms), raw ttl s, then raw field/value
# pairs. Returns how many entries the store holds now.
_ADD = r"""
local id = ARGV[1]
redis.call('HSET', 'sy:dead', id, ARGV[3])
redis.call('ZADD', 'sy:dead:at', ARGV[2], id)
local raw = 'sy:dead:raw:' .. id
redis.call('DEL', raw)
if #ARGV > 6 then
  redis.call('HSET', raw, unpack(ARGV, 7))
  redis.call('EXPIRE', raw, ARGV[6])
end
local gone = redis.call('ZRANGEBYSCORE', 'sy:dead:at', '-inf', '(' .. ARGV[5])
local over = redis.call('ZCARD', 'sy:dead:at') - #gone - tonumber(ARGV[4])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', 'sy:dead:at', #gone, #gone + over - 1)) do
    gone[#gone + 1] = old
  end
end
for _, old in ipairs(gone) do
  redis.call('HDEL', 'sy:dead', old)
  redis.call('ZREM', 'sy:dead:at', old)
  redis.call('DEL', 'sy:dead:raw:' .. old)
end
return redis.call('ZCARD', 'sy:dead:at')
"""

# Put a dead-lettered job back in its persist set: its state hash restored from the raw copy
# when it has expired meanwhile, and the entry dropped (it comes back if the job fails again);
# persisters are told (`jobs.queues.PERSIST_CHANNEL`) rather than left to their next sweep.
# ARGV: id, persist set, now_ms, state ttl s, raw copy is a state hash 0/1.
# Returns 1; 0 when there is no such entry; -1 when there is no job state to write.
_RETRY = r"""
local id = ARGV[1]
if redis.call('HEXISTS', 'sy:dead', id) == 0 then return 0 end
local skey = 'sy:job:' .. id
local raw = 'sy:dead:raw:' .. id
if redis.call('EXISTS', skey) == 0 then
  local flat = redis.call('HGETALL', raw)
  if ARGV[5] ~= '1' or #flat == 0 then return -1 end
  redis.call('HSET', skey, unpack(flat))
  redis.call('EXPIRE', skey, ARGV[4])
end
redis.call('ZADD', ARGV[2], ARGV[3], id)
redis.call('HDEL', 'sy:dead', id)
redis.call('ZREM', 'sy:dead:at', id)
redis.call('DEL', raw)
redis.call('PUBLISH', 'sy:persist-now', '')
return 1
"""


@dataclass(slots=True)
class DeadLetter:
    """An entry as the admin sees it: `raw` is the record's fields as text."""

    id: str
    job_id: str | None
    where: str
    reason: str
    at_ms: int
    raw_kind: str  # "hash": a job's state hash; "message": what a channel or list carried
    raw: dict[str, str]

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "where": self.where,
            "reason": self.reason,
            "at": iso(self.at_ms),
            "raw_kind": self.raw_kind,
            "raw": self.raw,
        }


class DeadLetters:
    def __init__(
        self,
        redis: Redis,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        retention_s: int = DEFAULT_RETENTION_S,
        job_ttl_s: int = 3600,
    ) -> None:
        self.redis = redis
        self.max_entries = max_entries
        self.retention_s = retention_s
        self.job_ttl_s = job_ttl_s  # a retried job's restored state lives as long as a result
        self._add = redis.register_script(_ADD)
        self._retry = redis.register_script(_RETRY)
        self._pending: set[asyncio.Task[bool]] = set()

    @classmethod
    def from_settings(cls, redis: Redis, settings: Any) -> DeadLetters:
        return cls(
            redis,
            max_entries=settings.dead_letter_max,
            retention_s=settings.dead_letter_retention_s,
            job_ttl_s=settings.result_ttl_s,
        )

    # --- setting aside -----------------------------------------------------------------------
    async def add(
        self,
        where: str,
        reason: str,
        *,
        job_id: str | None = None,
        raw: Mapping[Any, Any] | None = None,
        message: bytes | str | None = None,
    ) -> bool:
        """Set a record aside: `raw`, a job's state hash as Redis holds it, or `message`, what
        a channel carried. Logged either way; False when Redis would not take it (the caller
        keeps the record where it was, to be met again)."""
        entry_id = job_id or f"dl-{now_ms():x}-{secrets.token_hex(4)}"
        log.error("set aside %s (job %s) at %s: %s", entry_id, job_id or "-", where, reason)
        at = now_ms()
        fields: list[Any] = []
        kind = "hash"
        if raw:
            for field, value in raw.items():
                fields += (field, value)
        elif message is not None:
            kind = "message"
            fields = [RAW_MESSAGE_FIELD, message]
        entry = {"job_id": job_id, "where": where, "reason": reason[:1000], "raw_kind": kind}
        kept_since = at - self.retention_s * 1000
        try:
            await self._add(
                args=[
                    entry_id,
                    at,
                    orjson.dumps(entry),
                    self.max_entries,
                    kept_since,
                    self.retention_s,
                    *fields,
                ]
            )
        except (RedisError, OSError) as exc:
            log.error("could not set aside %s at %s (%s): it stays where it was", entry_id, where, exc)
            return False
        return True

    async def add_job(self, where: str, reason: str, job_id: str, *, message: bytes | None = None) -> bool:
        """Set a job aside with its state hash as Redis holds it now (`message` when it has none)."""
        try:
            state = await self.redis.hgetall(queues.STATE_KEY + job_id)  # type: ignore[misc]
        except (RedisError, OSError):
            state = {}
        return await self.add(where, reason, job_id=job_id, raw=state or None, message=message)

    def add_soon(
        self, where: str, reason: str, *, job_id: str | None = None, message: bytes | None = None
    ) -> None:
        """`add` (of a job, with its state hash, when `job_id` is given) from code that cannot
        wait: a pub/sub callback."""
        coro = (
            self.add_job(where, reason, job_id, message=message)
            if job_id
            else self.add(where, reason, message=message)
        )
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self, timeout: float = 2.0) -> None:
        """Let additions still in flight finish (a closing process), cancelling them after `timeout`."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=timeout)
        for task in late:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- reading and acting ------------------------------------------------------------------
    async def count(self) -> int:
        """How many records are set aside: what `/health` and `/metrics` show."""
        return int(await self.redis.zcard(INDEX_KEY))

    async def list(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Entries, newest first."""
        ids = await self.redis.zrevrange(INDEX_KEY, offset, offset + limit - 1, withscores=True)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(ENTRIES_KEY, [i for i, _ in ids])
            for entry_id, _ in ids:
                pipe.hgetall(RAW_KEY.encode() + entry_id)
            entries, *raws = await pipe.execute()
        out = []
        for (entry_id, at), entry, raw in zip(ids, entries, raws, strict=True):
            out.append(_entry(entry_id.decode("utf-8", "replace"), int(at), entry, raw))
        return out

    async def get(self, entry_id: str) -> DeadLetter | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(ENTRIES_KEY, entry_id)
            pipe.zscore(INDEX_KEY, entry_id)
            pipe.hgetall(RAW_KEY + entry_id)
            entry, at, raw = await pipe.execute()
        if entry is None:
            return None
        return _entry(entry_id, int(at or 0), entry, raw)

    async def drop(self, entry_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(ENTRIES_KEY, entry_id)
            pipe.zrem(INDEX_KEY, entry_id)
            pipe.delete(RAW_KEY + entry_id)
            removed, _, _ = await pipe.execute()
        return bool(removed)

    async def retry(self, entry_id: str) -> DeadLetter:
        """Put a dead-lettered job back in its persist set, to be written again (after a fix);
        the entry is dropped, and comes back if the job fails again."""
        entry = await self.get(entry_id)
        if entry is None:
            raise NotFound(f"dead letter '{entry_id}' not found")
        if entry.job_id is None:
            raise Conflict(f"dead letter '{entry_id}' is not a job's record: there is nothing to write")
        priority = entry.raw.get("priority") if entry.raw_kind == "hash" else None
        target = queues.persist_set(priority if priority in queues.PRIORITIES else queues.INTERACTIVE)
        is_hash = "1" if entry.raw_kind == "hash" else "0"
        done = int(await self._retry(args=[entry_id, target, now_ms(), self.job_ttl_s, is_hash]))
        if done == 0:
            raise NotFound(f"dead letter '{entry_id}' not found")
        if done < 0:
            raise Conflict(f"job '{entry.job_id}' has no state left to write: only the message was kept")
        return entry


def _entry(entry_id: str, at: int, entry: bytes | None, raw: dict[bytes, bytes]) -> DeadLetter:
    try:
        meta = orjson.loads(entry) if entry else {}
    except orjson.JSONDecodeError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    return DeadLetter(
        id=entry_id,
        job_id=meta.get("job_id"),
        where=str(meta.get("where", "")),
        reason=str(meta.get("reason", "")),
        at_ms=at,
        raw_kind=str(meta.get("raw_kind", "hash")),
        raw={k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()},
    )
