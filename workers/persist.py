"""Writes finished jobs to the database in batches, off the job path.

A finished job is put in its priority's persist set (`jobs.queues.persist_set`) in the same
transaction that finishes it. A persister takes a batch under a lease (so two workers do not
write the same rows, and a crashed worker's batch comes back), upserts the rows in one
statement, then drops the jobs from the persist set and from their owner's live index.

Each worker writes the rows of the priorities it serves as they come, and those of the other
priorities only once they have waited `others_after_ms` (their own workers are gone or far
behind): building a few hundred rows' INSERT holds a worker's event loop for milliseconds,
which an interactive worker must not spend on a batch drain's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from jobs import queues
from jobs.records import JobRecord, now_ms
from jobs.scripts import TAKE_FOR_PERSIST
from storage.db import Database

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
    ) -> None:
        self.redis = redis
        self.db = db
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

    def start(self) -> None:
        self._event.set()  # catch up with whatever an earlier run left behind
        self._task = asyncio.create_task(self._run(), name="switchyard-persister")

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
        with contextlib.suppress(RedisError, SQLAlchemyError, OSError):
            await self.flush()

    async def _run(self) -> None:
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
            records = []
            gone = []
            for job_id_b, flat in taken:
                if not flat:
                    gone.append(job_id_b.decode())  # expired from Redis before we got to it
                    continue
                state = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
                records.append(JobRecord.from_hash(state))
            try:
                await self.db.write_finished([r.to_row() for r in records], [r.usage_row() for r in records])
            except (SQLAlchemyError, OSError):
                # The lease is for a persister that dies; one whose write failed gives its batch
                # back, so its own retry a second later writes it (not the lease, a minute later).
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.zadd(name, {j.decode(): now_ms() - min_age_ms for j, _ in taken})
                raise
            async with self.redis.pipeline(transaction=False) as pipe:
                ids = [r.id for r in records] + gone
                pipe.zrem(name, *ids)
                for r in records:
                    pipe.zrem(queues.OWNER_KEY + r.owner, r.id)
                await pipe.execute()
            written += len(records)
            self.rows_written += len(records)
            if len(taken) < self.batch:
                return written

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
