"""/jobs and /jobs/{id}: the user's jobs over all their keys (the admin: everyone's), filtered
by status, kind and model, paged; a job's detail with its result or error and a cancel button.
/batches and /batches/{id}: the user's OpenAI-Batch-API batches, a batch's progress kept live by
app.js polling /batches/{id}/progress, and a cancel button."""

from __future__ import annotations

from litestar import Request, Response, get, post
from litestar.response import Redirect, Template

from api.auth import ADMIN
from api.dialects.batches import batch_view, cancel_owned_batch
from api.pages.common import page, signed_in
from api.responses import json_response
from api.sessions import Session
from api.state import Services, services
from api.submit import job_view
from jobs import batches as b
from jobs.client import encode_cursor
from jobs.kinds import (
    CHAT_COMPLETION,
    EMBEDDING,
    IMAGE_GENERATION,
    LYRICS_SEARCH,
    MEDIA_DOWNLOAD,
    MEDIA_INFO,
    MOVIES,
    VIDEO_GENERATION,
)
from jobs.records import STATUSES, TERMINAL, JobRecord
from storage.batches import get_batch, list_batches
from storage.keys import list_keys
from storage.models import BatchRow
from switchyard.errors import BatchNotFound, InvalidRequest

PAGE = 20
MAX_ROUNDS = 5  # pages scanned for one page of a kind/model filter (the store filters by status only)
KINDS = (CHAT_COMPLETION, EMBEDDING, IMAGE_GENERATION, VIDEO_GENERATION, MEDIA_DOWNLOAD, MEDIA_INFO,
         LYRICS_SEARCH, MOVIES)  # fmt: skip


async def _owners(svc: Services, session: Session) -> list[str]:
    """The keys whose jobs the user sees: their own, every key (and the admin key's) for an admin."""
    if session.user.is_admin:
        return [k.id for k in await list_keys(svc.db)] + [ADMIN]
    return [k.id for k in await list_keys(svc.db, session.user.id)]


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and len(value) > 200:
        raise InvalidRequest.field(name, "must be at most 200 characters", value[:100])
    return value


async def user_jobs(
    svc: Services,
    owners: list[str],
    *,
    status: str | None,
    kind: str | None,
    model: str | None,
    cursor: str | None,
    limit: int = PAGE,
) -> tuple[list[JobRecord], str | None]:
    """One page of the owners' jobs, newest first. Each round takes every owner's next page:
    the merged first `limit` are the next `limit` of all, in order; kind and model filter them."""
    found: list[JobRecord] = []
    last: JobRecord | None = None
    exhausted = not owners
    for _ in range(MAX_ROUNDS):
        if exhausted or len(found) > limit:
            break
        merged: list[JobRecord] = []
        more = False
        for owner in owners:
            records, next_cursor = await svc.jobs.list(owner, status=status, cursor=cursor, limit=limit)
            merged += records
            more = more or next_cursor is not None
        merged.sort(key=lambda r: (r.created_ms, r.id), reverse=True)
        scanned = merged[:limit]
        exhausted = not more and len(merged) <= limit
        found += [
            r for r in scanned if (kind is None or r.kind == kind) and (model is None or r.model == model)
        ]
        if scanned:
            last = scanned[-1]
            cursor = encode_cursor(last)
        else:
            exhausted = True
    page_ = found[:limit]
    if len(found) > limit:
        return page_, encode_cursor(page_[-1])
    return page_, (encode_cursor(last) if not exhausted and last is not None else None)


@get("/jobs", include_in_schema=False)
async def jobs_page(request: Request) -> Template:
    session = await signed_in(request)
    svc = services(request)
    status = _text_param(request, "status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest.field("status", f"must be one of {', '.join(STATUSES)}", status)
    kind, model = _text_param(request, "kind"), _text_param(request, "model")
    cursor = _text_param(request, "cursor")
    records, next_cursor = await user_jobs(
        svc, await _owners(svc, session), status=status, kind=kind, model=model, cursor=cursor
    )
    return page(
        request, "jobs.html", session,
        jobs=[job_view(r) for r in records], next_cursor=next_cursor, paged=cursor is not None,
        status_filter=status or "", kind=kind or "", model=model or "", statuses=STATUSES, kinds=KINDS,
    )  # fmt: skip


@get("/jobs/{job_id:str}", include_in_schema=False)
async def job_page(request: Request, job_id: str) -> Template:
    session = await signed_in(request)
    svc = services(request)
    owner = None if session.user.is_admin else frozenset(await _owners(svc, session))
    record = await svc.jobs.get(job_id[:100], owner)
    return page(request, "job.html", session, job=job_view(record), cancellable=record.status not in TERMINAL)


@post("/jobs/{job_id:str}/cancel", include_in_schema=False, status_code=303)
async def cancel_job_form(request: Request, job_id: str) -> Redirect:
    session = await signed_in(request)
    svc = services(request)
    owner = None if session.user.is_admin else frozenset(await _owners(svc, session))
    record = await svc.jobs.cancel(job_id[:100], owner)
    return Redirect(f"/jobs/{record.id}", status_code=303)


async def _owned_batch(svc: Services, session: Session, batch_id: str) -> BatchRow:
    row = await get_batch(svc.db, batch_id) if b.is_batch_id(batch_id) else None
    if row is None or not (session.user.is_admin or row.owner_key_id in await _owners(svc, session)):
        raise BatchNotFound(batch_id[:100])
    return row


@get("/batches", include_in_schema=False)
async def batches_page(request: Request) -> Template:
    session = await signed_in(request)
    svc = services(request)
    after = _text_param(request, "after")
    if after is not None and not b.is_batch_id(after):
        raise InvalidRequest.field("after", "must be a batch id this page gave", after[:100])
    owners = None if session.user.is_admin else await _owners(svc, session)
    rows = await list_batches(svc.db, owners, after=after, limit=PAGE + 1)
    views = [await batch_view(svc, r) for r in rows[:PAGE]]
    more = rows[PAGE - 1].id if len(rows) > PAGE else None
    return page(request, "batches.html", session, batches=views, next_after=more)


@get("/batches/{batch_id:str}", include_in_schema=False)
async def batch_page(request: Request, batch_id: str) -> Template:
    session = await signed_in(request)
    svc = services(request)
    view = await batch_view(svc, await _owned_batch(svc, session, batch_id))
    return page(request, "batch.html", session, batch=view, terminal=view["status"] in b.TERMINAL)


@get("/batches/{batch_id:str}/progress", include_in_schema=False)
async def batch_progress(request: Request, batch_id: str) -> Response[bytes]:
    """The batch page's live figures: its Batch object (JSON), for the session's user."""
    session = await signed_in(request)
    svc = services(request)
    return json_response(await batch_view(svc, await _owned_batch(svc, session, batch_id)))


@post("/batches/{batch_id:str}/cancel", include_in_schema=False, status_code=303)
async def cancel_batch_form(request: Request, batch_id: str) -> Redirect:
    session = await signed_in(request)
    svc = services(request)
    row = await _owned_batch(svc, session, batch_id)
    await cancel_owned_batch(svc, row)
    return Redirect(f"/batches/{row.id}", status_code=303)


handlers = [
    jobs_page, job_page, cancel_job_form, batches_page, batch_page, batch_progress, cancel_batch_form,
]  # fmt: skip
