"""API key management (api-reference 001 and 002): the admin manages every key; a signed-in
user (session cookie, CSRF token on changes) or a key of that user manages that user's keys
(another user's key id is a 404); a key of no user sees only itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Request, Response, Router, delete, get, post
from msgspec import Meta

from api.auth import Principal, presented_key
from api.errors import CLOUDGPT, handlers_for
from api.openapi import docs
from api.responses import json_response
from api.schemas import cloudgpt as cg
from api.state import Services, services
from api.validation import convert, decode_object
from api.webhooks import check_webhook_url
from jobs.accounting import CREDITS_KEY
from jobs.client import redis_call
from jobs.queues import LAST_USED_KEY
from storage.keys import (
    MAX_CREDITS,
    MAX_LIMIT,
    KeyLimits,
    KeyRecord,
    as_utc,
    create_key,
    credit_balances,
    get_key,
    grant_credits,
    list_keys,
    revoke_key,
    rotate_webhook_secret,
    set_webhook_url,
    webhook_secret,
)
from switchyard.errors import Forbidden, InvalidRequest, NotFound, Unauthorized


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    limits: KeyLimits | None = None
    credits: Annotated[int, Meta(ge=0, le=MAX_CREDITS)] | None = None
    expires_at: datetime | None = None
    models: Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(min_length=1)] | None = None
    allow_upstream_override: bool = False
    webhook_url: str | None = None


class KeyWebhook(msgspec.Struct, forbid_unknown_fields=True):
    url: str | None


class OwnKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """What a user may ask of a key of their own: a name and an end (limits and credits are the
    admin's to give)."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyCaller:
    """Who manages keys in this request: the admin (every key), a user (their keys), or a key of
    no user (itself, read-only)."""

    admin: bool
    user_id: str | None = None
    principal: Principal | None = None


async def key_caller(request: Request, svc: Services) -> KeyCaller:
    if presented_key(request):  # an API key: exempt from CSRF (a browser never adds one itself)
        try:
            principal = await svc.keys.authenticate(request)
        except Unauthorized:
            if svc.keys.admin_key:
                raise
            raise Forbidden(
                "no admin key may manage keys: SWITCHYARD_ADMIN_KEY is not set (signed-in users and"
                " their keys manage their own)"
            ) from None
        if principal.is_admin:
            return KeyCaller(admin=True, principal=principal)
        user_id = principal.record.user_id if principal.record else None
        return KeyCaller(admin=False, user_id=user_id, principal=principal)
    session = await svc.sessions.require(request)  # 401 without one; CSRF on changes
    return KeyCaller(admin=session.user.is_admin, user_id=session.user.id)


def _managing(caller: KeyCaller) -> None:
    if not caller.admin and caller.user_id is None:
        raise Forbidden("only the admin key may manage keys")


class CreditTopUp(msgspec.Struct, forbid_unknown_fields=False):
    """A grant (a positive `amount`) or a revocation (a negative one) of credits."""

    amount: Annotated[int, Meta(ge=-MAX_CREDITS, le=MAX_CREDITS)]


# Adds a grant (or a negative revocation) to the live balance only when the sum stays within
# 0 and the maximum: {1, balance}, or {0, balance} above the maximum, {-1, balance} below 0.
_TOP_UP = """
local balance = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local sum = balance + tonumber(ARGV[2])
if sum > tonumber(ARGV[3]) then return {0, tostring(balance)} end
if sum < 0 then return {-1, tostring(balance)} end
return {1, tostring(redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]))}
"""


def credits_left(views: list[dict[str, object]]) -> int | None:
    """What a user's keys have left: the sum over their live credit-metered keys (None: none is)."""
    balances = [int(v["credits"]) for v in views if v["status"] == "active" and v["credits"] is not None]  # type: ignore[call-overload]
    return sum(balances) if balances else None


def _unix(dt: datetime | None) -> int | None:
    return int(as_utc(dt).timestamp()) if dt else None


def _state(record: KeyRecord) -> str:
    return "revoked" if record.revoked else ("expired" if record.expired else "active")


async def key_views(svc: Services, records: list[KeyRecord]) -> list[dict[str, object]]:
    ids = [r.id for r in records]
    used: list[bytes | None] = []
    live: list[bytes | None] = []
    if ids:
        used = await redis_call(lambda: svc.redis.hmget(LAST_USED_KEY, ids))
        live = await redis_call(lambda: svc.redis.hmget(CREDITS_KEY, ids))
    live = live or [None] * len(records)
    # A metered key whose balance Redis does not hold (yet, or any more): the database's figure.
    unknown = [r.id for r, c in zip(records, live, strict=True) if r.metered and c is None]
    derived = await credit_balances(svc.db, unknown)
    return [
        {
            "id": r.id,
            "name": r.name,
            "prefix": r.prefix,
            "created": _unix(r.created_at),
            "lastUsed": int(u) // 1000 if u else None,
            "status": _state(r),
            "expires_at": _unix(r.expires_at),
            "limits": r.limits.to_dict(),
            "credits": (int(c) if c is not None else derived.get(r.id)) if r.metered else None,
            "models": list(r.models) if r.models is not None else None,
            "allow_upstream_override": r.allow_upstream_override,
            "webhook_url": r.webhook_url,
        }
        for r, u, c in zip(records, used or [None] * len(records), live, strict=True)
    ]


@post("/api/keys", status_code=201, opt=docs(body=KeyCreate, answers=cg.NewKey))
async def create(request: Request) -> Response[bytes]:
    """Make a key: the admin with any settings (a signed-in admin's key is theirs), a user for
    themselves (name and expiry only).
    The secret is in this response and nowhere else, ever."""
    svc = services(request)
    caller = await key_caller(request, svc)
    _managing(caller)
    raw = decode_object(await request.body(), stored=True)
    if caller.admin:
        body = convert(raw, KeyCreate)
    else:
        own = convert(raw, OwnKeyCreate)
        body = KeyCreate(name=own.name, expires_at=own.expires_at)
    over = body.limits.over_maximum() if body.limits else None
    if over is not None:
        raise InvalidRequest.field(over, f"must be at most {MAX_LIMIT}")
    expires_at = as_utc(body.expires_at) if body.expires_at else None
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise InvalidRequest.field("expires_at", "must be in the future", body.expires_at.isoformat())  # type: ignore[union-attr]
    if not body.name.strip():
        raise InvalidRequest.field("name", "must not be blank", body.name)
    for i, model in enumerate(body.models or ()):
        if not await svc.catalog.serves(model):  # a key for a model nobody serves could do nothing
            raise InvalidRequest(
                f"models: no provider serves '{model}' (GET /v1/models lists the served ones)",
                details=[
                    {"field": f"models[{i}]", "message": "no provider serves this model", "value": model}
                ],
            )
    hook = (
        await check_webhook_url(body.webhook_url, "webhook_url", svc.settings) if body.webhook_url else None
    )
    record, secret = await create_key(
        svc.db,
        body.name.strip(),
        expires_at,
        limits=body.limits,
        models=body.models,
        credits=body.credits,
        allow_upstream_override=body.allow_upstream_override,
        user_id=caller.user_id,
        webhook_url=hook,
    )
    if record.credits is not None:
        await redis_call(lambda: svc.redis.hset(CREDITS_KEY, record.id, record.credits))  # type: ignore[arg-type]
    view = (await key_views(svc, [record]))[0]
    signing = await webhook_secret(svc.db, record.id)
    return json_response({**view, "key": secret, "webhook_secret": signing}, 201)


@get("/api/keys", opt=docs(answers=cg.KeyList))
async def list_(request: Request) -> Response[bytes]:
    """Every key for the admin, a user's own keys for that user; a key of no user sees only
    itself. Never the secret."""
    svc = services(request)
    caller = await key_caller(request, svc)
    if caller.admin:
        records = await list_keys(svc.db)
    elif caller.user_id is not None:
        records = await list_keys(svc.db, caller.user_id)
    else:
        records = [caller.principal.record] if caller.principal and caller.principal.record else []
    return json_response({"data": await key_views(svc, records)})


@delete("/api/keys/{key_id:str}", status_code=200, opt=docs(answers=cg.KeyDeleted))
async def revoke(request: Request, key_id: str) -> Response[bytes]:
    svc = services(request)
    caller = await key_caller(request, svc)
    _managing(caller)
    record = await revoke_key(svc.db, key_id, None if caller.admin else caller.user_id)
    if record is None:
        raise NotFound(f"API key '{key_id}' not found")
    svc.keys.invalidate()
    return json_response({"deleted": True, "id": key_id})


async def change_credits(svc: Services, key_id: str, amount: int) -> int:
    """Grant (`amount` > 0) or revoke (< 0) a key's credits; the new balance. A balance stays
    within 0 and MAX_CREDITS (400 naming `amount`); a key without credits becomes metered."""
    if amount == 0:
        raise InvalidRequest.field("amount", "must not be 0: a positive amount grants, a negative revokes", 0)
    if not -MAX_CREDITS <= amount <= MAX_CREDITS:
        raise InvalidRequest.field("amount", f"must be within -{MAX_CREDITS} and {MAX_CREDITS}", amount)
    record = await get_key(svc.db, key_id)
    if record is None or record.revoked:
        raise NotFound(f"API key '{key_id}' not found")
    # The live balance is Redis'; the database seeds it (granted less spent) when Redis has none.
    seed = (await credit_balances(svc.db, [key_id])).get(key_id, 0)
    await redis_call(lambda: svc.redis.hsetnx(CREDITS_KEY, key_id, str(seed)))
    added, balance = await redis_call(
        lambda: svc.redis.eval(_TOP_UP, 1, CREDITS_KEY, key_id, str(amount), str(MAX_CREDITS))
    )
    if int(added) == 0:
        raise InvalidRequest.field(
            "amount", f"would bring the balance ({int(balance)}) above {MAX_CREDITS} credits", amount
        )
    if int(added) < 0:
        raise InvalidRequest.field(
            "amount",
            f"would bring the balance ({int(balance)}) below 0: at most {int(balance)} can be revoked",
            amount,
        )
    try:
        await grant_credits(svc.db, key_id, amount)
    except BaseException:  # the change is not recorded: the live balance undoes it
        await redis_call(lambda: svc.redis.hincrby(CREDITS_KEY, key_id, -amount))
        raise
    svc.keys.invalidate()
    return int(balance)


@post("/api/keys/{key_id:str}/credits", status_code=200, opt=docs(body=CreditTopUp, answers=cg.CreditsAdded))
async def top_up(request: Request, key_id: str) -> Response[bytes]:
    """Grant credits to a key, or revoke them with a negative `amount` (the admin key or a
    signed-in admin); a key without credits becomes credit-metered; no balance goes below 0."""
    svc = services(request)
    await svc.keys.require_admin(request, "grant or revoke credits")
    body = convert(decode_object(await request.body()), CreditTopUp)
    balance = await change_credits(svc, key_id, body.amount)
    return json_response({"id": key_id, "added": body.amount, "credits": balance})


@post("/api/keys/{key_id:str}/webhook-secret", status_code=200, opt=docs(answers=cg.WebhookSecret))
async def rotate_secret(request: Request, key_id: str) -> Response[bytes]:
    """A new webhook signing secret for the key (admin only), shown in this response only;
    deliveries are signed with it from at most a minute later."""
    svc = services(request)
    await svc.keys.require_admin(request)
    signing = await rotate_webhook_secret(svc.db, key_id)
    if signing is None:
        raise NotFound(f"API key '{key_id}' not found")
    return json_response({"id": key_id, "webhook_secret": signing})


@post("/api/keys/{key_id:str}/webhook", status_code=200, opt=docs(body=KeyWebhook, answers=cg.Key))
async def set_webhook(request: Request, key_id: str) -> Response[bytes]:
    """Set (or with `{"url": null}` clear) the key's default webhook URL (admin only)."""
    svc = services(request)
    await svc.keys.require_admin(request)
    body = convert(decode_object(await request.body()), KeyWebhook)
    url = await check_webhook_url(body.url, "url", svc.settings) if body.url is not None else None
    record = await set_webhook_url(svc.db, key_id, url)
    if record is None:
        raise NotFound(f"API key '{key_id}' not found")
    svc.keys.invalidate()
    return json_response((await key_views(svc, [record]))[0])


router = Router(
    path="/",
    route_handlers=[create, list_, revoke, top_up, rotate_secret, set_webhook],
    exception_handlers=handlers_for(CLOUDGPT),
)
