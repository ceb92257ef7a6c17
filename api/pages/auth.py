"""Sign-in, sign-up and sign-out as HTML forms, over the same logic as /api/auth (a failure
shows the API's own message in the form)."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from litestar import Request, get, post
from litestar.response import Redirect, Template

from api.dialects.users import sign_in, sign_up
from api.pages.common import form_fields, page
from api.sessions import CSRF_FIELD, Session
from api.state import services
from switchyard.errors import SwitchyardError

HOME = "/dashboard"
# Sign-in and sign-up come before any session, so their forms carry a token of their own
# (double submit): the page sets it in a SameSite=Strict cookie and in the form, and a POST
# must bring both, equal. A form posted from another site has neither, which stops login CSRF
# (signing a victim's browser into the attacker's account).
FORM_COOKIE = "sy_form"
FORM_TOKEN_TTL_S = 3600
FORM_EXPIRED = "This form expired or was sent from another site; it is shown again: please send it once more."


def _local(path: str | None) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or len(path) > 500:
        return HOME
    return path


def _signed_in(request: Request, session: Session, next_path: str | None) -> Redirect:
    cookie = services(request).sessions.cookie(session.id)
    return Redirect(_local(next_path), status_code=303, headers={"set-cookie": cookie})


def _form_page(request: Request, name: str, status: int = 200, **context: Any) -> Template:
    """A sign-in or sign-up page with a fresh form token, in its form and in its cookie."""
    token = secrets.token_urlsafe(24)
    response = page(request, name, None, status, csrf_token=token, **context)
    secure = services(request).sessions.secure
    response.set_cookie(
        FORM_COOKIE,
        token,
        max_age=FORM_TOKEN_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    return response


def _form_token_ok(request: Request, sent: str | None) -> bool:
    cookie = request.cookies.get(FORM_COOKIE) or ""
    return bool(cookie) and hmac.compare_digest(cookie.encode(), (sent or "").encode())


@get("/signin", include_in_schema=False)
async def signin_page(request: Request) -> Template:
    return _form_page(request, "signin.html", next=_local(request.query_params.get("next")))


@post("/signin", include_in_schema=False, status_code=303)
async def signin_form(request: Request) -> Redirect | Template:
    fields = await form_fields(request, ("email", "password", "next", CSRF_FIELD))
    next_path = fields.pop("next", None)
    if not _form_token_ok(request, fields.pop(CSRF_FIELD, None)):
        return _form_page(
            request,
            "signin.html",
            403,
            error=FORM_EXPIRED,
            email=fields.get("email", ""),
            next=_local(next_path),
        )
    try:
        session = await sign_in(request, services(request), fields)
    except SwitchyardError as exc:
        return _form_page(
            request, "signin.html", exc.status_code,
            error=exc.message, email=fields.get("email", ""), next=_local(next_path),
        )  # fmt: skip
    return _signed_in(request, session, next_path)


@get("/signup", include_in_schema=False)
async def signup_page(request: Request) -> Template:
    return _form_page(request, "signup.html", mode=services(request).settings.signup)


@post("/signup", include_in_schema=False, status_code=303)
async def signup_form(request: Request) -> Redirect | Template:
    svc = services(request)
    fields = await form_fields(request, ("email", "password", "invite", CSRF_FIELD))
    if svc.settings.signup != "invite":
        fields.pop("invite", None)
    # With sign-up off there is no form (and nothing a forged one could do): the refusal says so.
    token_ok = _form_token_ok(request, fields.pop(CSRF_FIELD, None))
    if svc.settings.signup != "off" and not token_ok:
        return _form_page(
            request,
            "signup.html",
            403,
            mode=svc.settings.signup,
            error=FORM_EXPIRED,
            email=fields.get("email", ""),
        )
    try:
        session = await sign_up(request, svc, fields)
    except SwitchyardError as exc:
        return _form_page(
            request, "signup.html", exc.status_code,
            mode=svc.settings.signup, error=exc.message, email=fields.get("email", ""),
        )  # fmt: skip
    return _signed_in(request, session, HOME)


@post("/signout", include_in_schema=False, status_code=303)
async def signout_form(request: Request) -> Redirect:
    """End the session (its CSRF token required: a 403 page without it)."""
    sessions = services(request).sessions
    if await sessions.load(request) is not None:
        session = await sessions.require(request)
        await sessions.destroy(session.id)
    return Redirect("/signin", status_code=303, headers={"set-cookie": sessions.cookie(None)})


@get("/", include_in_schema=False)
async def home(request: Request) -> Redirect:
    return Redirect(HOME, status_code=303)


handlers = [signin_page, signin_form, signup_page, signup_form, signout_form, home]
