"""Users and sign-in: sign-up (SWITCHYARD_SIGNUP open | invite | off), sign-in, sign-out, `me`,
and the admin's user and invitation routes. JSON bodies, or HTML forms (a form with `next`
is answered with a 303 to that local path). Errors in the OpenAI-style object of /api/keys.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar import Request, Response, Router, get, post
from sqlalchemy import func
from sqlmodel import col, select

from api.auth import Principal, presented_key
from api.dialects.keys import credits_left, key_views
from api.errors import CLOUDGPT, handlers_for
from api.openapi import docs
from api.responses import json_response
from api.schemas import cloudgpt as cg
from api.sessions import Session, client_ip, forget_attempts, limit_attempts, refuse_cross_site
from api.state import Services, services
from api.validation import decode_object
from storage.bounds import bounded_call
from storage.db import Database
from storage.keys import KeyRecord, list_keys
from storage.models import Usage
from storage.users import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    ROLES,
    USER,
    UserRecord,
    create_invite,
    create_user,
    find_user,
    get_user,
    hash_password,
    list_users,
    normalize_email,
    set_disabled,
    verify_password,
)
from switchyard.errors import Forbidden, InvalidRequest, NotFound, Unauthorized


def user_view(user: UserRecord) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "created": int(user.created_at.timestamp()),
        "disabled": user.disabled,
    }


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type") or ""
    return "application/x-www-form-urlencoded" in kind or "multipart/form-data" in kind


async def _fields(request: Request, known: tuple[str, ...]) -> dict[str, Any]:
    """The body's fields (JSON object or form); unknown ones are a 400 naming them."""
    if _is_form(request):
        form = await request.form()
        raw: dict[str, Any] = {k: form.get(k) for k in form}
        raw.pop("csrf_token", None)
    else:
        raw = decode_object(await request.body())
    for name in raw:
        if name not in known:
            raise InvalidRequest.field(name, f"is not a known field; known: {', '.join(known)}")
    return raw


def _text(raw: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise InvalidRequest.field(name, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest.field(name, "must be a string", value)
    return value


def _email(raw: dict[str, Any]) -> str:
    value = _text(raw, "email")
    assert value is not None
    email = normalize_email(value)
    if email is None:
        raise InvalidRequest.field("email", "is not an email address", value[:320])
    return email


def _password(raw: dict[str, Any], *, new: bool) -> str:
    password = _text(raw, "password")
    assert password is not None
    if len(password) > MAX_PASSWORD:
        raise InvalidRequest.field("password", f"must be at most {MAX_PASSWORD} characters")
    if new and len(password) < MIN_PASSWORD:
        raise InvalidRequest.field("password", f"must be at least {MIN_PASSWORD} characters")
    return password


def _next_path(raw: dict[str, Any]) -> str | None:
    """A form's `next`: a path on this site only (never another host)."""
    value = raw.pop("next", None)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or "\\" in value:
        raise InvalidRequest.field("next", "must be a path on this site, starting with a single /", value)
    return value


def _signed_in(svc: Services, session: Session, status: int, next_path: str | None) -> Response[bytes]:
    headers = {"set-cookie": svc.sessions.cookie(session.id)}
    if next_path is not None:
        return Response(b"", status_code=303, headers={**headers, "location": next_path})
    body = {"user": user_view(session.user), "csrf_token": session.csrf}
    return json_response(body, status, headers=headers)


async def _end_old_session(request: Request, svc: Services) -> None:
    old = await svc.sessions.load(request)
    if old is not None:
        await svc.sessions.destroy(old.id)


def signup_off() -> Forbidden:
    return Forbidden("sign-up is off on this gateway (SWITCHYARD_SIGNUP=off): ask its admin for an account")


async def sign_up(request: Request, svc: Services, raw: dict[str, Any]) -> Session:
    """Make an account from the fields `email`, `password` and (invite mode) `invite`, as
    SWITCHYARD_SIGNUP allows, and sign it in (the JSON route and the /signup page share this)."""
    mode = svc.settings.signup
    if mode == "off":
        raise signup_off()
    email = _email(raw)
    password = _password(raw, new=True)
    invite = _text(raw, "invite", required=mode == "invite")
    if mode == "invite" and not invite:
        raise InvalidRequest.field("invite", "is required: sign-up here is by invitation")
    password_hash = await asyncio.to_thread(hash_password, password)
    user = await create_user(svc.db, email, password_hash, invite=invite if mode == "invite" else None)
    await _end_old_session(request, svc)
    return await svc.sessions.create(user)


async def sign_in(request: Request, svc: Services, raw: dict[str, Any]) -> Session:
    """Check `email` and `password` (attempts limited) and start a session (a new one, always)."""
    email = _email(raw)
    password = _password(raw, new=False)
    now = time.time()
    await limit_attempts(svc.redis, svc.settings, email=email, ip=client_ip(request, svc.settings), now_s=now)
    user = await find_user(svc.db, email)
    ok = await asyncio.to_thread(verify_password, password, user.password_hash if user else None)
    if user is None or not ok:
        raise Unauthorized("Invalid email or password", code="invalid_credentials")
    if user.disabled:
        raise Forbidden("this account is disabled")
    await forget_attempts(svc.redis, svc.settings, email=email, now_s=now)
    await _end_old_session(request, svc)
    return await svc.sessions.create(user)


@post("/api/auth/signup", status_code=201, opt=docs(body=cg.SignUp, answers=cg.SignedIn, public=True))
async def signup(request: Request) -> Response[bytes]:
    """Make an account (when SWITCHYARD_SIGNUP allows) and sign it in."""
    svc = services(request)
    if svc.settings.signup == "off":
        raise signup_off()  # before the body is read
    refuse_cross_site(request, svc.settings.public_url)
    raw = await _fields(request, ("email", "password", "invite", "next"))
    next_path = _next_path(raw)
    return _signed_in(svc, await sign_up(request, svc, raw), 201, next_path)


@post("/api/auth/signin", status_code=200, opt=docs(body=cg.SignIn, answers=cg.SignedIn, public=True))
async def signin(request: Request) -> Response[bytes]:
    """Check the email and password and start a session (a new one, always)."""
    svc = services(request)
    refuse_cross_site(request, svc.settings.public_url)
    raw = await _fields(request, ("email", "password", "next"))
    next_path = _next_path(raw)
    return _signed_in(svc, await sign_in(request, svc, raw), 200, next_path)


@post("/api/auth/signout", status_code=200, opt=docs(answers=cg.SignedOut))
async def signout(request: Request) -> Response[bytes]:
    """End the session (its CSRF token required, as on every state-changing cookie request)."""
    svc = services(request)
    session = await svc.sessions.require(request)
    next_path = _next_path(await _fields(request, ("next",))) if _is_form(request) else None
    await svc.sessions.destroy(session.id)
    headers = {"set-cookie": svc.sessions.cookie(None)}
    if next_path is not None:
        return Response(b"", status_code=303, headers={**headers, "location": next_path})
    return json_response({"signed_out": True}, headers=headers)


@bounded_call("database")
async def _usage(db: Database, key_ids: list[str]) -> dict[str, int]:
    if not key_ids:
        return {"requests": 0, "tokens": 0, "credits": 0}
    query = select(
        func.count(),
        func.coalesce(func.sum(col(Usage.total_tokens)), 0),
        func.coalesce(func.sum(col(Usage.credits)), 0),
    ).where(col(Usage.key_id).in_(key_ids))
    async with db.connect() as conn:
        requests, tokens, credits = (await conn.execute(query)).one()
    return {"requests": int(requests), "tokens": int(tokens), "credits": int(credits)}


async def caller_user(request: Request, svc: Services) -> tuple[UserRecord, Session | None]:
    """The user behind the request: its session, or the user who owns the API key it sent."""
    if presented_key(request):
        principal: Principal = await svc.keys.authenticate(request)
        user_id = principal.record.user_id if principal.record else None
        user = await get_user(svc.db, user_id) if user_id else None
        if user is None or user.disabled:
            raise Forbidden("this API key belongs to no user")
        return user, None
    session = await svc.sessions.require(request)
    return session.user, session


async def user_summary(
    svc: Services, user: UserRecord, keys: list[KeyRecord] | None = None
) -> dict[str, Any]:
    """What a user's keys add up to: active keys, credits left (the sum of their credit-metered
    keys' balances; null when none is metered) and usage (requests, tokens and credits charged
    over every key they own, revoked ones included), with the key views it was made from."""
    keys = await list_keys(svc.db, user.id) if keys is None else keys
    views, used = await asyncio.gather(key_views(svc, keys), _usage(svc.db, [k.id for k in keys]))
    return {
        "keys": sum(1 for v in views if v["status"] == "active"),
        "credits": credits_left(views),
        "usage": used,
        "key_records": keys,
        "key_views": views,
    }


@get("/api/auth/me", opt=docs(answers=cg.Me))
async def me(request: Request) -> Response[bytes]:
    """The signed-in user, the session's CSRF token, and what their keys add up to
    (`user_summary`)."""
    svc = services(request)
    user, session = await caller_user(request, svc)
    summary = await user_summary(svc, user)
    body = {
        "user": user_view(user),
        "csrf_token": session.csrf if session else None,
        "keys": summary["keys"],
        "credits": summary["credits"],
        "usage": summary["usage"],
    }
    return json_response(body)


# --- the admin's routes (the admin key, or a signed-in admin) ------------------------------------
async def require_admin(request: Request, svc: Services, what: str) -> None:
    await svc.keys.require_admin(request, what)


@post("/api/admin/users", status_code=201, opt=docs(body=cg.UserCreate, answers=cg.User))
async def admin_create_user(request: Request) -> Response[bytes]:
    """Make a user (any role), whatever SWITCHYARD_SIGNUP says."""
    svc = services(request)
    await require_admin(request, svc, "create users")
    raw = await _fields(request, ("email", "password", "role"))
    email = _email(raw)
    password = _password(raw, new=True)
    role = _text(raw, "role", required=False) or USER
    if role not in ROLES:
        raise InvalidRequest.field("role", f"must be one of {', '.join(ROLES)}", role)
    user = await create_user(svc.db, email, await asyncio.to_thread(hash_password, password), role=role)
    return json_response(user_view(user), 201)


@get("/api/admin/users", opt=docs(answers=cg.UserList))
async def admin_list_users(request: Request) -> Response[bytes]:
    svc = services(request)
    await require_admin(request, svc, "list users")
    return json_response({"data": [user_view(u) for u in await list_users(svc.db)]})


@post("/api/admin/users/{user_id:str}/disable", status_code=200, opt=docs(answers=cg.User))
async def admin_disable_user(request: Request, user_id: str) -> Response[bytes]:
    """Disable a user: their sessions and keys stop working (keys within the key cache's seconds)."""
    svc = services(request)
    await require_admin(request, svc, "disable users")
    user = await set_disabled(svc.db, user_id, True)
    if user is None:
        raise NotFound(f"user '{user_id}' not found")
    svc.keys.invalidate()
    return json_response(user_view(user))


@post("/api/admin/invites", status_code=201, opt=docs(answers=cg.Invite))
async def admin_invite(request: Request) -> Response[bytes]:
    """A sign-up invitation code (SWITCHYARD_SIGNUP=invite), good for one account, shown once."""
    svc = services(request)
    await require_admin(request, svc, "invite users")
    return json_response({"code": await create_invite(svc.db)}, 201)


router = Router(
    path="/",
    route_handlers=[
        signup,
        signin,
        signout,
        me,
        admin_create_user,
        admin_list_users,
        admin_disable_user,
        admin_invite,
    ],
    exception_handlers=handlers_for(CLOUDGPT),
)
