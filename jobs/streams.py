"""Streamed jobs: the Redis stream a worker relays a provider's chunks into, and the web
process' reader of those streams.

A streamed job writes to `sy:stream:<job id>`, one entry per chunk (`d`: the chunk as JSON),
then one last entry: `end` (the usage chunk, as JSON) when the provider finished, or `err`
(`{message, type, code, status}`) when it died after chunks were sent. The job then finishes
as any other job does (its result, usage and credits settled by the finish script); a job
that fails before any chunk has no stream entries at all, only its failed record.

`StreamHub` is one per web process: every stream the process forwards is read by a single
blocking XREAD on a connection of its own (no polling, one connection however many streams).
A new stream joins the read at once: the hub also reads a control stream of its own, and
subscribing adds an entry there, which ends the current XREAD so the next one includes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from jobs.client import redis_call
from jobs.deadletters import DeadLetters
from jobs.records import JobRecord
from jobs.tasks import supervise
from switchyard import redis_client

log = logging.getLogger(__name__)

STREAM_KEY = "sy:stream:"
CONTROL_KEY = "sy:stream-ctl:"
STREAM_MAXLEN = 2000  # entries kept (approximately): far more than a reader ever lags behind
STREAM_END_TTL_S = 60  # how long a finished stream stays for a reader still catching up
CHUNK, END, ERROR = b"d", b"end", b"err"


def stream_key(job_id: str) -> str:
    return STREAM_KEY + job_id


def _id_tuple(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class Entry:
    """One stream entry: `kind` is CHUNK, END or ERROR, `data` its JSON bytes."""

    kind: bytes
    data: bytes


@dataclass(slots=True)
class Finished:
    """The job finished (its record); entries it wrote before that were delivered first."""

    record: JobRecord | None


@dataclass(eq=False)
class Subscription:
    job_id: str
    key: bytes
    last_id: bytes = b"0-0"
    _items: deque[Entry | Finished] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _finished: Finished | None = None

    def deliver(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        last = _id_tuple(self.last_id)
        for entry_id, fields in entries:
            if _id_tuple(entry_id) <= last:  # already delivered (a catch-up read and the hub overlap)
                continue
            last = _id_tuple(entry_id)
            self.last_id = entry_id
            for kind, data in fields.items():
                self._items.append(Entry(kind, data))
        self._ready.set()

    def fail(self, message: str) -> None:
        """The stream cannot be read: its reader gets an error entry after what it has."""
        body = {"message": message, "type": "record_unreadable", "code": "record_unreadable", "status": 500}
        self._items.append(Entry(ERROR, orjson.dumps(body)))
        self._ready.set()

    def finish(self, record: JobRecord | None) -> None:
        """The job is over: entries still unread are fetched (`next`) before this is seen."""
        self._finished = Finished(record)
        self._ready.set()

    def pop_ready(self) -> Entry | None:
        """An entry already delivered, without waiting."""
        if self._items:
            item = self._items.popleft()
            if isinstance(item, Entry):
                return item
            self._items.appendleft(item)
        return None

    async def next(self, redis: Redis) -> Entry | Finished:
        while True:
            if self._items:
                return self._items.popleft()
            if self._finished is not None:
                # The completion notice and the stream arrive on different connections: read
                # what the worker wrote before it finished the job, then report the end.
                self.deliver(await _read_rest(redis, self.key, self.last_id))
                if self._items:
                    continue
                return self._finished
            self._ready.clear()
            await self._ready.wait()


async def _read_rest(redis: Redis, key: bytes, after: bytes) -> list[tuple[bytes, dict[bytes, bytes]]]:
    ms, seq = _id_tuple(after)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(key, min=f"{ms}-{seq + 1}")
    return entries


class StreamHub:
    def __init__(
        self,
        redis: Redis,
        *,
        block_ms: int = 10_000,
        count: int = 512,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.redis = redis  # the shared pool: control entries and catch-up reads
        self.dead_letters = dead_letters or DeadLetters(redis)
        # the read blocks for up to `block_ms` by design: no socket timeout on its connection
        self._reader = redis_client.dedicated(redis, max_connections=1, socket_timeout=None)
        self.block_ms = block_ms
        self.count = count
        self.control = (CONTROL_KEY + uuid.uuid4().hex).encode()
        self._control_id: bytes | None = None
        self._subs: dict[bytes, Subscription] = {}
        self._wanted = asyncio.Event()
        self._reading = False  # in (or about to enter) an XREAD that may not include a new key
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def subscribed(self) -> int:
        """How many streamed jobs this process follows for its callers."""
        return len(self._subs)

    async def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(job_id, stream_key(job_id).encode())
        async with self._lock:
            if self._control_id is None:  # first use: where this process' control stream starts
                self._control_id = await redis_call(self._wake)
            if self._task is None or self._task.done():
                self._task = supervise("switchyard-stream-hub", self._run)
        self._subs[sub.key] = sub
        if self._reading:
            await redis_call(self._wake)
        else:
            self._wanted.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.key) is sub:
            del self._subs[sub.key]

    async def _wake(self) -> bytes:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.control, {b"w": b""}, maxlen=16, approximate=True)
            pipe.expire(self.control, 3600)
            entry_id, _ = await pipe.execute()
        return entry_id  # type: ignore[no-any-return]

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._subs:
                self._reading = False
                self._wanted.clear()
                await self._wanted.wait()
                continue
            # Set before the key list is taken: a subscriber from now on wakes this read.
            self._reading = True
            assert self._control_id is not None
            streams: dict[bytes, bytes] = {key: sub.last_id for key, sub in self._subs.items()}
            streams[self.control] = self._control_id
            try:
                reply = await self._reader.xread(streams, count=self.count, block=self.block_ms)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:  # Redis refused the read: a key that is not a stream?
                if await self._set_aside_unreadable(streams, exc):
                    continue
                log.warning("stream read failed (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except (RedisError, OSError) as exc:
                log.warning("stream read failed (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            for key, entries in reply or ():
                if key == self.control:
                    self._control_id = entries[-1][0]
                    continue
                sub = self._subs.get(key)
                if sub is None:
                    continue
                try:
                    sub.deliver(entries)
                except Exception as exc:  # noqa: BLE001 (one job's stream, not every job's)
                    self._give_up(sub, f"its stream cannot be read: {exc.__class__.__name__}: {exc}")

    async def _set_aside_unreadable(self, streams: dict[bytes, bytes], exc: ResponseError) -> bool:
        """After a refused read: end the subscriptions whose key is not a stream (which fails
        every read that names it); True when there was one."""
        keys = [key for key in streams if key != self.control]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.type(key)
                types = await pipe.execute()
        except (RedisError, OSError):
            return False
        bad = [(key, kind) for key, kind in zip(keys, types, strict=True) if kind not in (b"stream", b"none")]
        for key, kind in bad:
            sub = self._subs.get(key)
            if sub is not None:
                self._give_up(
                    sub, f"{key.decode('utf-8', 'replace')} holds a {kind.decode()}, not a stream ({exc})"
                )
        return bool(bad)

    def _give_up(self, sub: Subscription, reason: str) -> None:
        log.error("stream of job %s set aside: %s", sub.job_id, reason)
        self.unsubscribe(sub)
        sub.fail(f"the stream of job {sub.job_id} cannot be read")
        self.dead_letters.add_soon("stream-hub", reason, job_id=sub.job_id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.dead_letters.drain()
        await self._reader.aclose()  # and its pool (`dedicated` made it the client's own)
