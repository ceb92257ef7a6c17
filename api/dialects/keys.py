"""API key management (api-reference 001 and 002): admin only, the key shown once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Request, Response, Router, delete, get, post
from msgspec import Meta

from api.errors import CLOUDGPT, handlers_for
from api.responses import json_response
from api.state import services
from api.validation import convert, decode_object
from jobs.queues import LAST_USED_KEY
from jobs.client import redis_call
from storage.keys import as_utc, create_key, list_keys, revoke_key
from switchyard.errors import InvalidRequest, NotFound


class KeyCreate(msgspec.Struct, forbid_unknown_fields=False):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    expires_at: datetime | None = None


def _unix(dt: datetime) -> int:
    return int(as_utc(dt).timestamp())


@post("/api/keys", status_code=201)
async def create(request: Request) -> Response[bytes]:
    svc = services(request)
    await svc.keys.require_admin(request)
    body = convert(decode_object(await request.body()), KeyCreate)
    expires_at = None
    if body.expires_at is not None:
        expires_at = as_utc(body.expires_at)
        if expires_at <= datetime.now(UTC):
            raise InvalidRequest.field("expires_at", "must be in the future", body.expires_at.isoformat())
    record, secret = await create_key(svc.db, body.name.strip() or body.name, expires_at)
    return json_response(
        {
            "id": record.id,
            "key": secret,
            "name": record.name,
            "prefix": record.prefix,
            "created": _unix(record.created_at),
            "expires_at": _unix(record.expires_at) if record.expires_at else None,
        },
        201,
    )


@get("/api/keys")
async def list_(request: Request) -> Response[bytes]:
    svc = services(request)
    await svc.keys.require_admin(request)
    records = await list_keys(svc.db)
    last_used = await redis_call(lambda: svc.redis.hgetall(LAST_USED_KEY))
    used = {k.decode(): int(v) // 1000 for k, v in last_used.items()}
    data = [
        {
            "id": r.id,
            "name": r.name,
            "prefix": r.prefix,
            "created": _unix(r.created_at),
            "lastUsed": used.get(r.id),
            "status": "revoked" if r.revoked else ("expired" if r.expired else "active"),
        }
        for r in records
    ]
    return json_response({"data": data})


@delete("/api/keys/{key_id:str}", status_code=200)
async def revoke(request: Request, key_id: str) -> Response[bytes]:
    svc = services(request)
    await svc.keys.require_admin(request)
    record = await revoke_key(svc.db, key_id)
    if record is None:
        raise NotFound(f"API key '{key_id}' not found")
    svc.keys.invalidate()
    return json_response({"deleted": True, "id": key_id})


router = Router(path="/", route_handlers=[create, list_, revoke], exception_handlers=handlers_for(CLOUDGPT))
