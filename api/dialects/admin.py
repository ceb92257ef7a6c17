"""Admin routes: the overview, and what the background loops set aside (`jobs.deadletters`).

`GET /api/admin/overview` is what /admin shows (`api.overview`): queues, workers, providers,
recent failures, dead letters, users and their credits; the admin key or a signed-in admin,
errors in 001's shape (as /api/admin/users).

`GET /api/admin/dead-letters` lists them, newest first (`limit`, `offset`), with their count;
`DELETE /api/admin/dead-letters/{id}` drops one; `POST /api/admin/dead-letters/{id}/retry`
puts a job back in its persist set, to be written again (after the fix that makes it
writable). The admin key or a signed-in admin, in the native shape.
"""

from __future__ import annotations

from litestar import Request, Response, Router, delete, get, post

from api.errors import CLOUDGPT, NATIVE, handlers_for
from api.openapi import docs
from api.overview import admin_overview
from api.responses import json_response
from api.schemas import cloudgpt as cg
from api.schemas import native
from api.state import services
from api.validation import query_int
from jobs.client import redis_call
from switchyard.errors import NotFound

MAX_PAGE = 1000


@get(
    "/api/admin/dead-letters",
    opt=docs(answers=native.DeadLetterList, query={"limit": "1 to 1000 (100)", "offset": "from 0"}),
)
async def list_dead_letters(request: Request) -> Response[bytes]:
    """Records a background loop could not read or write: where, why, when, and the record."""
    svc = services(request)
    await svc.keys.require_admin(request, "manage dead letters")
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    offset = query_int(request, "offset", 0, 0, 10**9)
    store = svc.dead_letters
    count = await redis_call(store.count)
    entries = await redis_call(lambda: store.list(limit, offset))
    return json_response({"success": True, "count": count, "data": [e.view() for e in entries]})


@delete(
    "/api/admin/dead-letters/{entry_id:str}",
    status_code=200,
    opt=docs(answers=native.DeadLetterDroppedAnswer),
)
async def drop_dead_letter(request: Request, entry_id: str) -> Response[bytes]:
    svc = services(request)
    await svc.keys.require_admin(request, "manage dead letters")
    if not await redis_call(lambda: svc.dead_letters.drop(entry_id)):
        raise NotFound(f"dead letter '{entry_id}' not found")
    return json_response({"success": True, "data": {"id": entry_id, "deleted": True}})


@post(
    "/api/admin/dead-letters/{entry_id:str}/retry",
    status_code=200,
    opt=docs(answers=native.DeadLetterRequeuedAnswer),
)
async def retry_dead_letter(request: Request, entry_id: str) -> Response[bytes]:
    """Put the job back in its persist set; a worker writes it at its next pass (or sets it
    aside again, with the new reason)."""
    svc = services(request)
    await svc.keys.require_admin(request, "manage dead letters")
    entry = await redis_call(lambda: svc.dead_letters.retry(entry_id))
    return json_response(
        {"success": True, "data": {"id": entry.id, "job_id": entry.job_id, "requeued": True}}
    )


@get("/api/admin/overview", opt=docs(answers=cg.AdminOverview))
async def overview(request: Request) -> Response[bytes]:
    """Queue depth and the oldest job's age per queue, workers alive, provider health and
    cooldowns, the last 20 failed jobs, the dead-letter count, and users with their credits."""
    svc = services(request)
    await svc.keys.require_admin(request, "read the admin overview")
    return json_response(await admin_overview(svc))


router = Router(
    path="/",
    route_handlers=[list_dead_letters, drop_dead_letter, retry_dead_letter],
    exception_handlers=handlers_for(NATIVE),
)
overview_router = Router(path="/", route_handlers=[overview], exception_handlers=handlers_for(CLOUDGPT))
