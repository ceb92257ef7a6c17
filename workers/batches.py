"""The control jobs of the OpenAI Batch API (`jobs.batches`): `batch_dispatch` validates a
batch's input file and enqueues its lines as ordinary batch jobs, a chunk at a time; it also
stops a batch that was cancelled or outlived its window. `batch_finalize` writes the output and
error files once every dispatched line has finished.

Neither holds a batch in memory: the input file is streamed line by line from the blob store,
lines are enqueued `batch_dispatch_chunk` at a time (one script per chunk: admission, the jobs
and the batch's progress), and results are read back 500 at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from arq import Retry
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from jobs import batches as b
from jobs import queues, webhooks
from jobs.accounting import CREDITS_KEY, admit_args
from jobs.batching import ScriptBatcher
from jobs.client import job_body, new_job_ids
from jobs.records import QUEUED, JobRecord, ms_to_datetime, now_ms
from jobs.scripts import BATCH_TARGET, CANCEL, DISPATCH_LINES, READ_FINISHED
from storage.batches import get_batch, update_batch
from storage.keys import KeyRecord, credit_balances, get_key
from storage.models import BatchRow, Job, StoredFile
from switchyard.errors import RecordUnreadable, ServiceUnavailable, SwitchyardError
from workers.context import WorkerCtx

log = logging.getLogger("switchyard.batches")

LOCK_MS = 60_000  # one dispatch run per batch at a time; renewed every chunk
SLICE_S = 10.0  # a dispatch run hands over to a fresh job after this long (job timeouts)
READ_CHUNK = 500  # finished lines read back per round trip when finalizing
KEEP_HASH_S = 7 * 86_400  # a finished batch's Redis hash (the database row is what stays)
TRANSIENT_RETRY_S = 2.0
MODEL_TYPES = {"/v1/chat/completions": ("chat", "completion"), "/v1/embeddings": ("embedding",)}


def _text(h: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode("utf-8", "replace") for k, v in h.items() if not k.endswith(b"_body")}


async def _release(redis: Any, batch_id: str, token: str) -> None:
    with contextlib.suppress(Exception):
        if (await redis.get(b.lock_key(batch_id))) == token.encode():
            await redis.delete(b.lock_key(batch_id))


# --- batch_dispatch ---------------------------------------------------------------------------------
async def batch_dispatch(ctx: WorkerCtx, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    batch_id = str(payload.get("batch_id", ""))
    redis: Any = ctx["redis"]
    if not await redis.set(b.lock_key(batch_id), job_id, nx=True, px=LOCK_MS):
        return {"result": {"skipped": "another dispatch of this batch is running"}}  # it sees any stop
    try:
        await _guarded(ctx, batch_id, Dispatch(ctx, batch_id).run)
    finally:
        await _release(redis, batch_id, job_id)
    return {"result": None}


async def _guarded(ctx: WorkerCtx, batch_id: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run one step of a batch. Redis or the database out of reach: the job is retried a few
    seconds later. Anything else fails that batch (logged with its id), never the worker."""
    try:
        await step()
    except (RedisError, SQLAlchemyError, OSError, ServiceUnavailable) as exc:
        log.warning("batch %s: %s; retrying", batch_id, exc.__class__.__name__)
        raise Retry(defer=TRANSIENT_RETRY_S) from exc
    except Exception as exc:
        log.exception("batch %s failed", batch_id)
        error = b.LineError(
            "internal_error", f"the batch could not be processed: {exc.__class__.__name__}", None
        )
        with contextlib.suppress(Exception):
            await _fail(ctx, batch_id, [error])


class Dispatch:
    def __init__(self, ctx: WorkerCtx, batch_id: str) -> None:
        self.ctx = ctx
        self.redis: Any = ctx["redis"]  # redis-py types its replies loosely
        self.db = ctx["db"]
        self.settings = ctx["settings"]
        self.batch_id = batch_id
        self.key = b.batch_key(batch_id)

    async def run(self) -> None:
        row = await get_batch(self.db, self.batch_id)
        if row is None or row.status in b.TERMINAL:
            return
        state = _text(await self.redis.hgetall(self.key))
        if not state:
            log.warning("batch %s has no live state in Redis; failing it", self.batch_id)
            await self._fail(row, [b.LineError("batch_state_lost", "the batch's live state was lost", None)])
            return
        if state.get("finalize_queued"):
            return
        if state.get("status") == b.VALIDATING:
            if not await self._validate(row, state):
                return
            state = _text(await self.redis.hgetall(self.key))
        if state.get("stop"):
            await self.stop(state["stop"])
            return
        if now_ms() >= int(state.get("expires_at") or 0):
            await self.stop(b.EXPIRED)
            return
        await self._dispatch(row, state)

    # -- validation ------------------------------------------------------------------------------
    async def _validate(self, row: BatchRow, state: dict[str, str]) -> bool:
        files = self.ctx["files"]
        file = await files.get(row.input_file_id, include_expired=True)
        errors: list[b.LineError] = []
        total, default_model = 0, None
        if file is None:
            errors.append(
                b.LineError("input_file_missing", f"input file {row.input_file_id} no longer exists", None)
            )
        elif file.size > self.settings.batch_max_bytes:
            limit = self.settings.batch_max_bytes
            errors.append(
                b.LineError(
                    "file_too_large",
                    f"the input file is {file.size} bytes; at most {limit} are allowed",
                    None,
                )
            )
        else:
            total, errors, default_model = await self._check_lines(row, file)
        if not errors and total == 0:
            errors.append(b.LineError("empty_file", "the input file has no requests", None))
        if errors:
            await self._fail(row, errors)
            return False
        now = now_ms()
        fields: dict[str, Any] = {"status": b.IN_PROGRESS, "total": total, "in_progress_at": now}
        if default_model:
            fields["default_model"] = default_model
        async with self.redis.pipeline(transaction=True) as tr:
            tr.hset(self.key, mapping=fields)
            await tr.execute()
        await update_batch(
            self.db, self.batch_id, status=b.IN_PROGRESS, total=total, in_progress_at=ms_to_datetime(now)
        )
        return True

    async def _check_lines(
        self, row: BatchRow, file: StoredFile
    ) -> tuple[int, list[b.LineError], str | None]:
        """Every line read once, streaming: its shape, its model, the key's bounds on it, and
        that its custom_id is new (a 16-byte digest each is what is kept)."""
        check = _LineCheck(self, row, await self._key(row.owner_key_id))
        errors: list[b.LineError] = []
        total = 0
        max_lines = self.settings.batch_max_lines
        lines = b.read_lines(self.ctx["files"].open(file))
        try:
            async with contextlib.aclosing(lines):
                async for line in lines:
                    total += 1
                    if total > max_lines:
                        message = f"the input file has more than {max_lines} requests (line {line.number})"
                        errors.append(b.LineError("too_many_tasks", message, line.number))
                        break
                    try:
                        await check(line)
                    except b.LineError as exc:
                        errors.append(exc)
                        if len(errors) >= b.MAX_ERRORS:
                            break
        except b.LineError as exc:  # a line too long to be a request
            errors.append(exc)
        if check.first_model and not errors:
            await update_batch(self.db, self.batch_id, model=check.first_model[:200])
        return min(total, max_lines), errors, check.default_model

    async def default_image_model(self, line: int) -> str:
        catalog = self.ctx["catalog"]
        for model in await catalog.all_models():
            if catalog.model_type(model) == "image":
                return model
        raise b.LineError(
            "model_not_found", "body.model is required: no image model is configured", line, "body.model"
        )

    async def check_model(
        self, model: str, endpoint: str, key: KeyRecord | None, line: int
    ) -> b.LineError | None:
        try:
            await self.ctx["catalog"].require(model, *MODEL_TYPES.get(endpoint, ("image",)))
        except SwitchyardError as exc:
            return b.LineError(exc.code, exc.message, line, "body.model")
        if key is not None and key.models is not None and model not in key.models:
            return b.LineError(
                "model_not_allowed", f"this API key may not use model '{model}'", line, "body.model"
            )
        return None

    async def _key(self, owner: str) -> KeyRecord | None:
        """The key's record (None for the admin key: no limits)."""
        return None if owner == "admin" else await get_key(self.db, owner)

    async def _fail(self, row: BatchRow, errors: list[b.LineError]) -> None:
        await _fail(self.ctx, row.id, errors)

    # -- dispatching -----------------------------------------------------------------------------
    async def _dispatch(self, row: BatchRow, state: dict[str, str]) -> None:
        key = await self._key(row.owner_key_id)
        if row.owner_key_id != "admin" and (key is None or key.revoked or not key.is_active or key.expired):
            await self.stop(b.CANCELLED)
            return
        file = await self.ctx["files"].get(row.input_file_id, include_expired=True)
        if file is None:
            await self.stop(b.CANCELLED)
            return
        offset, next_line = int(state.get("offset") or 0), int(state.get("next_line") or 1)
        send = _ChunkSender(self, row, state, key)
        chunk_size = self.settings.batch_dispatch_chunk
        started = time.monotonic()
        chunk: list[b.Line] = []
        lines = b.read_lines(self.ctx["files"].open(file, offset), start=offset, first_line=next_line)
        async with contextlib.aclosing(lines):
            async for line in lines:
                chunk.append(line)
                if len(chunk) < chunk_size:
                    continue
                go_on = await send(chunk)
                chunk = []
                if not go_on:
                    return
                if time.monotonic() - started > SLICE_S:
                    await b.enqueue_control(self.redis, b.BATCH_DISPATCH, self.batch_id, now_ms())
                    return
        if chunk and not await send(chunk):
            return
        await self.redis.register_script(BATCH_TARGET)(args=[self.key, now_ms()])
        # a cancel that came after the last chunk's look (its own dispatch job found this one
        # holding the lock and left it the work): the lines still queued are canceled now
        stop = await self.redis.hget(self.key, "stop")
        if stop:
            await self.stop(stop.decode())

    async def wait_for_admission(self, verdict: list[Any], expires_ms: int, key: KeyRecord | None) -> None:
        """The key's limits or credits refused a line: ask again when its window resets (or
        sooner, `batch_admission_recheck_s`: credits may be topped up, limits raised)."""
        now = now_ms()
        outcome = verdict[0].decode() if isinstance(verdict[0], bytes) else str(verdict[0])
        at = now + int(self.settings.batch_admission_recheck_s * 1000)
        if outcome in ("hourly", "daily_requests", "daily_tokens", "per_minute"):
            at = min(at, int(verdict[3]) + 10)
        elif outcome == "credits_unknown" and key is not None:
            balance = (await credit_balances(self.db, [key.id])).get(key.id, 0)
            await self.redis.hsetnx(CREDITS_KEY, key.id, str(balance))
            at = now
        log.info("batch %s waits for admission (%s) until %d", self.batch_id, outcome, at)
        await b.enqueue_control(self.redis, b.BATCH_DISPATCH, self.batch_id, min(at, expires_ms))

    # -- cancel and expiry -----------------------------------------------------------------------
    async def stop(self, reason: str) -> None:
        """Dispatch no more; cancel the lines still queued (running ones are aborted and count
        when they finish); finalize once the dispatched lines have all finished."""
        await self.redis.hsetnx(self.key, "stop", reason)
        cancel = ScriptBatcher(self.redis, CANCEL)
        jobs = b.jobs_key(self.batch_id)
        start = 0
        while True:
            ids = await self.redis.lrange(jobs, start, start + READ_CHUNK - 1)
            if not ids:
                break
            start += len(ids)
            now = now_ms()
            answers = await asyncio.gather(
                *(cancel([i.decode(), now, queues.PERSIST_SET, queues.CANCEL_CHANNEL]) for i in ids)
            )
            # lines whose state is gone can never finish: the target does without them (a set,
            # so a second stop of the same batch does not count them twice)
            gone = [i for i, (outcome, _) in zip(ids, answers, strict=True) if outcome == b"missing"]
            if gone:
                await self.redis.sadd(b.lost_key(self.batch_id), *gone)
        lost = await self.redis.scard(b.lost_key(self.batch_id))
        if lost:
            await self.redis.hset(self.key, "lost", lost)
        await self.redis.register_script(BATCH_TARGET)(args=[self.key, now_ms()])


class _ChunkSender:
    """Enqueues a chunk of a batch's lines as ordinary batch jobs (`jobs.scripts.DISPATCH_LINES`):
    admitted in order against the key's limits and recorded as dispatched in one round trip.
    Per line, Python only reads the line and writes its job's body; what every line's job shares
    (its kind, owner, price, batch) is sent once per chunk."""

    def __init__(self, dispatch: Dispatch, row: BatchRow, state: dict[str, str], key: KeyRecord | None):
        self.dispatch, self.row, self.key = dispatch, row, key
        self.expires_ms = int(state["expires_at"])
        self.default_model = state.get("default_model") or ""
        self.price = dispatch.settings.batch_credits
        spec = b.ENDPOINTS[row.endpoint]
        self.kind, self.modality = spec.kind, spec.modality
        shared = JobRecord(
            id="",
            kind=spec.kind,
            dialect="openai",
            priority=queues.BATCH,
            owner=row.owner_key_id,
            status=QUEUED,
            created_ms=0,
            credits_charged=self.price,
        ).to_hash()
        for own in ("id", "created", "model"):  # each line's, in the script
            shared.pop(own, None)
        shared["batch"] = dispatch.batch_id
        self.shared = orjson.dumps({k: str(v) for k, v in shared.items()})
        self.script = dispatch.redis.register_script(DISPATCH_LINES)

    async def __call__(self, chunk: list[b.Line]) -> bool:
        """Enqueue a chunk of lines; False when dispatching stops here (stopped, or admission
        said wait: a later dispatch job goes on from the first line it refused)."""
        d = self.dispatch
        now = now_ms()
        lines = []
        for line, job_id in zip(chunk, new_job_ids(now, len(chunk)), strict=True):
            req = b.parse_line(line, self.row.endpoint)  # validated already: this cannot fail
            model = req.model or self.default_model
            body = job_body(self.kind, job_id, b.job_payload(req, model, self.row.files_base), now)
            lines.append(
                (
                    job_id,
                    body.decode(),
                    str(req.reserve_tokens),
                    model,
                    req.custom_id,
                    str(line.start),
                    str(line.number),
                )
            )
        queue = queues.queue_for(queues.BATCH, queues.DEFAULT_LANE)
        argv: list[Any] = [
            d.key, LOCK_MS, queues.queue_name(queue), queues.wake_channel(queue), self.row.owner_key_id,
            now, queues.ARQ_JOB_TTL_MS, queues.LAST_USED_KEY, self.shared, orjson.dumps(lines),
            chunk[-1].end, chunk[-1].number + 1,
        ]  # fmt: skip
        if self.key is None:
            argv.append("0")
        else:
            argv += [
                "1",
                *admit_args(self.key, now, price=self.price, reserve_tokens=0, modality=self.modality),
            ]
        _, refusal, stop = await self.script(args=argv)
        if stop:
            await d.stop(stop.decode())
            return False
        if refusal is None:
            return True
        await d.wait_for_admission(refusal, self.expires_ms, self.key)
        return False


async def _fail(ctx: WorkerCtx, batch_id: str, errors: list[b.LineError]) -> None:
    """The batch failed: its errors in the row, and no more work for it."""
    redis: Any = ctx["redis"]
    now = now_ms()
    data = [e.as_dict() for e in errors]
    await update_batch(ctx["db"], batch_id, status=b.FAILED, errors=data, failed_at=ms_to_datetime(now))
    live = _text(await redis.hgetall(b.batch_key(batch_id)))
    async with redis.pipeline(transaction=True) as tr:
        tr.hset(b.batch_key(batch_id), mapping={"status": b.FAILED, "failed_at": now})
        _queue_webhook(tr, batch_id, live, now)
        # lines already dispatched still finish and are counted: their lists go in time
        for key in (b.batch_key, b.done_key, b.jobs_key, b.lost_key):
            tr.expire(key(batch_id), KEEP_HASH_S)
        await tr.execute()


def _queue_webhook(tr: Any, batch_id: str, state: dict[str, str], now: int) -> None:
    """The batch's `completed` delivery (`jobs.webhooks`), in the transaction that ends it, when
    it named a webhook; the payload is the batch object read when it is sent."""
    hook = webhooks.read_webhook(state.get(webhooks.WEBHOOK_FIELD))
    if hook is None or not webhooks.wants(hook, "completed"):
        return
    webhooks.add_delivery(
        tr,
        subject="batch",
        subject_id=batch_id,
        event="completed",
        owner=state.get("owner", ""),
        url=hook["url"],
        snapshot={"batch_id": batch_id},
        now_ms=now,
    )


class _LineCheck:
    """What validating one line needs to remember of the lines before it."""

    def __init__(self, dispatch: Dispatch, row: BatchRow, key: KeyRecord | None) -> None:
        self.dispatch, self.row, self.key = dispatch, row, key
        self.seen: set[bytes] = set()
        self.models: dict[str, b.LineError | None] = {}
        self.first_model: str | None = None
        self.default_model: str | None = None

    async def __call__(self, line: b.Line) -> None:
        n = line.number
        req = b.parse_line(line, self.row.endpoint, estimate=False)
        digest = b.custom_id_digest(req.custom_id)
        if digest in self.seen:
            message = f"line {n}: custom_id {req.custom_id[:100]!r} is used by an earlier line"
            raise b.LineError("duplicate_custom_id", message, n, "custom_id")
        self.seen.add(digest)
        model = req.model
        if model is None:
            self.default_model = self.default_model or await self.dispatch.default_image_model(n)
            model = self.default_model
        if model not in self.models:
            self.models[model] = await self.dispatch.check_model(model, self.row.endpoint, self.key, n)
        err = self.models[model]
        if err is not None:
            raise b.LineError(err.code, f"line {n}: {err.message}", n, err.param)
        self.first_model = self.first_model or model
        cap = self.key.limits.max_tokens_per_request if self.key is not None else None
        if cap is not None and req.max_tokens > cap:
            message = f"line {n}: body.max_tokens exceeds this key's max_tokens_per_request ({cap})"
            raise b.LineError("invalid_request", message, n, "body.max_tokens")


# --- batch_finalize ---------------------------------------------------------------------------------
async def batch_finalize(ctx: WorkerCtx, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    batch_id = str(payload.get("batch_id", ""))
    await _guarded(ctx, batch_id, lambda: _finalize(ctx, batch_id))
    return {"result": None}


async def _finalize(ctx: WorkerCtx, batch_id: str) -> None:
    redis: Any = ctx["redis"]
    db = ctx["db"]
    row = await get_batch(db, batch_id)
    if row is None or row.status in b.TERMINAL:
        return
    key = b.batch_key(batch_id)
    state = _text(await redis.hgetall(key))
    stopped = state.get("stop") or None
    now = started = now_ms()
    if stopped is None:
        await update_batch(db, batch_id, status=b.FINALIZING, finalizing_at=ms_to_datetime(now))
    writer = await asyncio.to_thread(_Writer, ctx["settings"].data_dir)  # makes its files
    try:
        written = now_ms()
        completed, failed = await _write_results(ctx, batch_id, stopped, writer)
        if stopped is not None:
            failed += await _write_not_run(ctx, row, state, stopped, writer)
        written = now_ms() - written
        output_id, error_id = await writer.store(ctx, row, batch_id)
    finally:
        await asyncio.to_thread(writer.discard)
    now = now_ms()
    final = {b.CANCELLED: b.CANCELLED, b.EXPIRED: b.EXPIRED}.get(stopped or "", b.COMPLETED)
    at_field = {b.CANCELLED: "cancelled_at", b.EXPIRED: "expired_at", b.COMPLETED: "completed_at"}[final]
    await update_batch(
        db,
        batch_id,
        status=final,
        completed=completed,
        failed=failed,
        output_file_id=output_id,
        error_file_id=error_id,
        **{at_field: ms_to_datetime(now)},
    )
    async with redis.pipeline(transaction=True) as tr:
        timing = {"finalize_ms": now - started, "finalize_write_ms": written}  # for `make bench`
        tr.hset(
            key,
            mapping={"status": final, at_field: now, "completed": completed, "failed": failed, **timing},
        )
        _queue_webhook(tr, batch_id, state, now)
        tr.expire(key, KEEP_HASH_S)
        tr.delete(b.done_key(batch_id), b.jobs_key(batch_id), b.lost_key(batch_id))
        await tr.execute()
    log.info("batch %s %s: %d completed, %d failed", batch_id, final, completed, failed)


class _Writer:
    """The output and error files, written to temporary files a chunk at a time (in a thread),
    then moved into the blob store."""

    def __init__(self, data_dir: Path) -> None:
        tmp = Path(data_dir) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self.paths: dict[bool, Path] = {}
        for is_output in (True, False):
            fd, name = tempfile.mkstemp(dir=tmp, suffix=".jsonl")
            os.close(fd)
            self.paths[is_output] = Path(name)
        self.counts = {True: 0, False: 0}
        self.pending: dict[bool, list[bytes]] = {True: [], False: []}

    def add(self, is_output: bool, line: bytes) -> None:
        self.pending[is_output].append(line)
        self.counts[is_output] += 1

    async def flush(self) -> None:
        for is_output, lines in self.pending.items():
            if lines:
                data = b"\n".join(lines) + b"\n"
                await asyncio.to_thread(_append, self.paths[is_output], data)
        self.pending = {True: [], False: []}

    async def store(self, ctx: WorkerCtx, row: BatchRow, batch_id: str) -> tuple[str | None, str | None]:
        await self.flush()
        ids: list[str | None] = []
        ttl = ctx["settings"].batch_file_ttl_s
        for is_output, suffix in ((True, "output"), (False, "error")):
            if not self.counts[is_output]:
                ids.append(None)
                continue
            stored = await ctx["files"].store(
                self.paths[is_output],
                mime="application/jsonl",
                filename=f"{batch_id}_{suffix}.jsonl",
                owner_key_id=row.owner_key_id,
                kind="batch_output",
                expires_in_s=ttl,
                move=True,
            )
            ids.append(stored.id)
        return ids[0], ids[1]

    def discard(self) -> None:
        for path in self.paths.values():
            path.unlink(missing_ok=True)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def _write_results(
    ctx: WorkerCtx, batch_id: str, stopped: str | None, writer: _Writer
) -> tuple[int, int]:
    """Every finished line, READ_CHUNK at a time: its state from Redis, or its row once Redis
    has let it go. The next page is read while this one is written (Redis' work and ours
    overlap on two cores)."""
    redis: Any = ctx["redis"]
    db = ctx["db"]
    done = b.done_key(batch_id)
    read_finished = redis.register_script(READ_FINISHED)

    def read_page(first: int) -> asyncio.Task[Any]:
        return asyncio.ensure_future(read_finished(args=[done, first, READ_CHUNK, *FINISHED_FIELDS]))

    start, completed, failed = 0, 0, 0
    page = read_page(0)
    try:
        while True:
            read = await page
            if not read:
                break
            start += len(read)
            page = read_page(start)
            c, f = await _write_page(redis, db, read, stopped, writer)
            completed += c
            failed += f
            await writer.flush()
    finally:
        if not page.done():
            page.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await page
    return completed, failed


async def _write_page(
    redis: Any, db: Any, read: list[Any], stopped: str | None, writer: _Writer
) -> tuple[int, int]:
    """One page of READ_FINISHED into the writer: a succeeded line whose stored result is
    already its response body is spliced (`_spliced_line`), the others read into a record."""
    completed, failed = 0, 0
    pairs: list[tuple[str, str, bytes | None]] = []
    records: dict[str, JobRecord | None] = {}
    missing, slow = [], []
    for entry, values in read:
        job_id, _, custom_id = entry.decode("utf-8", "replace").partition(" ")
        if values[0] is None:  # no status: Redis has let the job's state go
            missing.append(job_id)
            pairs.append((job_id, custom_id, None))
            continue
        spliced = _spliced_line(job_id, custom_id, values)
        pairs.append((job_id, custom_id, spliced))
        if spliced is not None:
            continue
        record = _finished_record(job_id, values)
        if record is None:
            slow.append(job_id)
        records[job_id] = record
    if slow:
        for job_id, found in (await _slow_records(redis, slow)).items():
            if found is False:
                missing.append(job_id)
            else:
                records[job_id] = found if isinstance(found, JobRecord) else None
    if missing:
        async with db.session() as session:
            rows = (await session.exec(select(Job).where(col(Job.id).in_(missing)))).all()
        for job_row in rows:
            try:
                records[job_row.id] = JobRecord.from_row(job_row)
            except RecordUnreadable:
                records[job_row.id] = None
    for job_id, custom_id, spliced in pairs:
        if spliced is not None:
            writer.add(True, spliced)
            completed += 1
            continue
        record = records.get(job_id)
        if record is None:
            failed += 1
            writer.add(False, _unreadable_line(job_id, custom_id))
            continue
        is_output, line = b.output_line(record, custom_id, stopped)
        writer.add(is_output, line)
        completed += is_output
        failed += not is_output
    return completed, failed


# What a finished line's output needs of its job's state (`b.output_line`), status first; what
# `JobRecord.from_hash` requires beside them is read only for a state the quick way cannot read.
FINISHED_FIELDS = (
    "status", "kind", "created", "model", "started", "result", "error_type", "error_message",
    "error_status",
)  # fmt: skip
SLOW_FIELDS = (*FINISHED_FIELDS, "priority", "owner", "dialect")


def _finished_record(job_id: str, values: list[bytes | None]) -> JobRecord | None:
    """The record of a finished line from its FINISHED_FIELDS: the few fields its output line
    needs, read directly (a third of what `from_hash` of the whole state costs); None when the
    state does not read that way (`_slow_records` reads it by `from_hash`)."""
    status, kind, created, model, started, result, error_type, error_message, error_status = values[:9]
    try:
        return JobRecord(
            id=job_id,
            kind=kind.decode(),  # type: ignore[union-attr]
            dialect="openai",
            priority=queues.BATCH,
            owner="",
            status=status.decode(),  # type: ignore[union-attr]
            created_ms=int(created),  # type: ignore[arg-type]
            model=model.decode() if model else None,
            started_ms=int(started) if started else None,
            result=orjson.loads(result) if result else None,
            error_type=error_type.decode() if error_type else None,
            error_message=error_message.decode() if error_message else None,
            error_status=int(error_status) if error_status else None,
        )
    except (AttributeError, ValueError, TypeError):  # UnicodeDecodeError, JSONDecodeError: ValueErrors
        return None


async def _slow_records(redis: Any, job_ids: list[str]) -> dict[str, JobRecord | None | bool]:
    """The states the quick way could not read, whole, by `from_hash` (None: unreadable; False:
    the state is gone meanwhile, its row is what is left)."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(queues.STATE_KEY + job_id, SLOW_FIELDS)
        answers = await pipe.execute()
    out: dict[str, JobRecord | None | bool] = {}
    for job_id, values in zip(job_ids, answers, strict=True):
        if values[0] is None:
            out[job_id] = False
            continue
        fields = {name: v for name, v in zip(SLOW_FIELDS, values, strict=True) if v is not None}
        try:
            out[job_id] = JobRecord.from_hash(fields, job_id=job_id)
        except RecordUnreadable:
            out[job_id] = None
    return out


_SPLICED_KINDS = {b"chat_completion": True, b"embedding": False}  # kind: whether it is chat


def _spliced_line(job_id: str, custom_id: str, values: list[bytes | None]) -> bytes | None:
    """The output line of a succeeded chat or embeddings line whose stored result is already
    the body `b.output_line` would write (it names the job's model and, for chat, has the
    fields `b.response_body` adds when missing): that result's bytes spliced in, not read into
    a record and encoded again. None when the line is another case (`b.output_line` writes it).
    The stored result was written by `orjson.dumps`, so it is byte for byte what encoding
    the body it holds gives."""
    status, kind, created, model, started, result = values[:6]
    chat = _SPLICED_KINDS.get(kind) if status == b"succeeded" and result and model else None  # type: ignore[arg-type]
    if chat is None:
        return None
    try:
        int(created)  # type: ignore[arg-type]
        if started:
            int(started)
        body = orjson.loads(result)  # type: ignore[arg-type]
        if type(body) is not dict or body.get("model") != model.decode():  # type: ignore[union-attr]
            return None
    except (ValueError, TypeError):  # UnicodeDecodeError, JSONDecodeError: ValueErrors
        return None
    if chat and not ("object" in body and "id" in body and "created" in body):
        return None
    return (
        b'{"id":%s,"custom_id":%s,"response":{"status_code":200,"request_id":%s,"body":%s},"error":null}'
        % (
            orjson.dumps("batch_req_" + job_id),
            orjson.dumps(custom_id),
            orjson.dumps(job_id),
            result,
        )
    )


def _unreadable_line(job_id: str, custom_id: str) -> bytes:
    error = {"code": "result_unavailable", "message": f"the result of job {job_id} could not be read"}
    return orjson.dumps(
        {"id": "batch_req_" + job_id, "custom_id": custom_id, "response": None, "error": error}
    )


async def _write_not_run(
    ctx: WorkerCtx, row: BatchRow, state: dict[str, str], stopped: str, writer: _Writer
) -> int:
    """The lines a stopped batch never dispatched, into the error file (OpenAI's
    `batch_cancelled` / `batch_expired`)."""
    if state.get("status") == b.VALIDATING or "total" not in state:
        return 0
    file = await ctx["files"].get(row.input_file_id, include_expired=True)
    if file is None:
        return 0
    offset, next_line = int(state.get("offset") or 0), int(state.get("next_line") or 1)
    count = 0
    lines = b.read_lines(ctx["files"].open(file, offset), start=offset, first_line=next_line)
    async with contextlib.aclosing(lines):
        async for line in lines:
            try:
                custom_id = str(orjson.loads(line.raw).get("custom_id"))
            except (orjson.JSONDecodeError, AttributeError):
                continue
            writer.add(False, b.not_run_line(custom_id, stopped))
            count += 1
            if count % READ_CHUNK == 0:
                await writer.flush()
    return count
