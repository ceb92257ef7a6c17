"""The job API (DESIGN.md; the JOBS section api-reference 004 leaves empty), in the native shape."""

from __future__ import annotations

from litestar import Request, Response, Router, delete, get

from api.errors import NATIVE, handlers_for
from api.metadata import metadata_filter
from api.openapi import docs
from api.responses import json_response
from api.schemas import native
from api.state import services
from api.submit import job_view
from api.validation import query_int
from jobs.records import CANCELED, TERMINAL
from switchyard.errors import InvalidRequest

MAX_PAGE = 100
LIST_PARAMS = frozenset({"status", "cursor", "limit", "api_key"})


def _limit(request: Request) -> int:
    return query_int(request, "limit", 20, 1, MAX_PAGE)


@get("/api/v1/jobs/{job_id:str}", opt=docs(answers=native.JobAnswer))
async def get_job(request: Request, job_id: str) -> Response[bytes]:
    """One job of the caller's: status, timings, attempts, and the result once it has one."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    record = await svc.jobs.get(job_id, principal.key_id)
    return json_response({"success": True, "data": job_view(record)})


@get(
    "/api/v1/jobs",
    opt=docs(
        answers=native.JobList,
        query={
            "status": "queued, running, succeeded, failed or canceled",
            "limit": "1 to 100 (20)",
            "cursor": "`next_cursor` of the page before",
        },
    ),
)
async def list_jobs(request: Request) -> Response[bytes]:
    """The caller's jobs, newest first; `status` and `metadata[key]=value` (every pair) filter,
    `cursor` pages (`next_cursor`)."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    unknown = sorted(n for n in set(request.query_params) - LIST_PARAMS if not n.startswith("metadata"))
    if unknown:  # a filter that is not applied must not look applied
        reason = f"not a parameter of this listing (it takes {', '.join(sorted(LIST_PARAMS))}, metadata[key])"
        raise InvalidRequest(
            f"{', '.join(unknown)}: {reason}",
            details=[
                {"field": name, "message": reason, "value": request.query_params.get(name)}
                for name in unknown
            ],
        )
    records, next_cursor = await svc.jobs.list(
        principal.key_id,
        status=request.query_params.get("status"),
        cursor=request.query_params.get("cursor"),
        limit=_limit(request),
        metadata=metadata_filter(request),
    )
    body = {
        "success": True,
        "data": [job_view(r) for r in records],
        "pagination": {"next_cursor": next_cursor, "has_more": next_cursor is not None},
    }
    return json_response(body)


@delete("/api/v1/jobs/{job_id:str}", status_code=200, opt=docs(answers=native.JobAnswer))
async def cancel_job(request: Request, job_id: str) -> Response[bytes]:
    """Cancel a queued or running job; a finished job is returned as it is.

    A queued job is canceled at once; a running one is told to stop and answers with its
    current status and `cancel_requested: true` (its later GET shows what it ended as:
    `canceled`, or what it finished as first)."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    record = await svc.jobs.cancel(job_id, principal.key_id)
    view = job_view(record)
    view["cancel_requested"] = record.status not in TERMINAL or record.status == CANCELED
    return json_response({"success": True, "data": view})


router = Router(
    path="/", route_handlers=[get_job, list_jobs, cancel_job], exception_handlers=handlers_for(NATIVE)
)
