"""OpenAI's Files and Batches (`/v1/files`, `/v1/batches`, also under `/openai/v1`), native:
the input file goes to the blob store, the batch to the database and Redis, and its lines
become ordinary batch jobs (`jobs.batches`, `workers/batches.py`). Objects have OpenAI's exact
fields, so the official SDK reads them. A key sees only its own files and batches (another's id
is a 404, as a missing one); the admin key sees every key's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.response import Stream
from msgspec import Meta
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from api.auth import Principal
from api.errors import OPENAI, handlers_for
from api.files import serve_file
from api.idempotency import REPLAYED, claim, fingerprint, idempotency, idempotency_header, once_for, release
from api.openapi import docs
from api.responses import json_response
from api.schemas import openai as oa
from api.state import Services, services
from api.validation import convert, decode_object
from api.webhooks import request_webhook
from jobs import batches as b
from jobs import webhooks
from jobs.client import redis_call
from jobs.records import now_ms
from storage.batches import get_batch, insert_batch, list_batches, update_batch
from storage.files import FileNotFound
from storage.keys import utcnow
from storage.models import BatchRow, StoredFile
from switchyard.errors import (
    BatchNotFound,
    Conflict,
    IdempotencyKeyReused,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
)

PREFIXES = ("/v1", "/openai/v1")
PURPOSES = {"batch": "batch", "batch_output": "batch_output"}  # file kind -> OpenAI purpose
UPLOAD = {  # what upload_file reads, part by part (for the schema)
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "JSONL: one request a line"},
        "purpose": {"type": "string", "enum": ["batch"]},
    },
}
MAX_FIELD_BYTES = 1024  # a form field other than the file (`purpose`)
# How long a replay waits for the record of the request that bound its `Idempotency-Key` (a
# concurrent duplicate arrives between the binding and the insert).
REPLAY_WAIT_S = 2.0
REPLAY_POLL_S = 0.02


def _paths(path: str) -> list[str]:
    return [prefix + path for prefix in PREFIXES]


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest.field(name, f"must be an integer from {low} to {high}", raw[:100]) from None
    if not low <= value <= high:
        raise InvalidRequest.field(name, f"must be an integer from {low} to {high}", value)
    return value


# --- files ---------------------------------------------------------------------------------------------
def file_object(file: StoredFile) -> dict[str, Any]:
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.size,
        "created_at": _epoch(file.created_at),
        "filename": file.filename,
        "purpose": PURPOSES.get(file.kind, "user_data"),
        "status": "processed",
        "expires_at": _epoch(file.expires_at),
        "status_details": None,
    }


async def _owned_file(svc: Services, principal: Principal, file_id: str) -> StoredFile:
    return await svc.files.get_for(file_id, principal.key_id, is_admin=principal.is_admin)


class _Upload:
    """A multipart upload read as it arrives: the `file` part streams to the blob store, the
    other fields (`purpose`) are kept, small."""

    def __init__(self, request: Request, max_bytes: int) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type", ""))
        if content_type != "multipart/form-data" or not options.get("boundary"):
            raise InvalidRequest.field("file", "the body must be multipart/form-data with a file part")
        self.request = request
        self.boundary = options["boundary"]
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.digest = hashlib.sha256()  # of the file's bytes: an idempotent upload's fingerprint

    async def file_chunks(self) -> AsyncIterator[bytes]:
        parser = PushMultipartParser(self.boundary, max_segment_count=16)
        current: MultipartSegment | None = None
        value = bytearray()
        try:
            async for data in self.request.stream():
                for event in parser.parse(data):
                    if isinstance(event, MultipartSegment):
                        current, value = event, bytearray()
                        if current.name == "file":
                            if self.filename is not None:
                                raise InvalidRequest.field("file", "only one file may be uploaded")
                            self.filename = current.filename or "upload.jsonl"
                    elif event is None:
                        if current is not None and current.name != "file":
                            self.fields[current.name] = value.decode("utf-8", "replace")
                        current = None
                    elif current is not None and current.name == "file":
                        self.size += len(event)
                        if self.size > self.max_bytes:
                            raise PayloadTooLarge(f"file: larger than the limit of {self.max_bytes} bytes")
                        self.digest.update(event)
                        yield bytes(event)
                    elif current is not None:
                        value += event
                        if len(value) > MAX_FIELD_BYTES:
                            raise InvalidRequest.field(current.name[:100], "is too long")
            for _ in parser.parse(b""):
                pass
        except MultipartError as exc:
            raise InvalidRequest.field("file", f"the multipart body is malformed ({exc})") from None


@post(
    _paths("/files"),
    status_code=200,
    request_max_body_size=None,
    opt=docs(body=UPLOAD, body_media_type="multipart/form-data", answers=oa.FileObject),
)
async def upload_file(request: Request) -> Response[bytes]:
    """A JSONL file for a batch (`purpose=batch`), streamed to the blob store, at most
    `SWITCHYARD_BATCH_MAX_BYTES`. With an `Idempotency-Key`, the same upload again (same
    purpose, file name and bytes) is the first file, and the bytes sent again are dropped."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    key = idempotency_header(request)
    upload = _Upload(request, svc.settings.batch_max_bytes)
    blob = await svc.files.blobs.put(upload.file_chunks())
    purpose = upload.fields.get("purpose")
    problem = None
    if upload.filename is None:
        problem = InvalidRequest.field("file", "is required")
    elif purpose is None:
        problem = InvalidRequest.field("purpose", "is required")
    elif purpose != "batch":
        problem = InvalidRequest.field(
            "purpose", "this server takes files for purpose 'batch' only", purpose[:100]
        )
    if problem is not None:
        await svc.files.discard_blob(blob.key)
        raise problem
    assert upload.filename is not None and purpose is not None
    file = await svc.files.record(
        blob,
        mime="application/jsonl",
        filename=upload.filename,
        owner_key_id=principal.key_id,
        kind="batch",
        expires_in_s=svc.settings.batch_file_ttl_s,
    )
    if key is None:
        return json_response(file_object(file))
    # Bound after the record is made (its id is the record's): a duplicate that lost the race
    # drops its own copy and answers the first.
    form = [purpose.encode(), b"\x00", upload.filename.encode("utf-8", "surrogatepass"), b"\x00"]
    same = fingerprint(request, [*form, upload.digest.digest()])
    once = once_for(principal.key_id, key, same, svc.settings.idempotency_ttl_s, scope="file:")
    try:
        held = await claim(svc.redis, once, file.id)
    except BaseException:
        await svc.files.delete(file.id)
        raise
    if held is None:
        return json_response(file_object(file))
    await svc.files.delete(file.id)
    try:
        original = await _owned_file(svc, principal, held)
    except FileNotFound:
        reason = f"its file {held} is no longer kept; send a new key"
        raise IdempotencyKeyReused(reason, status_code=409) from None
    return json_response(file_object(original), headers=dict(REPLAYED))


@get(
    _paths("/files"),
    opt=docs(
        answers=oa.FileList,
        query={
            "purpose": "batch or batch_output",
            "order": "asc or desc",
            "limit": "1 to 10000",
            "after": "a file id",
        },
    ),
)
async def list_files(request: Request) -> Response[bytes]:
    """The key's batch files (OpenAI's list: `purpose`, `limit`, `order`, `after`)."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    purpose = request.query_params.get("purpose")
    if purpose is not None and purpose not in PURPOSES.values():
        raise InvalidRequest.field("purpose", "must be batch or batch_output", purpose[:100])
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest.field("order", "must be asc or desc", order[:100])
    limit = _int_param(request, "limit", 10_000, 1, 10_000)
    after = request.query_params.get("after") or None
    kinds = tuple(k for k, p in PURPOSES.items() if purpose is None or p == purpose)
    rows = await svc.files.list_for(
        None if principal.is_admin else principal.key_id,
        kinds=kinds,
        after=after,
        limit=limit + 1,
        newest_first=order == "desc",
    )
    data = [file_object(f) for f in rows[:limit]]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > limit,
        }
    )


@get(_paths("/files/{file_id:str}"), opt=docs(answers=oa.FileObject))
async def retrieve_file(request: Request, file_id: str) -> Response[bytes]:
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    return json_response(file_object(await _owned_file(svc, principal, file_id)))


@get(_paths("/files/{file_id:str}/content"), opt=docs(media_type="application/jsonl"))
async def file_content(request: Request, file_id: str) -> Response[bytes] | Stream:
    """The file's bytes, streamed from the blob store."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    file = await _owned_file(svc, principal, file_id)
    return await serve_file(request, svc.files, file, download=True, presigned=True)


@delete(_paths("/files/{file_id:str}"), status_code=200, opt=docs(answers=oa.FileDeleted))
async def delete_file(request: Request, file_id: str) -> Response[bytes]:
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    file = await _owned_file(svc, principal, file_id)
    await svc.files.delete(file.id)
    return json_response({"id": file.id, "object": "file", "deleted": True})


# --- batches -------------------------------------------------------------------------------------------
MetadataKey = Annotated[str, Meta(max_length=64)]
MetadataValue = Annotated[str, Meta(max_length=512)]


class CreateBatch(msgspec.Struct, forbid_unknown_fields=False):
    input_file_id: Annotated[str, Meta(min_length=1, max_length=100)]
    endpoint: str
    completion_window: str
    metadata: Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=16)] | None = None


def batch_object(row: BatchRow, live: dict[bytes, bytes] | None) -> dict[str, Any]:
    """OpenAI's Batch object: the row, with the live status and counters from Redis while the
    batch runs."""
    status = row.status
    total, completed, failed = row.total, row.completed, row.failed
    times = {
        name: _epoch(getattr(row, name))
        for name in ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at")
        + ("cancelling_at", "cancelled_at")
    }
    if status not in b.TERMINAL and live:
        h = {k.decode(): v.decode("utf-8", "replace") for k, v in live.items() if not k.endswith(b"_body")}
        # A terminal status comes from the row only: finalizing writes the row (with the time
        # and the files) before the hash, so a hash that is ahead was read after a row that is
        # not; the next read has all of it.
        if h.get("status", status) not in b.TERMINAL:
            status = h.get("status", status)
        if h.get("stop") == b.CANCELLED and status not in b.TERMINAL:
            status = b.CANCELLING
        total = int(h.get("total") or total)
        completed = int(h.get("completed") or completed)
        failed = int(h.get("failed") or failed)
        for name in ("in_progress_at", "finalizing_at", "cancelling_at"):
            if h.get(name) and times[name] is None:
                times[name] = int(h[name]) // 1000
    errors = {"object": "list", "data": row.errors} if row.errors else None
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "model": row.model,
        "errors": errors,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": _epoch(row.created_at),
        "expires_at": _epoch(row.expires_at),
        **times,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": row.batch_metadata,
    }


async def _live(svc: Services, batch_ids: list[str]) -> list[dict[bytes, bytes]]:
    async def read() -> list[dict[bytes, bytes]]:
        async with svc.redis.pipeline(transaction=False) as pipe:
            for batch_id in batch_ids:
                pipe.hgetall(b.batch_key(batch_id))
            return list(await pipe.execute())

    return list(await redis_call(read))


async def _owned_batch(svc: Services, principal: Principal, batch_id: str) -> BatchRow:
    row = await get_batch(svc.db, batch_id) if b.is_batch_id(batch_id) else None
    if row is None or not (principal.is_admin or row.owner_key_id == principal.key_id):
        raise BatchNotFound(batch_id)
    return row


async def _replayed_batch(svc: Services, principal: Principal, batch_id: str) -> Response[bytes]:
    """The batch an `Idempotency-Key` is bound to, once the request that bound it has recorded
    it (a concurrent duplicate may ask first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPLAY_WAIT_S
    while True:
        row = await get_batch(svc.db, batch_id)
        if row is not None or loop.time() >= deadline:
            break
        await asyncio.sleep(REPLAY_POLL_S)
    if row is None or row.owner_key_id != principal.key_id:
        raise IdempotencyKeyReused(
            f"its batch {batch_id} is not (or no longer) kept; send a new key", status_code=409
        )
    live = None if row.status in b.TERMINAL else (await _live(svc, [row.id]))[0]
    return json_response(batch_object(row, live), headers=dict(REPLAYED))


@post(_paths("/batches"), status_code=200, opt=docs(body=CreateBatch, answers=oa.Batch))
async def create_batch(request: Request) -> Response[bytes]:
    """A batch of the requests in an uploaded file (`purpose=batch`): answered at once as
    `validating`; a batch worker validates the file and dispatches its lines. With an
    `Idempotency-Key`, the same request again within its lifetime is the first batch, and
    concurrent duplicates make one batch."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    once = await idempotency(request, principal.key_id, svc.settings.idempotency_ttl_s, scope="batch:")
    req = convert(decode_object(await request.body()), CreateBatch)
    if req.endpoint not in b.ENDPOINTS:
        raise InvalidRequest.field("endpoint", f"must be one of {', '.join(b.ENDPOINTS)}", req.endpoint[:100])
    if req.completion_window not in b.WINDOWS:
        raise InvalidRequest.field("completion_window", "must be 24h", req.completion_window[:100])
    try:
        file = await _owned_file(svc, principal, req.input_file_id)
    except FileNotFound:
        raise InvalidRequest.field("input_file_id", "no such file", req.input_file_id) from None
    if file.kind != "batch":
        raise InvalidRequest.field("input_file_id", "the file's purpose must be batch", req.input_file_id)
    now = now_ms()
    created = utcnow()
    expires_ms = now + int(svc.settings.batch_window_s * 1000)
    row = BatchRow(
        id=b.new_batch_id(now),
        owner_key_id=principal.key_id,
        endpoint=req.endpoint,
        input_file_id=file.id,
        completion_window=req.completion_window,
        status=b.VALIDATING,
        batch_metadata=req.metadata,
        files_base=svc.settings.public_base_url[:500],
        created_at=created,
        expires_at=created + timedelta(milliseconds=expires_ms - now),
    )
    hook = await request_webhook(request, principal, svc.settings)
    if once is not None:
        held = await claim(svc.redis, once, row.id)
        if held is not None:
            return await _replayed_batch(svc, principal, held)
    state: dict[str, Any] = {
        **({webhooks.WEBHOOK_FIELD: hook} if hook else {}),
        "owner": principal.key_id,
        "status": b.VALIDATING,
        "expires_at": expires_ms,
        "dispatched": 0,
        "completed": 0,
        "failed": 0,
        **b.control_fields(row.id, now),
    }

    async def start() -> None:
        """The live state, the dispatch job (now) and the expiry check (at the window's end), as
        one transaction: a batch either runs or never started."""
        async with svc.redis.pipeline(transaction=True) as tr:
            tr.hset(b.batch_key(row.id), mapping=state)
            for at in (now, expires_ms):
                b.add_control(tr, b.BATCH_DISPATCH, row.id, at, now)
            await tr.execute()

    try:
        await insert_batch(svc.db, row)
    except BaseException:
        if once is not None:
            with contextlib.suppress(Exception):
                await release(svc.redis, once, row.id)
        raise
    try:
        await redis_call(start)
    except ServiceUnavailable:
        if once is not None:  # the batch failed at once: a retry with the key may make a new one
            with contextlib.suppress(Exception):
                await release(svc.redis, once, row.id)
        with contextlib.suppress(Exception):
            errors = [
                {
                    "code": "service_unavailable",
                    "message": "the queue was unavailable",
                    "param": None,
                    "line": None,
                }
            ]
            await update_batch(svc.db, row.id, status=b.FAILED, errors=errors, failed_at=utcnow())
        raise
    return json_response(batch_object(row, None))


@get(_paths("/batches/{batch_id:str}"), opt=docs(answers=oa.Batch))
async def retrieve_batch(request: Request, batch_id: str) -> Response[bytes]:
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    row = await _owned_batch(svc, principal, batch_id)
    return json_response(await batch_view(svc, row))


@get(
    _paths("/batches"),
    opt=docs(answers=oa.BatchList, query={"limit": "1 to 100 (20)", "after": "a batch id"}),
)
async def list_batches_route(request: Request) -> Response[bytes]:
    """The key's batches, newest first, with OpenAI's `after` / `limit` cursor."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    limit = _int_param(request, "limit", 20, 1, 100)
    after = request.query_params.get("after") or None
    if after is not None and not b.is_batch_id(after):
        raise InvalidRequest.field("after", "must be a batch id this API returned", after[:100])
    rows = await list_batches(
        svc.db, None if principal.is_admin else principal.key_id, after=after, limit=limit + 1
    )
    page = rows[:limit]
    running = [r.id for r in page if r.status not in b.TERMINAL]
    live = dict(zip(running, await _live(svc, running), strict=True)) if running else {}
    data = [batch_object(r, live.get(r.id)) for r in page]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > limit,
        }
    )


@post(_paths("/batches/{batch_id:str}/cancel"), status_code=200, opt=docs(answers=oa.Batch))
async def cancel_batch(request: Request, batch_id: str) -> Response[bytes]:
    """Stop dispatching, cancel the lines still queued; the batch is `cancelling` until the
    lines already running finish, then `cancelled` with what finished in its files."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    row = await _owned_batch(svc, principal, batch_id)
    return json_response(await cancel_owned_batch(svc, row))


async def cancel_owned_batch(svc: Services, row: BatchRow) -> dict[str, Any]:
    """Cancel a batch its caller owns (the route above, and the dashboard's batch page); its
    Batch object after."""
    if row.status in b.TERMINAL:
        raise Conflict(f"cannot cancel a batch that is {row.status}", code="batch_not_cancellable")
    key = b.batch_key(row.id)
    now = now_ms()

    async def stop() -> list[Any]:
        async with svc.redis.pipeline(transaction=True) as tr:
            tr.hsetnx(key, "stop", b.CANCELLED)
            tr.hsetnx(key, "cancelling_at", str(now))
            tr.hget(key, "finalize_queued")
            return list(await tr.execute())

    _, _, finalizing = await redis_call(stop)
    if not finalizing:
        await update_batch(svc.db, row.id, status=b.CANCELLING, cancelling_at=utcnow())
        await redis_call(lambda: b.enqueue_control(svc.redis, b.BATCH_DISPATCH, row.id, now))
    fresh = await get_batch(svc.db, row.id)
    assert fresh is not None
    return await batch_view(svc, fresh)


async def batch_view(svc: Services, row: BatchRow) -> dict[str, Any]:
    """The Batch object of one row, with its live counters while it runs."""
    live = None if row.status in b.TERMINAL else (await _live(svc, [row.id]))[0]
    return batch_object(row, live)


router = Router(
    path="/",
    route_handlers=[
        upload_file,
        list_files,
        retrieve_file,
        file_content,
        delete_file,
        create_batch,
        retrieve_batch,
        list_batches_route,
        cancel_batch,
    ],
    exception_handlers=handlers_for(OPENAI),
)
