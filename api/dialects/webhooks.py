"""`GET /api/v1/webhooks/deliveries`: webhook deliveries and their attempts, in the native shape.

A key sees its own deliveries, the admin every one; newest first, `cursor` pages
(`next_cursor`), `job_id`, `batch_id` and `status` (pending, delivered, failed, gone) filter.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from litestar import Request, Response, Router, get

from api.errors import NATIVE, handlers_for
from api.openapi import docs
from api.responses import json_response
from api.schemas import native
from api.state import services
from api.validation import query_int
from jobs import webhooks
from jobs.client import redis_call
from switchyard.errors import InvalidRequest

MAX_PAGE = 100
SCAN_CHUNK = 200
MAX_SCANNED = 5000  # a filter that matches little answers a short page and a cursor, not a long wait
PARAMS = frozenset({"cursor", "limit", "job_id", "batch_id", "status", "api_key"})


def _cursor(value: str | None) -> tuple[str, str | None]:
    """(max score, last id seen) from `<created ms>:<delivery id>`."""
    if value is None:
        return "+inf", None
    ms, sep, did = value.partition(":")
    if not sep or not (ms.isascii() and ms.isdigit() and len(ms) <= 15) or not did:
        raise InvalidRequest.field("cursor", "is not a cursor this listing gave", value[:80])
    return ms, did


@get("/api/v1/webhooks/deliveries", opt=docs(answers=native.DeliveryList))
async def list_deliveries(request: Request) -> Response[bytes]:
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    params = request.query_params
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise InvalidRequest.field(
            unknown[0], f"not a parameter of this listing (it takes {', '.join(sorted(PARAMS))})"
        )
    status = params.get("status")
    if status is not None and status not in webhooks.STATES:
        raise InvalidRequest.field("status", f"must be one of {', '.join(webhooks.STATES)}", status)
    limit = query_int(request, "limit", 20, 1, MAX_PAGE)
    job_id, batch_id = params.get("job_id"), params.get("batch_id")
    index = webhooks.ALL_KEY if principal.is_admin else webhooks.OWNER_KEY + principal.key_id

    def visible(h: dict[bytes, bytes]) -> bool:
        if not h:
            return False
        if not principal.is_admin and h.get(b"owner", b"").decode() != principal.key_id:
            return False
        if status is not None and h.get(b"state", b"").decode() != status:
            return False
        if job_id is not None and h.get(b"job_id", b"").decode() != job_id:
            return False
        return batch_id is None or h.get(b"batch_id", b"").decode() == batch_id

    found: list[dict[str, Any]] = []
    next_cursor: str | None = None
    if job_id is not None or batch_id is not None:  # a subject's deliveries have known ids
        subject = job_id if job_id is not None else batch_id
        ids = [webhooks.delivery_id(subject or "", event) for event in webhooks.SENT_EVENTS]
        hashes = await _hashes(svc.redis, ids)
        rows = sorted(
            (h for h in hashes if visible(h)), key=lambda h: int(h.get(b"created", b"0")), reverse=True
        )
        found = [webhooks.delivery_view(h) for h in rows[:limit]]
    else:
        top, after = _cursor(params.get("cursor"))
        scanned = 0
        while len(found) < limit and scanned < MAX_SCANNED:
            entries = await redis_call(
                partial(
                    svc.redis.zrevrangebyscore, index, top, "-inf", start=0, num=SCAN_CHUNK, withscores=True
                )
            )
            if after is not None:  # skip what the previous page showed (ties in one millisecond)
                names = [e[0].decode() for e in entries]
                if after in names:
                    entries = entries[names.index(after) + 1 :]
            if not entries:
                break
            hashes = await _hashes(svc.redis, [e[0].decode() for e in entries])
            for (member, score), h in zip(entries, hashes, strict=True):
                scanned += 1
                top, after = str(int(score)), member.decode()
                if visible(h):
                    found.append(webhooks.delivery_view(h))
                    if len(found) == limit:
                        break
            if len(entries) < SCAN_CHUNK and (len(found) < limit):
                top = ""  # the index is exhausted
                break
        if top:
            next_cursor = f"{top}:{after}"
    body = {
        "success": True,
        "data": found,
        "pagination": {"next_cursor": next_cursor, "has_more": next_cursor is not None},
    }
    return json_response(body)


async def _hashes(redis: Any, ids: list[str]) -> list[dict[bytes, bytes]]:
    async def read() -> list[dict[bytes, bytes]]:
        async with redis.pipeline(transaction=False) as pipe:
            for did in ids:
                pipe.hgetall(webhooks.DELIVERY_KEY + did)
            return await pipe.execute()  # type: ignore[no-any-return]

    return await redis_call(read)  # type: ignore[no-any-return]


router = Router(path="/", route_handlers=[list_deliveries], exception_handlers=handlers_for(NATIVE))
