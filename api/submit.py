"""Turning a validated request into a job, and the job into the response: wait, or 202."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from litestar import Request, Response

from api.auth import Principal
from api.errors import OPENAI, TITLES
from api.idempotency import REPLAYED, idempotency
from api.metadata import request_metadata
from api.responses import json_response
from api.results import result_body
from api.state import Services
from api.webhooks import request_webhook
from jobs.client import Once
from jobs.queues import BATCH, DEFAULT_LANE, INTERACTIVE
from jobs.records import SUCCEEDED, JobRecord, iso
from jobs.webhooks import WEBHOOK_FIELD
from switchyard.errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    JobCanceled,
    JobNotFound,
    JobTimedOut,
    ProviderFailed,
    StillRunning,
    SwitchyardError,
    Unauthorized,
)
from switchyard.settings import Settings

_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
MAX_WAIT_S = 3600.0
# How much longer than the job timeout an OpenAI-route call waits (queueing, notification).
OPENAI_WAIT_MARGIN_S = 5.0


def wants_batch(request: Request) -> bool:
    value = request.query_params.get("batch")
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no", ""):
        return False
    raise InvalidRequest.field("batch", "must be 1 or 0", value)


def prefer_wait(request: Request) -> float | None:
    """The caller's own wait bound (`Prefer: wait=N`), if it gave one."""
    prefer = request.headers.get("prefer")
    if prefer:
        m = _PREFER_WAIT.search(prefer)
        if m:
            return min(float(m.group(1)), MAX_WAIT_S)
    return None


def wait_bound(request: Request, default: float) -> float:
    prefer = prefer_wait(request)
    return default if prefer is None else prefer


def sync_wait(request: Request, settings: Settings, dialect: str) -> tuple[float, bool]:
    """How long a synchronous call waits for its job, and whether passing that bound is an
    error (True) rather than a 202 with the job.

    OpenAI's clients read a 202 job body as an empty completion (the official SDK gives
    `choices=None`, a stream yields nothing), so OpenAI's routes wait as long as the job may
    take (the job timeout, plus a margin) and then answer a 504 in OpenAI's shape carrying the
    job id, unless the caller asked for a bound of its own with `Prefer: wait=N`.
    """
    prefer = prefer_wait(request)
    if prefer is not None:
        return prefer, False
    if dialect == OPENAI:
        return settings.job_timeout_s + OPENAI_WAIT_MARGIN_S, True
    return settings.sync_timeout_s, False


def job_links(record: JobRecord) -> dict[str, str]:
    url = f"/api/v1/jobs/{record.id}"
    return {"self": url, "cancel": url}


def _error_view(record: JobRecord) -> dict[str, Any] | None:
    if record.error_type or record.error_message:
        return {"type": record.error_type, "message": record.error_message}
    return None


def job_view(record: JobRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "job",
        "kind": record.kind,
        "status": record.status,
        "priority": record.priority,
        "model": record.model,
        "created_at": iso(record.created_ms),
        "started_at": iso(record.started_ms),
        "finished_at": iso(record.finished_ms),
        "attempts": record.attempts,
        "credits_charged": record.credits_charged,
        "provider": record.provider,
        "result": result_body(record) if record.status == SUCCEEDED else None,
        "error": _error_view(record),
        "progress": record.progress,
        "metadata": record.metadata or {},
        "links": job_links(record),
    }


def _seconds(ms: int | None) -> int | None:
    return None if ms is None else ms // 1000


def openai_job(record: JobRecord) -> dict[str, Any]:
    """A job as OpenAI spells its own long-running objects (batches, fine-tuning jobs): flat,
    `object` naming the type, Unix-second timestamps, `error` null until it failed."""
    return {
        "id": record.id,
        "object": "job",
        "kind": record.kind,
        "status": record.status,
        "priority": record.priority,
        "model": record.model,
        "created_at": _seconds(record.created_ms),
        "started_at": _seconds(record.started_ms),
        "finished_at": _seconds(record.finished_ms),
        "error": _error_view(record),
        "result": result_body(record) if record.status == SUCCEEDED else None,
        "metadata": record.metadata or {},
        "url": job_links(record)["self"],
    }


def accepted(record: JobRecord, headers: dict[str, str] | None = None) -> Response[bytes]:
    poll_url = job_links(record)["self"]
    headers = {"location": poll_url, **(headers or {})}
    if record.dialect == OPENAI:
        return json_response(openai_job(record), 202, headers=headers)
    data = {"job_id": record.id, "status": record.status, "poll_url": poll_url, "job": job_view(record)}
    return json_response({"success": True, "data": data}, 202, headers=headers)


_ERRORS: dict[str, type[SwitchyardError]] = {"timeout": JobTimedOut, "canceled": JobCanceled}


def job_error(record: JobRecord) -> SwitchyardError:
    """A failed job's reason as the domain error a synchronous caller receives."""
    cls = _ERRORS.get(record.error_type or "", ProviderFailed)
    err = cls(record.error_message or "the job failed")
    if record.error_status and record.error_status != err.status_code:
        err.status_code = record.error_status  # e.g. a media URL that answered 404
        err.title = TITLES.get(err.status_code, err.title)
    err.error_type = err.code = record.error_type or err.error_type
    err.headers = {"x-job-id": record.id}
    return err


async def admit_and_enqueue(
    svc: Services,
    *,
    principal: Principal,
    kind: str,
    payload: dict[str, Any],
    dialect: str,
    model: str | None,
    modality: str,
    reserve_tokens: int,
    batch: bool,
    lane: str = DEFAULT_LANE,
    metadata: dict[str, str] | None = None,
    once: Once | None = None,
    webhook: str | None = None,
) -> tuple[JobRecord, dict[str, str], asyncio.Future[JobRecord | None] | None]:
    """Admit against the key's limits and credits and enqueue (a caller that does not submit
    with `?batch=1` is notified when the job finishes); the job and its rate-limit headers.
    A refusal raises its 402 or 429.

    With `once` (an `Idempotency-Key`) already bound to a job: that job, `REPLAYED` as the
    headers (nothing admitted or charged) and, when the caller waits and the job is not over,
    the future of its end (`JobClient.wait(following=)`); else the future is None."""
    plan = svc.accounts.plan(principal, modality=modality, reserve_tokens=reserve_tokens, batch=batch)
    for attempt in range(2):
        record, verdict = await svc.jobs.enqueue(
            kind,
            payload,
            priority=BATCH if batch else INTERACTIVE,
            owner=principal.key_id,
            dialect=dialect,
            model=model,
            credits_charged=plan.price,
            notify=not batch,
            admission=plan.args,
            lane=lane,
            metadata=metadata,
            once=once,
            extra={WEBHOOK_FIELD: webhook} if webhook else None,
        )
        if record is not None:
            break
        if verdict[0] == b"replay":
            return await _replay(svc, principal, verdict[1], verdict[2], once, notify=not batch)
        if verdict[0] == b"credits_unknown" and attempt == 0:
            await svc.accounts.seed_balance(principal)
            continue
        svc.accounts.refuse(plan, verdict)
    assert record is not None
    return record, plan.admitted_headers(verdict, record.limits_remaining), None


async def _replay(
    svc: Services, principal: Principal, job_id: str, fingerprint: str, once: Once | None, *, notify: bool
) -> tuple[JobRecord, dict[str, str], asyncio.Future[JobRecord | None] | None]:
    assert once is not None
    if fingerprint != once.fingerprint:
        raise IdempotencyKeyReused(
            "was used with another request (route, query or body) within its lifetime; send a new"
            " key for a new request"
        )
    try:
        record, following = await svc.jobs.follow(job_id, principal.key_id, notify=notify)
    except JobNotFound:
        raise IdempotencyKeyReused(
            f"its job {job_id} is no longer kept; send a new key", status_code=409
        ) from None
    return record, dict(REPLAYED), following


async def submit(
    request: Request,
    svc: Services,
    *,
    principal: Principal,
    kind: str,
    payload: dict[str, Any],
    dialect: str,
    model: str | None,
    modality: str = "chat",
    reserve_tokens: int = 0,
    lane: str = DEFAULT_LANE,
) -> tuple[JobRecord | Response[bytes], dict[str, str]]:
    """Admit against the key's limits and credits, enqueue; with `?batch=1` answer 202 now,
    else wait for the finished job.

    Returns the finished record for the route to render (or a ready 202 when the wait bound
    passed: the job goes on and can be polled), and the rate-limit headers for the response.
    A failed job raises its error.
    """
    batch = wants_batch(request)
    if batch and principal.anonymous:
        raise Unauthorized("?batch=1 needs an API key: a caller without one could not poll its job")
    record, headers, following = await admit_and_enqueue(
        svc,
        principal=principal,
        kind=kind,
        payload=payload,
        dialect=dialect,
        model=model,
        modality=modality,
        reserve_tokens=reserve_tokens,
        batch=batch,
        lane=lane,
        metadata=await request_metadata(request),
        once=await idempotency(request, principal.key_id, svc.settings.idempotency_ttl_s),
        webhook=await request_webhook(request, principal, svc.settings),
    )
    if batch:
        return accepted(record, headers), headers
    bound, past_bound_is_error = sync_wait(request, svc.settings, dialect)
    # a replay of a job that is already over: answered as the first call was
    done = record if record.done else await svc.jobs.wait(record, bound, following=following)
    if done is None:
        if past_bound_is_error:
            still = StillRunning(record.id, bound)
            still.headers.update(headers)
            raise still
        return accepted(await svc.jobs.get(record.id, principal.key_id), headers), headers
    if done.status != SUCCEEDED:
        err = job_error(done)
        err.headers.update(headers)
        raise err
    return done, headers
