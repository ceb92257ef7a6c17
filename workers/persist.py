"""Writes finished jobs to the database in batches, off the job path.

A finished job is put in its priority's persist set (`jobs.queues.persist_set`) in the same
transaction that finishes it. A persister takes a batch under a lease (so two workers do not
write the same rows, and a crashed worker's batch comes back), upserts the rows in one
statement, then drops the jobs from the persist set and from their owner's live index.

Each worker writes the rows of the priorities it serves as they come, and those of the other
priorities only once they have waited `others_after_ms` (their own workers are gone or far
behind): building a few hundred rows' INSERT holds a worker's event loop for milliseconds,
which an interactive worker must not spend on a batch drain's rows.

No record stops the persister. Each job's state is read on its own; one that cannot be read,
or whose row the database refuses (`storage.clean.row_fault`: the batch is split until the
refused rows are alone, and every other row is written), is logged and set aside as a dead
letter (`jobs.deadletters`), and leaves the persist set like a written one. A database that
cannot be reached gives the whole batch back, to be written a second later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from jobs import queues, webhooks
from jobs.deadletters import DeadLetters
from jobs.records import JobRecord, now_ms
from jobs.scripts import TAKE_FOR_PERSIST
from jobs.tasks import supervise
from storage.clean import row_fault
from storage.db import Database
from switchyard.errors import RecordUnreadable
from switchyard.metrics import FinishedBatch

log = logging.getLogger("switchyard.persist")


class Persister:
    def __init__(
        self,
        redis: Redis,
        db: Database,
        *,
        sets: Sequence[str] = (queues.PERSIST_SET,),
        others: Sequence[str] = (),
        others_after_ms: int = 30_000,
        batch: int = 500,
        take_chunk: int = 32,
        linger_s: float = 0.1,
        sweep_s: float = 30.0,
        lease_ms: int = 60_000,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.redis = redis
        self.db = db
        self.dead_letters = dead_letters or DeadLetters(redis)
        # (persist set, how long its jobs must have waited): our own first
        self.sources = [(name, 0) for name in sets] + [(name, others_after_ms) for name in others]
        # with nothing of our own finishing, the others' rows are still looked at in time
        self.wait_s = min(sweep_s, others_after_ms / 1000) if others else sweep_s
        self.batch = batch
        self.take_chunk = take_chunk
        self.linger_s = linger_s
        self.lease_ms = lease_ms
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._take = redis.register_script(TAKE_FOR_PERSIST)
        self.rows_written = 0
        self.set_aside = 0

    def start(self) -> None:
        self._task = supervise("switchyard-persister", self._run)

    def notify(self) -> None:
        self._event.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the write in progress finish (one cut short by a cancel would leave its database
        connection to the garbage collector), then write whatever is left."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            self._stopping = True
            self._event.set()
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self.flush()
        except (RedisError, SQLAlchemyError, OSError) as exc:  # what is left is written by the next worker
            log.warning(
                "persisting finished jobs at shutdown failed (%s: %.200s)", exc.__class__.__name__, exc
            )
        except Exception:
            log.exception("persisting finished jobs at shutdown failed")

    async def _run(self) -> None:
        self._event.set()  # catch up with whatever an earlier run (or process) left behind
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.wait_s):
                    await self._event.wait()
            if not self._stopping:
                await asyncio.sleep(self.linger_s)  # let a burst of finishes gather into one write
            self._event.clear()
            try:
                await self.flush()
            except (RedisError, SQLAlchemyError, OSError) as exc:
                log.warning(
                    "persisting finished jobs failed (%s: %.200s); will retry", exc.__class__.__name__, exc
                )
                await asyncio.sleep(1.0)
                self._event.set()

    async def flush(self) -> int:
        """Write every finished job now ready; returns how many rows were written."""
        written = 0
        for name, min_age_ms in self.sources:
            written += await self._flush_set(name, min_age_ms)
        return written

    async def _flush_set(self, name: str, min_age_ms: int) -> int:
        written = 0
        while True:
            taken = await self._take_batch(name, min_age_ms)
            if not taken:
                return written
            rows: list[_Row] = []
            gone: list[bytes] = []  # expired from Redis before we got to it
            bad: list[_Bad] = []
            for job_id_b, flat in taken:
                if not flat:
                    gone.append(job_id_b)
                    continue
                state = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
                row = _row(job_id_b, state, bad)
                if row is not None:
                    rows.append(row)
            try:
                ok = await self._write(rows, bad)
            except Exception:
                # The lease is for a persister that dies; one whose write failed gives its batch
                # back, so its own retry a second later writes it (not the lease, a minute later).
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.zadd(name, {j: now_ms() - min_age_ms for j, _ in taken})
                raise
            done = [row.member for row in ok] + gone
            owners = [(row.record.owner, row.record.id) for row in ok]
            for item in bad:  # set aside, or left in the set (leased) when Redis would not take it
                if await self.dead_letters.add(item.where, item.reason, job_id=item.job_id, raw=item.state):
                    done.append(item.member)
                    if item.owner:
                        owners.append((item.owner, item.job_id))
                    self.set_aside += 1
            if done:
                # The metrics (switchyard.metrics) count the written jobs in the transaction
                # that takes them out of the persist set: each is counted once.
                counted = FinishedBatch()
                for row in ok:
                    r = row.record
                    counted.job(
                        kind=r.kind,
                        priority=r.priority,
                        status=r.status,
                        provider=r.provider,
                        created_ms=r.created_ms,
                        started_ms=r.started_ms,
                        finished_ms=r.finished_ms,
                        credits=r.credits_charged,
                    )
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(name, *done)
                    for owner, job_id in owners:
                        pipe.zrem(queues.OWNER_KEY + owner, job_id)
                    counted.queue(pipe)
                    for row in ok:  # in the same transaction: a finished job's webhook is never lost
                        _queue_webhook(pipe, row)
                    await pipe.execute()
            written += len(ok)
            self.rows_written += len(ok)
            if len(taken) < self.batch:
                return written

    async def _write(self, rows: list[_Row], bad: list[_Bad]) -> list[_Row]:
        """Write `rows`; the ones the database refuses are added to `bad`, the written ones
        returned. A batch refused for a row's content is split in two until the refused rows
        are alone (k bad rows among n cost about 2k·log2(n) writes); a database out of reach
        raises."""
        if not rows:
            return []
        try:
            await self.db.write_finished([r.job for r in rows], [r.usage for r in rows])
            return rows
        except Exception as exc:
            if not row_fault(exc):
                raise
            if len(rows) == 1:
                row = rows[0]
                bad.append(
                    _Bad(
                        row.member,
                        row.record.id,
                        row.state,
                        "persister:write",
                        _reason(exc),
                        row.record.owner,
                    )
                )
                return []
        half = len(rows) // 2
        return await self._write(rows[:half], bad) + await self._write(rows[half:], bad)

    async def _take_batch(self, name: str, min_age_ms: int) -> list[Any]:
        """Up to `batch` finished jobs for one database write, taken from Redis `take_chunk` at a
        time: a Lua script holds Redis for its whole run (about 11 µs a job), and a large take
        would hold every interactive call behind it for milliseconds."""
        taken: list[Any] = []
        while len(taken) < self.batch:
            want = min(self.take_chunk, self.batch - len(taken))
            chunk = await self._take(args=[name, now_ms() - min_age_ms, now_ms(), self.lease_ms, want])
            taken += chunk
            if len(chunk) < want:
                break
        return taken


@dataclass(slots=True)
class _Row:
    """A finished job read from its state, and its rows for the database."""

    member: bytes  # its entry in the persist set, as Redis holds it
    state: dict[bytes, bytes]
    record: JobRecord
    job: dict[str, Any]
    usage: dict[str, Any]


@dataclass(slots=True)
class _Bad:
    """A finished job the persister cannot write: set aside with its state as it was."""

    member: bytes
    job_id: str
    state: dict[bytes, bytes]
    where: str
    reason: str
    owner: str | None = None


def _row(member: bytes, state: dict[bytes, bytes], bad: list[_Bad]) -> _Row | None:
    """The job's rows, or None (and an entry in `bad`) when its state cannot be made into them."""
    job_id = member.decode("utf-8", "replace")
    owner = state.get(b"owner")
    owner_id = owner.decode("utf-8", "replace") if owner else None
    try:
        record = JobRecord.from_hash(state, job_id=job_id)
    except RecordUnreadable as exc:
        bad.append(_Bad(member, job_id, state, "persister:read", exc.reason, owner_id))
        return None
    try:
        return _Row(member, state, record, record.to_row(), record.usage_row())
    except Exception as exc:  # noqa: BLE001 (a value no row can hold, e.g. a date past year 9999)
        bad.append(_Bad(member, job_id, state, "persister:row", _reason(exc), owner_id))
        return None


def _queue_webhook(pipe: Any, row: _Row) -> None:
    """Add the finished job's `completed` delivery, when it asked for one (`jobs.webhooks`)."""
    hook = webhooks.read_webhook(row.state.get(webhooks.WEBHOOK_FIELD.encode()))
    if hook is None or not webhooks.wants(hook, "completed"):
        return
    r = row.record
    snapshot = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in row.state.items()}
    webhooks.add_delivery(
        pipe,
        subject="job",
        subject_id=r.id,
        event="completed",
        owner=r.owner,
        url=hook["url"],
        snapshot=snapshot,
        now_ms=now_ms(),
    )


def _reason(exc: BaseException) -> str:
    # a statement error's text ends with the whole statement and its parameters: the first line says it
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"[:500]
