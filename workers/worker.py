"""`SwitchyardWorker`: ARQ's worker with a wake-up signal, a one-round-trip claim and job state.

What changes from ARQ's own loop, and why:
- Idle workers sleep on a pub/sub wake-up (`sy:wake`) instead of polling every `poll_delay`:
  a job starts within a millisecond of its enqueue and an idle worker sends almost no commands.
- One Lua script claims a batch of jobs across queues in priority order (interactive before
  batch), sets ARQ's in-progress keys as short leases and returns the job bodies, instead of
  ARQ's four round trips per job. Leases are renewed while jobs run, so a killed worker's
  jobs come back within one lease.
- Finishing a job is one MULTI/EXEC: ARQ's cleanup, the job's state and result, the hand-off
  to the database persister and the notification of a waiting caller.
Job bodies, queue sorted sets, retries (`arq.Retry`), timeouts and aborts keep ARQ's meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson
from arq import Retry
from arq.connections import ArqRedis
from arq.jobs import deserialize_job_raw
from arq.worker import Function, RetryJob, Worker
from redis.exceptions import RedisError

from jobs import pubsub, queues, webhooks
from jobs.accounting import REFUNDABLE_ERRORS
from jobs.batching import ScriptBatcher
from jobs.records import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, now_ms
from jobs.scripts import CLAIM, FINISH, FINISH_BATCH, finish_args
from jobs.tasks import supervise
from switchyard import metrics, redis_client
from switchyard.errors import JobTimedOut, SwitchyardError
from switchyard.logs import JOBS, REQUEST_ID, REQUEST_ID_FIELD
from switchyard.logs import jobs as job_lines
from workers.persist import Persister

log = logging.getLogger("switchyard.worker")

IDLE_SWEEP_S = 5.0  # an idle worker still looks at its queues this often (deferred or orphaned jobs)
BLOCKED_WAIT_MIN_S, BLOCKED_WAIT_MAX_S = 0.01, 0.2  # a batch worker held back by interactive work
CONNECT_TRIES = 5  # at start, a second apart (ARQ's own `create_pool` default)
MAX_DELIBERATE_RETRIES = 100  # a backstop: handlers bound their own retries well below this


@dataclass(frozen=True, slots=True)
class Run:
    """One claim of a job: what the claim returned, kept with the task that runs it."""

    job_id: str
    queue: str
    state: dict[str, Any]
    job_try: int
    claimed_at: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def key(self) -> str:
        return f"{self.job_id}#{self.job_try}"


class SwitchyardWorker(Worker):
    def __init__(
        self,
        *args: Any,
        serves: tuple[str, ...] = (queues.INTERACTIVE,),
        lease_s: float = 15.0,
        result_ttl_s: int = 3600,
        idle_sweep_s: float = IDLE_SWEEP_S,
        persist_others_after_s: float = 30.0,
        redis_url: str | None = None,
        redis_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("queue_name", queues.queue_name(serves[0]))
        kwargs.setdefault("allow_abort_jobs", True)
        kwargs.setdefault("keep_result", 0)
        kwargs.setdefault("poll_delay", idle_sweep_s)
        kwargs.setdefault("health_check_interval", 60)
        kwargs.setdefault("job_serializer", orjson.dumps)
        kwargs.setdefault("job_deserializer", orjson.loads)
        kwargs.setdefault("log_results", False)
        super().__init__(*args, **kwargs)
        self.redis_url = redis_url
        self.redis_options = redis_options or {}
        self.serves = serves
        self.lease_ms = int(lease_s * 1000)
        self.result_ttl_s = result_ttl_s
        self.idle_sweep_s = idle_sweep_s
        # Every queue of the lane down to the lowest one served, highest priority first; the
        # unserved ones above a served queue hold it back while they have jobs waiting.
        lane = queues.lane_of(serves[0])
        if any(q not in lane for q in serves):
            raise ValueError(f"a worker serves the queues of one lane; {', '.join(serves)} are not")
        lowest = max(lane.index(s) for s in serves)
        self._claim_order = [(queues.queue_name(q), q in serves) for q in lane[: lowest + 1]]
        # Where a finished job of each queue waits for the database, and the persist sets
        # this worker writes first (its own priorities') and only when they lag (the others).
        self._persist_sets = {queues.queue_name(q): queues.persist_set(queues.priority_of(q)) for q in lane}
        own = {queues.persist_set(queues.priority_of(q)) for q in serves}
        self._persist_own = sorted(own)
        self._persist_others = sorted({queues.persist_set(p) for p in queues.PRIORITIES} - own)
        self._persist_others_after_ms = int(persist_others_after_s * 1000)
        self._wake = asyncio.Event()
        self._full = False
        # A worker of batch priority only claims again when a quarter of its slots are free,
        # not on every finished job: one claim script per few jobs instead of one per job keeps
        # Redis (shared with the interactive path) free during a drain. Interactive workers
        # claim as soon as a slot frees.
        interactive = any(queues.priority_of(q) == queues.INTERACTIVE for q in serves)
        self._claim_min = 1 if interactive else max(1, self.max_jobs // 4)
        # Jobs whose handler is running (abortable), by job id. Everything else about a run
        # travels with it (`Run`): a retried job can be claimed again while the task of its
        # previous run is still finishing.
        self._in_handler: dict[str, asyncio.Task[Any]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._leases: asyncio.Task[None] | None = None
        self.persister: Persister | None = None
        self._claim_script: Any = None
        self._finisher: Any = None
        self._batch_finisher: Any = None  # FINISH for the lines of a Batch API batch
        self._cancel_channel = queues.CANCEL_CHANNEL.encode()
        self._persist_channel = queues.PERSIST_CHANNEL.encode()
        self._worker_id = ""
        self._started_ms = 0

    # --- main loop ---------------------------------------------------------------------------
    async def main(self) -> None:
        if self._pool is None:
            self._pool = await self._connect()
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        if "db" in self.ctx:
            self.persister = Persister(
                self.pool,
                self.ctx["db"],
                sets=self._persist_own,
                others=self._persist_others,
                others_after_ms=self._persist_others_after_ms,
                dead_letters=self.ctx.get("dead_letters"),
            )
            self.persister.start()
        # Script objects reload themselves after a Redis restart (NOSCRIPT).
        self._claim_script = self.pool.register_script(CLAIM)
        self._finisher = ScriptBatcher(self.pool, FINISH)
        self._batch_finisher = ScriptBatcher(self.pool, FINISH_BATCH)
        self._listener = supervise("switchyard-wakeups", self._listen_for_wakeups)
        self._leases = supervise("switchyard-leases", self._renew_leases)
        log.info("worker serving %s, up to %d jobs at once", ",".join(self.serves), self.max_jobs)
        try:
            await self._loop()
        finally:
            for task in (self._listener, self._leases):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _connect(self) -> ArqRedis:
        """ARQ's pool, made by `switchyard.redis_client` (a plain or a Sentinel URL), once Redis
        answers: tried `CONNECT_TRIES` times a second apart, as ARQ's `create_pool` does."""
        if self.redis_url is None:
            from arq.connections import create_pool

            return await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        for attempt in range(1, CONNECT_TRIES + 1):
            pool = redis_client.connect(self.redis_url, redis_class=ArqRedis, **self.redis_options)
            pool.job_serializer = self.job_serializer
            pool.job_deserializer = self.job_deserializer
            pool.default_queue_name = self.queue_name
            pool.expires_extra_ms = self.expires_extra_ms
            try:
                await pool.ping()
                return pool
            except (RedisError, OSError) as exc:
                await pool.aclose()
                if attempt == CONNECT_TRIES:
                    raise
                log.warning("Redis does not answer (%s); trying again in 1 s", exc)
                await asyncio.sleep(1)
        raise AssertionError("unreachable")

    async def _loop(self) -> None:
        blocked_wait = BLOCKED_WAIT_MIN_S
        while True:
            self._wake.clear()
            claimed, next_ms, blocked = 0, None, False
            asked = self.max_jobs - self.job_counter
            # With jobs known to be waiting, a batch worker claims once enough slots are free.
            if self.allow_pick_jobs and asked > 0 and not (self._full and asked < self._claim_min):
                # Until the claim says otherwise, assume ready jobs are left over, so that a
                # slot freeing meanwhile wakes the loop (no wake-up is published for old work).
                self._full = True
                try:
                    claimed, next_ms, blocked = await self._claim(asked)
                except (RedisError, OSError) as exc:
                    log.warning("claim failed (%s); retrying", exc)
                    await asyncio.sleep(0.5)
                    continue
                # Fewer than asked: the queue had no more ready jobs for us; new ones announce
                # themselves on the wake channel. As many as asked: there may be more.
                self._full = claimed >= asked
            for job_id, task in list(self.tasks.items()):
                if task.done():
                    del self.tasks[job_id]
                    if not task.cancelled() and task.exception() is not None:
                        log.error("job task %s crashed", job_id, exc_info=task.exception())
            with contextlib.suppress(RedisError, OSError):
                await self.heart_beat()
            if self.burst and not self.tasks and not claimed:
                if next_ms is None or not self.allow_pick_jobs:
                    return
            if self._full and self.max_jobs - self.job_counter >= self._claim_min:
                continue  # slots freed while we claimed, and more jobs may be ready
            timeout = self.idle_sweep_s
            if next_ms is not None:
                timeout = max(0.0, min(timeout, (next_ms - now_ms()) / 1000))
            if blocked:
                # Higher-priority jobs wait for their own workers: look again soon, backing off
                # while they keep waiting so a busy interactive queue is not polled in a loop.
                timeout = min(timeout, blocked_wait)
                blocked_wait = min(blocked_wait * 2, BLOCKED_WAIT_MAX_S)
            else:
                blocked_wait = BLOCKED_WAIT_MIN_S
            if self.burst:
                timeout = min(timeout, 0.05)
            if not self._wake.is_set():
                timer = self.loop.call_later(timeout, self._wake.set)
                await self._wake.wait()
                timer.cancel()

    async def _claim(self, limit: int) -> tuple[int, int | None, bool]:
        argv: list[Any] = [now_ms(), limit, self.lease_ms, 512, len(self._claim_order)]
        for name, served in self._claim_order:
            argv += [name, 1 if served else 0]
        claimed, next_ms, blocked = await self._claim_script(args=argv)
        for job_id_b, queue_b, body, job_try, state_flat, aborted in claimed:
            # a state that is not UTF-8 reads with U+FFFD: one such job must not end the claim loop
            state = {
                state_flat[i].decode("utf-8", "replace"): state_flat[i + 1].decode("utf-8", "replace")
                for i in range(0, len(state_flat), 2)
            }
            run = Run(job_id_b.decode("utf-8", "replace"), queue_b.decode(), state, int(job_try))
            self.job_counter += 1
            await self.sem.acquire()
            task = self.loop.create_task(self._run_claimed(run, body or None, bool(aborted)))
            task.add_done_callback(self._job_task_done)
            self.tasks[run.key] = task
        return len(claimed), (int(next_ms) if next_ms else None), bool(blocked)

    def _job_task_done(self, _: asyncio.Task[Any]) -> None:
        self._release_sem_dec_counter_on_complete()
        # A stopping worker (allow_pick_jobs off) waits for `self.tasks` to empty: let the loop
        # drop the finished task now rather than at the next idle sweep.
        if self.burst or not self.allow_pick_jobs:
            self._wake.set()
        elif self._full and self.max_jobs - self.job_counter >= self._claim_min:
            self._wake.set()

    async def _listen_for_wakeups(self) -> None:
        channels = [
            queues.CANCEL_CHANNEL,
            queues.PERSIST_CHANNEL,
            *(queues.wake_channel(q) for q in self.serves),
        ]
        await pubsub.listen(self.pool, channels, self._on_wakeup, what="wake-up", on_subscribed=self._woken)

    async def _woken(self) -> None:
        self._wake.set()  # whatever was published while we were away

    def _on_wakeup(self, channel: bytes, data: bytes) -> None:
        if channel == self._cancel_channel:
            self._abort(data.decode("utf-8", "replace"))
        elif channel == self._persist_channel:
            if self.persister is not None:
                self.persister.notify()
        else:
            self._wake.set()

    def _abort(self, job_id: str) -> None:
        task = self._in_handler.get(job_id)
        if task is not None and not task.done():
            self.aborting_tasks.add(job_id)
            task.cancel()

    async def _renew_leases(self) -> None:
        """Keep the in-progress leases of running jobs alive; a dead worker's lapse in one lease."""
        interval = self.lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            running = [key.split("#", 1)[0] for key, t in self.tasks.items() if not t.done()]
            if not running:
                continue
            try:
                async with self.pool.pipeline(transaction=False) as pipe:
                    for job_id in running:
                        pipe.pexpire(queues.IN_PROGRESS_KEY + job_id, self.lease_ms)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("lease renewal failed: %s", exc)
            except Exception:  # the leases of the next round must still be renewed
                log.exception("lease renewal failed")

    # --- one job -----------------------------------------------------------------------------
    async def _run_claimed(self, run: Run, body: bytes | None, aborted: bool) -> None:
        job_id, state, job_try = run.job_id, run.state, run.job_try
        request_id = state.get(REQUEST_ID_FIELD) if state else None
        if request_id is not None:  # this task's: the provider calls send it (workers.http)
            REQUEST_ID.set(request_id)
        try:
            if body is None:
                await self._finish(run, FAILED, error=("expired", "the job expired before it ran", 502))
                return
            try:
                function_name, args, kwargs, _, _ = deserialize_job_raw(
                    body, deserializer=self.job_deserializer
                )
                function = self.functions[function_name]
            except Exception as exc:  # noqa: BLE001 (a broken body fails that job, not the worker)
                await self._finish(run, FAILED, error=("bad_job", f"cannot run this job: {exc}", 500))
                return
            assert isinstance(function, Function)
            # Deliberate retries (a provider's 429/5xx, a shutdown) are the handler's to bound;
            # runs lost with a dead worker are bounded here. A job without Switchyard state (a
            # plain ARQ job) falls back to ARQ's count of tries.
            max_tries = self.max_tries if function.max_tries is None else function.max_tries
            lost = int(state.get("lost", 0)) if state else job_try - 1
            if lost >= max_tries or job_try > max_tries + MAX_DELIBERATE_RETRIES:
                await self._finish(
                    run,
                    FAILED,
                    error=("worker_lost", f"the job was started {job_try} times without finishing", 502),
                )
                return
            if aborted:
                await self._finish(run, CANCELED, error=("canceled", "canceled by the client", 409))
                return
            if state and webhooks.WEBHOOK_FIELD in state:
                await self._announce_start(run)
            ctx = {**self.ctx, "job_id": job_id, "job_try": job_try, "job": state}
            timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
            # The job runs inline in this task (no task per job); an abort cancels this task.
            current = asyncio.current_task()
            assert current is not None
            self._in_handler[job_id] = current
            try:
                async with asyncio.timeout(timeout_s):
                    outcome = await function.coroutine(ctx, *args, **kwargs)
            finally:
                self._in_handler.pop(job_id, None)
        except Retry as exc:
            self.jobs_retried += 1
            await self._requeue(run, exc.defer_score)
        except asyncio.CancelledError:
            if job_id in self.aborting_tasks:
                self.aborting_tasks.discard(job_id)
                self.jobs_failed += 1
                await self._finish(run, CANCELED, error=("canceled", "canceled by the client", 409))
            else:  # shutting down: give the job back for another worker
                self.jobs_retried += 1
                await self._requeue(run, None)
        except RetryJob:
            self.jobs_retried += 1
            await self._requeue(run, None)
        except TimeoutError:
            self.jobs_failed += 1
            err = JobTimedOut(f"the job timed out after {timeout_s:g}s")
            await self._finish(run, FAILED, error=(err.error_type, err.message, err.status_code))
        except SwitchyardError as exc:
            self.jobs_failed += 1
            await self._finish(run, FAILED, error=(exc.error_type, exc.message, exc.status_code))
        except Exception as exc:
            self.jobs_failed += 1
            log.exception("job %s failed", job_id)
            await self._finish(run, FAILED, error=("internal_error", f"{exc.__class__.__name__}: {exc}", 500))
        else:
            self.jobs_complete += 1
            await self._finish(run, SUCCEEDED, outcome=outcome)

    async def _announce_start(self, run: Run) -> None:
        """The job's `start` webhook, when it asked for one (once: a retried start adds nothing)."""
        hook = webhooks.read_webhook(run.state.get(webhooks.WEBHOOK_FIELD))
        if hook is None or not webhooks.wants(hook, "start"):
            return
        try:
            await webhooks.add_delivery(
                self.pool,
                subject="job",
                subject_id=run.job_id,
                event="start",
                owner=run.state.get("owner", ""),
                url=hook["url"],
                snapshot={**run.state, "status": RUNNING},
                now_ms=now_ms(),
            )
        except (RedisError, OSError) as exc:  # the job runs all the same
            log.warning("job %s: its start webhook could not be queued (%s)", run.job_id, exc)

    async def _requeue(self, run: Run, defer_ms: int | None) -> None:
        job_id, queue = run.job_id, run.queue
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(queues.IN_PROGRESS_KEY + job_id)
            if defer_ms:
                tr.zadd(queue, {job_id: now_ms() + defer_ms})
                # Nothing is published for a deferred retry: look again when it is due, not at
                # the next idle sweep.
                self.loop.call_later(defer_ms / 1000, self._wake.set)
            if run.state:  # a batch's control job has none: giving it back must not make one
                tr.hset(queues.STATE_KEY + job_id, "status", QUEUED)
            if not defer_ms:
                tr.publish(queues.wake_channel(queue.removeprefix(queues.QUEUE_PREFIX)), b"")
            await asyncio.shield(tr.execute())
        _log_job(run, "retried", None)

    async def _finish(
        self,
        run: Run,
        status: str,
        *,
        outcome: dict[str, Any] | None = None,
        error: tuple[str, str, int] | None = None,
    ) -> None:
        job_id, state, queue = run.job_id, run.state, run.queue
        update: dict[str, Any] = {"status": status, "finished": now_ms()}
        tokens_used = 0
        if outcome is not None:
            update["result"] = orjson.dumps(outcome.get("result"))
            if outcome.get("provider"):
                update["provider"] = outcome["provider"]
            usage = outcome.get("usage") or {}
            update["prompt_tokens"] = usage.get("prompt_tokens", 0)
            update["completion_tokens"] = usage.get("completion_tokens", 0)
            update["cost"] = outcome.get("cost", 0.0)
            tokens_used = update["prompt_tokens"] + update["completion_tokens"]
        refund = False
        if error is not None:
            update["error_type"], update["error_message"], update["error_status"] = error
            refund = error[0] in REFUNDABLE_ERRORS
        batch = state.get("batch") if state else None
        argv = finish_args(
            job_id,
            queue=queue,
            result_ttl_s=self.result_ttl_s,
            persist_set=self._persist_sets.get(queue, queues.PERSIST_SET),
            finished_ms=update["finished"],
            tokens_used=tokens_used,
            refund=refund,
            update=update,
            batch_line=(batch, state.get("custom_id") or "") if batch else None,
        )
        finisher = self._batch_finisher if batch else self._finisher
        await asyncio.shield(finisher(argv))
        if self.persister is not None and state:
            self.persister.notify()
        _log_job(run, status, update.get("provider"), error)

    # --- heartbeat ---------------------------------------------------------------------------
    async def record_health(self) -> None:
        """Besides ARQ's one health key per queue (which workers overwrite; `arq --check` and the
        bench read it): one entry per worker in `sy:workers`, every `WORKER_HEARTBEAT_S`, for
        `switchyard status` and `/metrics`. One pipelined round trip; a worker gone for a day
        drops out of the set."""
        now_s = time.time()
        if now_s - self._last_health_check < metrics.WORKER_HEARTBEAT_S:
            return
        self._last_health_check = now_s
        if not self._worker_id:
            self._worker_id = f"{socket.gethostname()}:{os.getpid()}:{','.join(self.serves)}"
            self._started_ms = now_ms()
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": ",".join(self.serves),
            "running": sum(not t.done() for t in self.tasks.values()),
            "jobs_complete": self.jobs_complete,
            "jobs_failed": self.jobs_failed,
            "jobs_retried": self.jobs_retried,
            "started_ms": self._started_ms,
        }
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.zadd(metrics.WORKERS_KEY, {self._worker_id: int(now_s * 1000)})
            pipe.hset(metrics.WORKER_INFO_KEY, self._worker_id, orjson.dumps(info).decode())
            pipe.zremrangebyscore(metrics.WORKERS_KEY, "-inf", int((now_s - 86_400) * 1000))
            pipe.psetex(
                self.health_check_key,
                int(metrics.WORKER_SEEN_S * 1000),
                f"j_complete={self.jobs_complete} j_failed={self.jobs_failed} j_retried={self.jobs_retried}"
                f" j_ongoing={info['running']}",
            )
            await pipe.execute()

    async def _forget_heartbeat(self) -> None:
        if self._worker_id and self._pool is not None:
            with contextlib.suppress(RedisError, OSError):
                async with self.pool.pipeline(transaction=False) as pipe:
                    pipe.zrem(metrics.WORKERS_KEY, self._worker_id)
                    pipe.hdel(metrics.WORKER_INFO_KEY, self._worker_id)
                    await pipe.execute()

    # --- shutdown ----------------------------------------------------------------------------
    async def close(self) -> None:
        """Let in-flight jobs finish or be re-queued, write what finished, then close."""
        if not self._handle_signals:  # as ARQ does: closing without a signal cancels at once
            self.handle_sig(signal.SIGUSR1)
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            # Every task is done now; a job canceled while it was finishing (its finish is
            # shielded and did happen) must not make ARQ's close() re-raise that cancellation.
            self.tasks.clear()
        if self.persister is not None:
            await self.persister.stop()
        await self._forget_heartbeat()
        await super().close()


_job_log: Any = None  # made at the first job, once the process' logging is configured


def _log_job(run: Run, outcome: str, provider: Any, error: tuple[str, str, int] | None = None) -> None:
    """The one line per run of a job (switchyard.logs.jobs): how it ended and how long it took."""
    global _job_log
    if _job_log is None:
        _job_log = job_lines.bind()
    if not _job_log.is_enabled_for(
        logging.WARNING if error is not None and error[2] >= 500 else logging.INFO
    ):
        return
    state = run.state
    fields: dict[str, Any] = {
        "logger": JOBS,
        "job_id": run.job_id,
        "kind": state.get("kind"),
        "priority": state.get("priority"),
        "provider": provider,
        "attempts": run.job_try,
        "duration_ms": round((time.perf_counter() - run.claimed_at) * 1000, 2),
        "outcome": outcome,
        "key_id": state.get("owner"),
        "request_id": state.get(REQUEST_ID_FIELD),
    }
    if error is not None:
        fields["error_type"], fields["error"], fields["error_status"] = error
        if error[2] >= 500:
            _job_log.warning("job", **fields)
            return
    _job_log.info("job", **fields)


def lower_priority(niceness: int) -> None:
    """Batch workers yield the CPU to web and interactive workers on a shared machine."""
    if niceness and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(niceness)
