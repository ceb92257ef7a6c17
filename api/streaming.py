"""`"stream": true`: a chat job whose chunks reach the client as Server-Sent Events, in
OpenAI's `chat.completion.chunk` format, ending with `data: [DONE]`.

The job goes through the queue like any other (same admission, limits, credits and priority);
its worker relays the provider's chunks into the job's Redis stream and this process forwards
them as they arrive (`jobs.streams.StreamHub`). The answer's status is decided by the first
thing that happens: a chunk starts the 200 event stream; a job that fails before any chunk
is that failure's error status in the dialect's shape (as without `stream`); when the wait
bound (`Prefer: wait=N`, else the sync timeout) passes first, 202 with the job (on OpenAI's
routes without `Prefer: wait`: the bound is the job timeout + 5 s, then a 504 error). Once the
stream has started, a provider dying mid-way is an error event (`data: {"error": ...}` in the
dialect's error shape) and the end of the stream; a client that goes away cancels the job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from litestar import Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream
from litestar.types import Receive

from api.auth import Principal
from api.errors import CLOUDGPT, NATIVE, OPENAI, error_json
from api.idempotency import idempotency
from api.metadata import request_metadata
from api.state import Services
from api.submit import accepted, admit_and_enqueue, job_error, sync_wait, wants_batch
from api.webhooks import request_webhook
from jobs.kinds import CHAT_COMPLETION
from jobs.records import SUCCEEDED, JobRecord
from jobs.streams import CHUNK, END, ERROR, Entry, Finished, Subscription
from switchyard.errors import InvalidRequest, ProviderFailed, StillRunning, SwitchyardError

log = logging.getLogger("switchyard.api")

# The dialects whose documents offer `stream`; the credits dialect's body (credits fields) has
# no chunked form.
STREAM_DIALECTS = frozenset({NATIVE, OPENAI, CLOUDGPT})
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_background: set[asyncio.Task[Any]] = set()  # cancellations of abandoned streams, in flight


def event(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


async def stream_chat(
    request: Request,
    svc: Services,
    *,
    principal: Principal,
    dialect: str,
    payload: dict[str, Any] | Any,
    reserve_tokens: int,
    include_usage: bool,
    kind: str = CHAT_COMPLETION,
    model: str | None = None,  # the job's model when not the payload's (a persona's "@org/name")
) -> Response[Any]:
    """Enqueue a streamed chat job and answer with its event stream (see the module's doc)."""
    if dialect not in STREAM_DIALECTS:
        raise InvalidRequest.field("stream", "this route does not stream; send stream=false", True)
    if wants_batch(request):
        raise InvalidRequest.field(
            "stream", "a batch job cannot stream: send stream=false with ?batch=1, or drop ?batch=1", True
        )
    record, headers, following = await admit_and_enqueue(
        svc,
        principal=principal,
        kind=kind,
        payload={**payload, "stream": True},
        dialect=dialect,
        model=model or payload.get("model"),
        modality="chat",
        reserve_tokens=reserve_tokens,
        batch=False,
        metadata=await request_metadata(request),
        once=await idempotency(request, principal.key_id, svc.settings.idempotency_ttl_s),
        webhook=await request_webhook(request, principal, svc.settings),
    )
    headers = {"x-job-id": record.id, **headers}
    if record.done:  # a replay (Idempotency-Key) of a streamed job that is over
        if record.status != SUCCEEDED:
            failed = job_error(record)
            failed.headers.update(headers)
            raise failed
        return _stream(completion_events(record, include_usage), headers)
    forwarder = Forwarder(svc, record, dialect, include_usage, following)
    bound, past_bound_is_error = sync_wait(request, svc.settings, dialect)
    try:
        await forwarder.start()
        first = await forwarder.first(bound, request.receive)
    except BaseException:
        forwarder.close(cancel_job=True)
        raise
    if first is None:  # the wait bound passed: the job goes on and can be polled
        forwarder.close(cancel_job=False)
        if past_bound_is_error:  # an OpenAI client: a 504 before the first chunk, not a 202
            still = StillRunning(record.id, bound)
            still.headers.update(headers)
            raise still
        return accepted(await svc.jobs.get(record.id, principal.key_id), headers)
    if not isinstance(first, Entry | Finished):  # GONE
        forwarder.close(cancel_job=True)
        return Response(b"", status_code=499)
    if isinstance(first, Finished) or (isinstance(first, Entry) and first.kind == ERROR):
        # Over before any chunk: answered as the same call without `stream` would be.
        forwarder.close(cancel_job=False)
        err = await forwarder.failure(first)
        if err is not None:
            err.headers.update(headers)
            raise err
        assert isinstance(first, Finished) and first.record is not None
        return _stream(completion_events(first.record, include_usage), headers)
    # The background task runs once the response is over, however it ended: a client that left
    # before the events began cancels the job too.
    return _stream(forwarder.events(first), headers, BackgroundTask(forwarder.response_over))


def _stream(
    events: AsyncIterator[bytes], headers: dict[str, str], background: BackgroundTask | None = None
) -> Stream:
    return Stream(
        events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}, background=background
    )


GONE = object()  # the client disconnected


class Forwarder:
    """One streamed job seen from the web process: its subscription and its completion."""

    def __init__(
        self,
        svc: Services,
        record: JobRecord,
        dialect: str,
        include_usage: bool,
        following: asyncio.Future[JobRecord | None] | None = None,
    ) -> None:
        self.svc = svc
        self.record = record
        # a replay (Idempotency-Key) follows a job another request submitted: it reads the
        # stream from its first entry, and never cancels that request's job when it leaves
        self.following = following
        self.dialect = dialect
        self.include_usage = include_usage
        self.sub: Subscription | None = None
        self.closed = False
        self.ended = False  # the client got the whole stream (its end or its error)

    async def start(self) -> None:
        self.sub = await self.svc.streams.subscribe(self.record.id)
        sub = self.sub
        # a record the listener could not read finishes the stream without one: the job is then
        # read again (`failure`), and its error says what is wrong with it
        outcome = self.following or self.svc.jobs.outcome(self.record.id)
        outcome.add_done_callback(
            lambda fut: sub.finish(None if fut.cancelled() or fut.exception() else fut.result())
        )

    async def next(self) -> Entry | Finished:
        assert self.sub is not None
        return await self.sub.next(self.svc.redis)

    async def first(self, timeout: float, receive: Receive) -> Entry | Finished | object | None:
        """The first entry or the job's end; GONE when the client left first, None on timeout."""
        item = asyncio.ensure_future(self.next())
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            done, _ = await asyncio.wait({item, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not item.done():
                item.cancel()
        if item in done:
            return item.result()
        return GONE if gone in done else None

    async def failure(self, item: Entry | Finished) -> SwitchyardError | None:
        """What a failed end means to the client; None when the job succeeded."""
        if isinstance(item, Entry):
            body = orjson.loads(item.data)
            err: SwitchyardError = ProviderFailed(str(body.get("message") or "the provider failed"))
            err.status_code = int(body.get("status") or 502)
            err.error_type = err.code = str(body.get("type") or err.error_type)
            return err
        record = item.record or await self.svc.jobs.get(self.record.id, self.record.owner)
        item.record = record
        return None if record.status == SUCCEEDED else job_error(record)

    async def events(self, first: Entry | Finished) -> AsyncIterator[bytes]:
        try:
            assert self.sub is not None
            item: Entry | Finished | None = first
            while True:
                if item is None:
                    item = await self.next()
                if isinstance(item, Entry) and item.kind == CHUNK:
                    # What has arrived together goes out together (one write to the client).
                    parts = [event(item.data)]
                    item = self.sub.pop_ready()
                    while item is not None and item.kind == CHUNK:
                        parts.append(event(item.data))
                        item = self.sub.pop_ready()
                    yield b"".join(parts)
                    continue
                if isinstance(item, Entry) and item.kind == END:
                    self.ended = True
                    yield (event(item.data) if self.include_usage else b"") + DONE
                    return
                if isinstance(item, Finished) or item.kind == ERROR:
                    err = await self.failure(item)
                    self.ended = True
                    # A job that succeeded without an end entry (its stream expired): done.
                    yield DONE if err is None else event(error_json(self.dialect, err))
                    return
                item = None  # an entry of a kind this process does not know: skipped
        finally:
            self.close(cancel_job=not self.ended)

    async def response_over(self) -> None:
        self.close(cancel_job=not self.ended)

    def close(self, *, cancel_job: bool) -> None:
        """Stop forwarding; with `cancel_job` (the client left) the job is canceled."""
        if self.closed:
            return
        self.closed = True
        if self.sub is not None:
            self.svc.streams.unsubscribe(self.sub)
        if self.following is not None:
            self.svc.jobs.unfollow(self.record.id, self.following)
            cancel_job = False
        else:
            self.svc.jobs.release(self.record.id)
        if cancel_job:
            # Often called from a canceled task (the client went away): the cancellation runs
            # as a task of its own so that it is not canceled with it.
            task = asyncio.get_running_loop().create_task(self._cancel())
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def _cancel(self) -> None:
        try:
            await self.svc.jobs.cancel(self.record.id, self.record.owner)
        except SwitchyardError as exc:
            log.warning("could not cancel job %s of a client that left: %s", self.record.id, exc)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def completion_events(record: JobRecord, include_usage: bool) -> AsyncIterator[bytes]:
    """A finished job's completion as a stream (its chunks were not kept): one chunk per choice,
    then the usage chunk when asked for, then [DONE]."""
    completion: dict[str, Any] = record.result or {}
    head = {
        "id": completion.get("id") or "chatcmpl-" + record.id,
        "object": "chat.completion.chunk",
        "created": completion.get("created") or record.created_ms // 1000,
        "model": record.model or completion.get("model"),
    }
    for i, choice in enumerate(completion.get("choices") or []):
        delta = dict(choice.get("message") or {})
        index = choice.get("index", i)
        yield event(
            orjson.dumps({**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        )
        finish = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
        yield event(orjson.dumps({**head, "choices": [finish]}))
    if include_usage:
        yield event(orjson.dumps({**head, "choices": [], "usage": completion.get("usage")}))
    yield DONE
