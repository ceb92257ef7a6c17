"""The OpenAI Batch API's batches as jobs: the Redis keys a batch lives under, the reading of its
input file's lines into ordinary jobs, the control jobs that move it along, and the lines of its
output and error files.

A batch is a row in the database (`storage.batches`) and, while it runs, a hash in Redis
(`sy:batch:<id>`: status, counters, where dispatching got to). Two job kinds on the batch queue
move it: `batch_dispatch` validates the input file and enqueues its lines as ordinary
batch-priority jobs, a chunk at a time, admitted against the key's limits as they go (it stops
and re-schedules itself when they say wait); `batch_finalize` writes the output and error
files once every dispatched line finished. Lines are counted as they finish by the worker's
FINISH script (`jobs.scripts.FINISH_BATCH`), exactly once each, and the finish that completes a
batch enqueues its finalize job in the same script: nobody polls.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from jobs import queues
from jobs.client import job_body, new_job_id
from jobs.kinds import CHAT_COMPLETION, EMBEDDING, IMAGE_GENERATION
from jobs.records import CANCELED, SUCCEEDED, JobRecord, now_ms
from jobs.token_estimate import chat_prompt_tokens, input_tokens

BATCH_DISPATCH = "batch_dispatch"  # payload: {"batch_id"}
BATCH_FINALIZE = "batch_finalize"  # payload: {"batch_id"}
CONTROL_KINDS = (BATCH_DISPATCH, BATCH_FINALIZE)

# The statuses OpenAI documents, in the order a batch may go through them.
VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED = "validating", "in_progress", "finalizing", "completed"
FAILED, EXPIRED, CANCELLING, CANCELLED = "failed", "expired", "cancelling", "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, EXPIRED, CANCELLED})

BATCH_ID_PREFIX = "batch_"
WINDOWS = ("24h",)
MAX_LINE_BYTES = 16 * 1024 * 1024  # one request; a longer line fails the batch
MAX_ERRORS = 100  # validation errors reported per batch
MAX_CUSTOM_ID = 512


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: str
    modality: str
    needs_model: bool


ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint(CHAT_COMPLETION, "chat", True),
    "/v1/embeddings": Endpoint(EMBEDDING, "chat", True),
    "/v1/images/generations": Endpoint(IMAGE_GENERATION, "image", False),
}


def batch_key(batch_id: str) -> str:
    return "sy:batch:" + batch_id


def done_key(batch_id: str) -> str:
    """List of "job_id custom_id": the lines that finished, in the order they did."""
    return batch_key(batch_id) + ":done"


def jobs_key(batch_id: str) -> str:
    """List of the job ids dispatched, for a cancel to find the ones still queued."""
    return batch_key(batch_id) + ":jobs"


def lost_key(batch_id: str) -> str:
    """Set of dispatched job ids whose state Redis no longer holds (they cannot finish)."""
    return batch_key(batch_id) + ":lost"


def lock_key(batch_id: str) -> str:
    return batch_key(batch_id) + ":lock"


def new_batch_id(created_ms: int) -> str:
    return BATCH_ID_PREFIX + new_job_id(created_ms)


def is_batch_id(value: str) -> bool:
    rest = value.removeprefix(BATCH_ID_PREFIX)
    return (
        value.startswith(BATCH_ID_PREFIX) and len(rest) == 32 and all(c in "0123456789abcdef" for c in rest)
    )


def add_control(tr: Any, kind: str, batch_id: str, at_ms: int, now: int) -> str:
    """Add to a pipeline what puts a control job of this batch on the batch queue. One due now
    goes in at score 0, ahead of the batch work already queued (a cancel must not wait behind
    the lines it cancels); a later one at its time, its body kept until then. It has no job
    state of its own (no owner sees it, nothing persists it)."""
    job_id = new_job_id(now)
    body = job_body(kind, job_id, {"batch_id": batch_id}, now)
    tr.set(queues.JOB_KEY + job_id, body, px=max(at_ms - now, 0) + queues.ARQ_JOB_TTL_MS)
    tr.zadd(queues.queue_name(queues.BATCH), {job_id: 0 if at_ms <= now else at_ms})
    tr.publish(queues.wake_channel(queues.BATCH), b"")
    return job_id


async def enqueue_control(redis: Redis, kind: str, batch_id: str, at_ms: int) -> str:
    """`add_control` on its own."""
    async with redis.pipeline(transaction=True) as tr:
        job_id = add_control(tr, kind, batch_id, at_ms, now_ms())
        await tr.execute()
    return job_id


def control_fields(batch_id: str, now: int) -> dict[str, bytes | str]:
    """The batch hash's fields that let the FINISH script enqueue its finalize job, and the
    dispatch job that stops it when a line finishes past its window."""
    fields: dict[str, bytes | str] = {}
    for which, kind in (("finalize", BATCH_FINALIZE), ("expire", BATCH_DISPATCH)):
        job_id = new_job_id(now)
        fields[which + "_id"] = job_id
        fields[which + "_body"] = job_body(kind, job_id, {"batch_id": batch_id}, now)
    return fields


# --- the input file, line by line ---------------------------------------------------------------
class LineError(Exception):
    """What is wrong with one line of an input file (OpenAI's `errors.data` entry)."""

    def __init__(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.line, self.param = code, message, line, param

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based, as an editor counts them
    start: int  # byte offset of the line in the file
    end: int  # byte offset just past its newline
    raw: bytes


async def read_lines(
    chunks: AsyncIterator[bytes], *, start: int = 0, first_line: int = 1
) -> AsyncGenerator[Line, None]:
    """The non-blank lines of a file read from byte `start` (the beginning of line `first_line`),
    never more than one line and one chunk in memory. A line longer than MAX_LINE_BYTES raises
    LineError."""
    buffer = bytearray()
    offset, number = start, first_line
    async for chunk in chunks:
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                if len(buffer) > MAX_LINE_BYTES:
                    raise LineError("line_too_long", f"a line is longer than {MAX_LINE_BYTES} bytes", number)
                break
            raw = bytes(buffer[:cut])
            del buffer[: cut + 1]
            if raw.strip():
                yield Line(number, offset, offset + cut + 1, raw)
            offset += cut + 1
            number += 1
    if buffer.strip():
        yield Line(number, offset, offset + len(buffer), bytes(buffer))


@dataclass(frozen=True, slots=True)
class Request:
    """One line of an input file, read: what its job will be."""

    custom_id: str
    kind: str
    modality: str
    model: str | None  # None: an image line that names none (the catalog's first image model)
    body: dict[str, Any]
    max_tokens: int  # what the line asks of the reply (0: not said), for the key's per-request cap
    reserve_tokens: int  # what admission reserves: as the synchronous route does


def custom_id_digest(custom_id: str) -> bytes:
    """What the duplicate check keeps of a custom_id: 16 bytes, however long the id."""
    return hashlib.blake2b(custom_id.encode(), digest_size=16).digest()


def _bad(line: int, param: str, reason: str) -> LineError:
    return LineError("invalid_request", f"line {line}: {param} {reason}", line, param)


def parse_line(line: Line, endpoint: str, *, estimate: bool = True) -> Request:
    """One line as OpenAI's Batch API takes it: `{"custom_id", "method": "POST", "url", "body"}`
    with `url` the batch's endpoint. Raises LineError naming the line. Without `estimate` its
    `reserve_tokens` is 0: validating a line does not need them (most of a chat line's cost)."""
    n = line.number
    try:
        raw = orjson.loads(line.raw)
    except orjson.JSONDecodeError:
        raise LineError("invalid_json_line", f"line {n} is not parseable as valid JSON", n) from None
    if not isinstance(raw, dict):
        raise LineError("invalid_json_line", f"line {n} is JSON but not an object", n)
    custom_id = raw.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _bad(n, "custom_id", "is required: a non-empty string")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise _bad(n, "custom_id", f"must be at most {MAX_CUSTOM_ID} characters")
    if raw.get("method") != "POST":
        raise _bad(n, "method", "must be POST")
    url = raw.get("url")
    if url != endpoint:
        raise LineError(
            "url_mismatch",
            f"line {n}: url {str(url)[:100]!r} does not match the batch's endpoint {endpoint}",
            n,
            "url",
        )
    body = raw.get("body")
    if not isinstance(body, dict):
        raise _bad(n, "body", "is required: a JSON object")
    spec = ENDPOINTS[endpoint]
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise _bad(n, "body.model", "must be a non-empty string")
    if spec.needs_model and model is None:
        raise _bad(n, "body.model", "is required")
    if body.get("stream"):
        raise _bad(n, "body.stream", "is not supported in a batch")
    max_tokens, reserve = 0, 0
    if spec.kind == CHAT_COMPLETION:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad(n, "body.messages", "is required: a non-empty array")
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
                    raise _bad(n, f"body.{name}", "must be an integer from 1 to 10000000")
                max_tokens = max_tokens or value
        if "stream" in body or "stream_options" in body:
            body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        reserve = chat_prompt_tokens(body) + max_tokens if estimate else 0
    elif spec.kind == EMBEDDING:
        value = body.get("input")
        if not (isinstance(value, str) and value.strip()) and not (isinstance(value, list) and value):
            raise _bad(n, "body.input", "is required: a non-empty string or array")
        reserve = input_tokens(value) if estimate else 0
    else:
        _check_image(n, body)
    return Request(custom_id, spec.kind, spec.modality, model, body, max_tokens, reserve)


IMAGE_SIZES = frozenset(
    {"256x256", "512x512", "1024x1024", "1024x1792", "1792x1024", "1536x1024", "1024x1536", "auto"}
)


def _check_image(n: int, body: dict[str, Any]) -> None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 4000:
        raise _bad(n, "body.prompt", "is required: a non-blank string of at most 4000 characters")
    if body.get("size", "1024x1024") not in IMAGE_SIZES:
        raise _bad(n, "body.size", f"must be one of {', '.join(sorted(IMAGE_SIZES))}")
    count = body.get("n", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10:
        raise _bad(n, "body.n", "must be an integer from 1 to 10")
    if body.get("response_format", "url") not in ("url", "b64_json"):
        raise _bad(n, "body.response_format", "must be url or b64_json")
    if body.get("output_format", "png") not in ("png", "jpeg", "webp"):
        raise _bad(n, "body.output_format", "must be png, jpeg or webp")
    compression = body.get("output_compression")
    if compression is not None and (
        isinstance(compression, bool) or not isinstance(compression, int) or not 1 <= compression <= 100
    ):
        raise _bad(n, "body.output_compression", "must be an integer from 1 to 100")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise _bad(n, "body.seed", "must be an integer from 0 to 4294967295")


def job_payload(request: Request, model: str, files_base: str | None) -> dict[str, Any]:
    """The payload of the ordinary job a line becomes (jobs.kinds), as the synchronous OpenAI
    route would have enqueued it."""
    if request.kind != IMAGE_GENERATION:
        return {"model": model, "request": {**request.body, "model": model}}
    body = request.body
    size = body.get("size", "1024x1024")
    width, _, height = ("1024x1024" if size == "auto" else size).partition("x")
    options = {k: body.get(k) for k in ("quality", "style", "background", "moderation", "user")}
    payload: dict[str, Any] = {
        "model": model,
        "prompt": body["prompt"],
        "width": int(width),
        "height": int(height),
        "n": body.get("n", 1),
        "format": body.get("output_format", "png"),
        "quality": body.get("output_compression"),
        "seed": body.get("seed"),
        "response_format": body.get("response_format", "url"),
        "options": {k: v for k, v in options.items() if v is not None},
    }
    if files_base:
        payload["files_base"] = files_base
    return payload


# --- the output and error files -------------------------------------------------------------------
def response_body(record: JobRecord) -> dict[str, Any]:
    """A succeeded line's body: what the synchronous OpenAI route answers (api/results.py's
    OpenAI shapes, which this module cannot import)."""
    result: dict[str, Any] = dict(record.result or {})
    if record.kind == CHAT_COMPLETION:
        result.setdefault("object", "chat.completion")
        result.setdefault("id", "chatcmpl-" + record.id)
        result.setdefault("created", record.created_ms // 1000)
        if record.model:
            result["model"] = record.model
        return result
    if record.kind == EMBEDDING:
        if record.model:
            result["model"] = record.model
        return result
    fmt = str(result.get("response_format") or "url")
    data = []
    for entry in result.get("images") or []:
        ref = (
            {"b64_json": entry["b64"]}
            if fmt == "b64_json" and entry.get("b64") is not None
            else {"url": entry.get("url")}
        )
        data.append({**ref, "revised_prompt": entry.get("revised_prompt")})
    return {"created": result.get("created"), "data": data}


def output_line(record: JobRecord, custom_id: str, stopped: str | None) -> tuple[bool, bytes]:
    """`(is_output, JSONL line)` for one finished line in OpenAI's format. A succeeded line goes
    to the output file; a failed one to the error file with the HTTP answer it would have had,
    and one canceled before it ran (the batch was cancelled or expired) with `error` only."""
    line_id = "batch_req_" + record.id
    if record.status == SUCCEEDED:
        response = {"status_code": 200, "request_id": record.id, "body": response_body(record)}
        return True, orjson.dumps(
            {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
        )
    if record.status == CANCELED and stopped is not None and not record.started_ms:
        return False, not_run_line(custom_id, stopped, line_id)
    error = {
        "message": record.error_message or "the request failed",
        "type": record.error_type or "provider_error",
        "code": record.error_type or "provider_error",
        "param": None,
    }
    response = {"status_code": record.error_status or 500, "request_id": record.id, "body": {"error": error}}
    return False, orjson.dumps({"id": line_id, "custom_id": custom_id, "response": response, "error": None})


def not_run_line(custom_id: str, stopped: str, line_id: str | None = None) -> bytes:
    """The error-file line of a request the batch never ran (it was cancelled or expired)."""
    code = "batch_expired" if stopped == EXPIRED else "batch_cancelled"
    message = (
        "This request could not be executed before the completion window expired."
        if stopped == EXPIRED
        else "This request was not executed because the batch was cancelled."
    )
    return orjson.dumps(
        {
            "id": line_id or "batch_req_" + custom_id_digest(custom_id).hex(),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )
