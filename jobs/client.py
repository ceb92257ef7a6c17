"""The job client: enqueue, wait (notified, never polled), get, list and cancel.

One per web process. Every enqueue is one Redis round trip; a synchronous caller's future is
resolved by this process's single pub/sub subscription when the worker publishes the outcome.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import and_, or_, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from jobs import pubsub, queues, scripts
from jobs.batching import ScriptBatcher
from jobs.deadletters import DeadLetters
from jobs.records import FAILED, QUEUED, STATUSES, TERMINAL, JobRecord, ms_to_datetime, now_ms
from jobs.tasks import supervise
from storage.bounds import bounded, bounded_call
from storage.db import Database
from storage.models import Job
from switchyard.errors import (
    DependencyTimeout,
    InvalidRequest,
    JobNotFound,
    RecordUnreadable,
    ServiceUnavailable,
)
from switchyard.logs import REQUEST_ID, REQUEST_ID_FIELD

log = logging.getLogger("switchyard.jobs")


def job_body(kind: str, job_id: str, payload: dict[str, Any], enqueue_ms: int) -> bytes:
    """ARQ's job body (`arq.jobs.serialize_job`'s dict), serialized as JSON instead of pickle.

    The edge bounds what a payload holds (`api.validation.check_bounds`); a payload JSON still
    cannot carry is the caller's 400, never a 500."""
    try:
        return orjson.dumps({"t": None, "f": kind, "a": [job_id, payload], "k": {}, "et": enqueue_ms})
    except TypeError as exc:  # orjson.JSONEncodeError: an integer beyond 64 bits, too deep, ...
        raise InvalidRequest.field("body", f"cannot be forwarded as JSON: {exc}") from None


_sequence = itertools.count()


def new_job_id(created_ms: int) -> str:
    """32 hex digits that sort as the jobs were created: the millisecond, a per-process sequence
    (jobs of one millisecond keep their order), then randomness (unique across processes)."""
    return f"{created_ms:011x}{next(_sequence) & 0xFFFFF:05x}{secrets.token_hex(8)}"


def new_job_ids(created_ms: int, n: int) -> list[str]:
    """`n` ids of one millisecond as `new_job_id` makes them, from one read of randomness (a
    Batch API chunk's jobs)."""
    noise = secrets.token_hex(8 * n)
    return [
        f"{created_ms:011x}{next(_sequence) & 0xFFFFF:05x}{noise[16 * i : 16 * i + 16]}" for i in range(n)
    ]


async def redis_call(fn: Callable[[], Any]) -> Any:
    """Run one Redis call (its reply is as untyped as Redis'); Redis out of reach is the
    domain's 503, never a 500, and so is a Redis that does not answer within the process'
    bound (`storage.bounds`: an `asyncio.timeout` here costs ~8 us a call where the client's
    `socket_timeout` costs ~22 us a command)."""
    try:
        async with bounded("queue (Redis)"):
            result = fn()
            return await result if inspect.isawaitable(result) else result
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise ServiceUnavailable(
            f"queue unavailable: Redis cannot be reached ({exc.__class__.__name__})"
        ) from exc


@dataclass(frozen=True, slots=True)
class Once:
    """An idempotency key of a submission: its Redis key (scoped to the API key), the request's
    fingerprint and how long the key holds (`scripts.SUBMIT`)."""

    key: str
    fingerprint: str
    ttl_ms: int


IDEMPOTENCY_KEY = "sy:idem:"


class JobClient:
    def __init__(
        self,
        redis: Redis,
        db: Database,
        *,
        result_ttl_s: int = 3600,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.redis = redis
        self.db = db
        self.result_ttl_s = result_ttl_s
        self.dead_letters = dead_letters or DeadLetters(redis, job_ttl_s=result_ttl_s)
        self.done_channel = queues.DONE_CHANNEL_PREFIX + uuid.uuid4().hex
        self._waiters: dict[str, asyncio.Future[JobRecord | None]] = {}
        # replays of idempotent calls waiting for a job another request submitted (`follow`)
        self._followers: dict[str, set[asyncio.Future[JobRecord | None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._cancel_script = redis.register_script(scripts.CANCEL)
        self._submit = ScriptBatcher(redis, scripts.SUBMIT)
        self._follow_script = redis.register_script(scripts.FOLLOW)

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._listener = supervise("switchyard-done-listener", self._listen)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._subscribed.wait()

    async def close(self) -> None:
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        for fut in self._waiters.values():
            fut.cancel()
        for followers in self._followers.values():
            for fut in followers:
                fut.cancel()
        await self.dead_letters.drain()

    async def _listen(self) -> None:
        """Resolve waiters from the done channel; on reconnect, catch up on what was missed."""
        await pubsub.listen(
            self.redis,
            [self.done_channel],
            self._on_done,
            what="done-channel",
            on_subscribed=self._on_subscribed,
            on_lost=self._subscribed.clear,
        )

    async def _on_subscribed(self) -> None:
        self._subscribed.set()
        await self._catch_up()

    def _on_done(self, _channel: bytes, data: bytes) -> None:
        try:
            record = JobRecord.from_hash(orjson.loads(data))
        except orjson.JSONDecodeError as exc:
            self._unreadable(RecordUnreadable(None, f"the completion message is not JSON ({exc})"), data)
            return
        except RecordUnreadable as exc:
            self._unreadable(exc, data)
            return
        fut = self._waiters.get(record.id)
        if fut is not None and not fut.done():
            fut.set_result(record)
        if self._followers:
            for follower in self._followers.get(record.id, ()):
                if not follower.done():
                    follower.set_result(record)

    def _unreadable(self, exc: RecordUnreadable, message: bytes | None = None) -> None:
        """A finished job whose record cannot be read: its waiting caller (if it is one of
        ours) gets the error now, naming the job, and the record is set aside."""
        where = "done-listener" if message is not None else "done-listener:catch-up"
        fut = self._waiters.get(exc.job_id) if exc.job_id is not None else None
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        for follower in self._followers.get(exc.job_id or "", ()):
            if not follower.done():
                follower.set_exception(exc)
        self.dead_letters.add_soon(where, exc.reason, job_id=exc.job_id, message=message)

    async def _catch_up(self) -> None:
        if not self._waiters and not self._followers:
            return
        ids = list(self._waiters.keys() | self._followers.keys())
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(queues.STATE_KEY + job_id)
            states = await pipe.execute()
        for job_id, state in zip(ids, states, strict=True):
            if not state:
                continue
            try:
                record = JobRecord.from_hash(state, job_id=job_id)
            except RecordUnreadable as exc:
                if state.get(b"status") in _TERMINAL_BYTES:
                    self._unreadable(exc)
                continue
            if not record.done:
                continue
            for fut in (self._waiters.get(job_id), *self._followers.get(job_id, ())):
                if fut is not None and not fut.done():
                    fut.set_result(record)

    @property
    def waiting(self) -> int:
        """How many synchronous callers of this process wait for their job."""
        return len(self._waiters) + sum(len(f) for f in self._followers.values())

    # --- submit ------------------------------------------------------------------------------
    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        priority: str,
        owner: str,
        dialect: str,
        model: str | None = None,
        credits_charged: int = 0,
        notify: bool = False,
        admission: list[Any] | None = None,
        lane: str = queues.DEFAULT_LANE,
        extra: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        once: Once | None = None,
    ) -> tuple[JobRecord | None, list[Any]]:
        """Admit (when `admission` holds `admit`'s nine arguments) and put the job durably on its
        queue, waking its workers: one round trip (a Lua script).

        `lane` picks the workers that run it (`jobs.queues.LANES`): media jobs have their own.
        `extra`: more fields of the job's state (a batch line's `batch` and `custom_id`).
        Returns the queued job and admission's verdict (`[b"ok", ...]`); when admission refuses,
        no job (None) and the refusal as `jobs.accounting.ADMIT` words it. With `once` (an
        idempotency key) that an earlier job holds: no job and `[b"replay", job_id, fingerprint]`.
        """
        if priority not in queues.PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}")
        created = now_ms()
        record = JobRecord(
            id=new_job_id(created),
            kind=kind,
            dialect=dialect,
            priority=priority,
            owner=owner,
            status=QUEUED,
            created_ms=created,
            model=model,
            credits_charged=credits_charged,
            metadata=metadata or None,
        )
        queue = queues.queue_for(priority, lane)
        state = record.to_hash()
        request_id = REQUEST_ID.get()
        if request_id is not None:  # the web's request log names it; the worker and provider get it
            state[REQUEST_ID_FIELD] = request_id
        if lane != queues.DEFAULT_LANE:
            state["queue"] = queue  # where a cancel finds it; the default lane's is its priority
        if extra:
            state.update(extra)
        if notify:
            state["notify"] = self.done_channel
        argv = scripts.submit_args(
            record.id,
            queue=queues.queue_name(queue),
            wake_channel=queues.wake_channel(queue),
            owner=owner,
            created_ms=created,
            ttl_ms=queues.ARQ_JOB_TTL_MS,
            last_used_key=queues.LAST_USED_KEY,
            admission=admission,
            state=state,
            once=(once.key, once.fingerprint, once.ttl_ms) if once is not None else None,
            job_body=job_body(kind, record.id, payload, created),
        )
        if notify:  # registered last: nothing above may leave it behind
            self._waiters[record.id] = asyncio.get_running_loop().create_future()
        try:
            verdict = await redis_call(lambda: self._submit(argv))
        except DependencyTimeout as exc:
            # The submission may still reach Redis after the bound: name the job, so a caller
            # can look for it instead of submitting the work twice.
            self._waiters.pop(record.id, None)
            exc.message += f"; job {record.id} may have been accepted: GET /api/v1/jobs/{record.id}"
            exc.headers = {**exc.headers, "x-job-id": record.id}
            raise
        except BaseException:
            self._waiters.pop(record.id, None)
            raise
        if verdict[0] != b"ok":
            self._waiters.pop(record.id, None)
            if verdict[0] == b"replay":
                job_id, _, fingerprint = verdict[1].decode("utf-8", "replace").partition(" ")
                return None, [b"replay", job_id, fingerprint]
            return None, verdict
        if len(verdict) > 1:  # what admission left: part of the job's record from now on
            hourly, daily, tokens, balance = verdict[1:5]
            record.limits_remaining = {
                "hourly": int(hourly),
                "daily_requests": int(daily),
                "daily_tokens": int(tokens),
            }
            if int(admission[2]) > 0:  # type: ignore[index]
                record.balance = int(balance)
        return record, verdict

    async def wait(
        self, record: JobRecord, timeout: float, *, following: asyncio.Future[JobRecord | None] | None = None
    ) -> JobRecord | None:
        """The finished job, or None when `timeout` passes first (the job goes on).
        `following`: the future `follow` gave for a job another request submitted."""
        fut = following or self._waiters.get(record.id)
        if fut is None:
            raise ValueError("wait() needs a job enqueued with notify=True by this client")
        # A timer that resolves the waiter with None is cheaper than wait_for + shield.
        timer = asyncio.get_running_loop().call_later(timeout, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()
            if following is None:
                self._waiters.pop(record.id, None)
            else:
                self.unfollow(record.id, following)

    async def follow(
        self, job_id: str, owner: str, *, notify: bool
    ) -> tuple[JobRecord, asyncio.Future[JobRecord | None] | None]:
        """A job another request submitted (the original of an idempotent call's replay), and,
        when `notify` and it is not over, the future its end resolves (for `wait(following=)`,
        or `unfollow` it). Raises JobNotFound when neither Redis nor the database holds it."""
        if not notify:
            return await self.get(job_id, owner), None
        fut: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._followers.setdefault(job_id, set()).add(fut)  # before the job can finish
        try:
            flat = await redis_call(lambda: self._follow_script(args=[job_id, self.done_channel]))
            if flat:
                state = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
                record = JobRecord.from_hash(state, job_id=job_id)
                if record.owner != owner:
                    raise JobNotFound(job_id)
            else:
                record = await self.get(job_id, owner)
        except BaseException:
            self.unfollow(job_id, fut)
            raise
        if record.done:
            self.unfollow(job_id, fut)
            return record, None
        return record, fut

    def unfollow(self, job_id: str, fut: asyncio.Future[JobRecord | None]) -> None:
        followers = self._followers.get(job_id)
        if followers is not None:
            followers.discard(fut)
            if not followers:
                del self._followers[job_id]
        if not fut.done():
            fut.cancel()

    def outcome(self, job_id: str) -> asyncio.Future[JobRecord | None]:
        """The future the finished job resolves (a job enqueued with notify=True by this
        client), for a caller that waits in its own way; `release` it when done."""
        fut = self._waiters.get(job_id)
        if fut is None:
            raise ValueError("outcome() needs a job enqueued with notify=True by this client")
        return fut

    def release(self, job_id: str) -> None:
        fut = self._waiters.pop(job_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    # --- read --------------------------------------------------------------------------------
    async def get(self, job_id: str, owner: str | frozenset[str] | None) -> JobRecord:
        """The job if `owner` owns it: one key, any of several (a user's keys), or None (anyone's:
        the dashboard's admin); another's job is not found, as a missing one."""
        state = await redis_call(lambda: self.redis.hgetall(queues.STATE_KEY + job_id))
        record = JobRecord.from_hash(state, job_id=job_id) if state else await self._get_from_db(job_id)
        if record is None or not _owned(record, owner):
            raise JobNotFound(job_id)
        return record

    @bounded_call("database")
    async def _get_from_db(self, job_id: str) -> JobRecord | None:
        try:
            async with self.db.session() as session:
                row = await session.get(Job, job_id)
        except (SQLAlchemyError, OSError) as exc:
            raise ServiceUnavailable("database unavailable") from exc
        return JobRecord.from_row(row) if row else None

    async def list(
        self,
        owner: str,
        *,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
        metadata: dict[str, str] | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """The owner's jobs, newest first. Live jobs come from Redis, finished ones from the database.
        `metadata`: only jobs whose metadata holds every one of these pairs."""
        if status is not None and status not in STATUSES:
            raise InvalidRequest.field("status", f"must be one of {', '.join(STATUSES)}", status)
        before = _decode_cursor(cursor) if cursor else None
        live = await self._live_page(owner, status, before, limit + 1, metadata)
        query = select(Job).where(Job.owner_key_id == owner)
        if status:
            query = query.where(Job.status == status)
        for i, (name, value) in enumerate((metadata or {}).items()):
            query = query.where(self._metadata_holds(i, name, value))
        if before is not None:
            at = ms_to_datetime(before[0])
            assert at is not None
            query = query.where(
                or_(col(Job.created_at) < at, and_(col(Job.created_at) == at, col(Job.id) < before[1]))
            )
        query = query.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit + 1)
        rows = await self._finished_rows(query)
        merged = {record.id: record for record in _readable(JobRecord.from_row, rows)}
        merged.update(live)  # Redis is fresher while a job is live
        records = [
            r
            for r in merged.values()
            if (status is None or r.status == status)
            and (before is None or (r.created_ms, r.id) < before)
            and _has_metadata(r, metadata)
        ]
        records.sort(key=lambda r: (r.created_ms, r.id), reverse=True)
        page = records[:limit]
        next_cursor = encode_cursor(page[-1]) if len(records) > limit and page else None
        return page, next_cursor

    async def recent_failures(self, limit: int = 20) -> Sequence[JobRecord]:
        """The last `limit` jobs that failed, newest first, of every owner (for the admin): those
        the persister has written (a failure reaches the database within its batching delay)."""
        query = (
            select(Job)
            .where(Job.status == FAILED)
            .order_by(col(Job.finished_at).desc(), col(Job.id).desc())
            .limit(limit)
        )
        return _readable(JobRecord.from_row, await self._finished_rows(query))

    def _metadata_holds(self, i: int, name: str, value: str) -> Any:
        """The database's test that a job's metadata maps `name` to `value`. SQLite's JSON paths
        cannot name a key holding a double quote, so there the pairs are read with json_each."""
        if not self.db.is_sqlite:
            return col(Job.job_metadata)[name].as_string() == value  # metadata ->> :name
        return text(
            f"EXISTS (SELECT 1 FROM json_each(jobs.metadata) AS m WHERE m.key = :mk{i} AND m.value = :mv{i})"
        ).bindparams(**{f"mk{i}": name, f"mv{i}": value})

    @bounded_call("database")
    async def _finished_rows(self, query: Any) -> Sequence[Job]:
        try:
            async with self.db.session() as session:
                return (await session.exec(query)).all()
        except (SQLAlchemyError, OSError) as exc:
            raise ServiceUnavailable("database unavailable") from exc

    async def _live_page(
        self,
        owner: str,
        status: str | None,
        before: tuple[int, str] | None,
        want: int,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, JobRecord]:
        """Up to `want` of the owner's live jobs, newest first, that match `status` and come after
        the cursor. The live index is read in chunks until enough match: newer live jobs of
        another status, or the cursor's own job, must not use up the page."""
        index = queues.OWNER_KEY + owner
        max_score: str | int = "+inf" if before is None else before[0]
        chunk = max(want, 200)
        live: dict[str, JobRecord] = {}
        offset = 0
        while len(live) < want:
            ids = await redis_call(
                partial(self.redis.zrevrangebyscore, index, max_score, "-inf", start=offset, num=chunk)
            )
            if not ids:
                break
            offset += len(ids)
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(queues.STATE_KEY + job_id.decode())
                states = await redis_call(pipe.execute)
            for job_id, state in zip(ids, states, strict=True):
                if not state:
                    continue
                try:
                    rec = JobRecord.from_hash(state, job_id=job_id.decode("utf-8", "replace"))
                except RecordUnreadable as exc:  # the persister sets it aside; the page goes on
                    log.warning("job %s left out of a listing: %s", exc.job_id, exc.reason)
                    continue
                after_cursor = before is None or (rec.created_ms, rec.id) < before
                if after_cursor and (status is None or rec.status == status) and _has_metadata(rec, metadata):
                    live[rec.id] = rec
                    if len(live) >= want:
                        break
            if len(ids) < chunk:
                break
        return live

    # --- cancel ------------------------------------------------------------------------------
    async def cancel(self, job_id: str, owner: str | frozenset[str] | None) -> JobRecord:
        record = await self.get(job_id, owner)
        if record.status in TERMINAL:
            return record
        # A job canceled before it ran goes to the interactive persist set whatever its
        # priority: rare, and written at once even when no batch worker runs.
        await redis_call(
            lambda: self._cancel_script(args=[job_id, now_ms(), queues.PERSIST_SET, queues.CANCEL_CHANNEL])
        )
        return await self.get(job_id, owner)


def _owned(record: JobRecord, owner: str | frozenset[str] | None) -> bool:
    if owner is None:
        return True
    return record.owner == owner if isinstance(owner, str) else record.owner in owner


_TERMINAL_BYTES = frozenset(s.encode() for s in TERMINAL)


def _readable(read: Callable[[Any], JobRecord], rows: Any) -> list[JobRecord]:
    records = []
    for row in rows:
        try:
            records.append(read(row))
        except RecordUnreadable as exc:  # one bad row costs a listing that row, not the listing
            log.warning("job %s left out of a listing: %s", exc.job_id, exc.reason)
    return records


def _has_metadata(record: JobRecord, wanted: dict[str, str] | None) -> bool:
    if not wanted:
        return True
    held = record.metadata or {}
    return all(held.get(name) == value for name, value in wanted.items())


def _expire(fut: asyncio.Future[JobRecord | None]) -> None:
    if not fut.done():
        fut.set_result(None)


def encode_cursor(record: JobRecord) -> str:
    return base64.urlsafe_b64encode(f"{record.created_ms}:{record.id}".encode()).decode().rstrip("=")


# A cursor's millisecond: from the epoch to the year 9999 (what a datetime can hold).
_MAX_CURSOR_MS = 253_402_300_799_999
_CURSOR_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms, job_id = raw.split(":", 1)
        if not (ms.isascii() and ms.isdigit() and len(ms) <= 15 and int(ms) <= _MAX_CURSOR_MS):
            raise ValueError("not a millisecond")
        if not _CURSOR_ID.fullmatch(job_id):
            raise ValueError("not a job id")
        return int(ms), job_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest.field("cursor", "not a cursor this API returned", cursor[:100]) from None
