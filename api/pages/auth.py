"""Sign-in, sign-up and sign-out as HTML forms, over the same logic as /api/auth (a failure
shows the API's own message in the form)."""

from __future__ import annotations

from litestar import Request, get, post
from litestar.response import Redirect, Template

from api.dialects.users import sign_in, sign_up
from api.pages.common import form_fields, page
from api.sessions import Session
from api.state import services
from switchyard.errors import SwitchyardError

HOME = "/dashboard"


def _local(path: str | None) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or len(path) > 500:
        return HOME
    return path


def _signed_in(request: Request, session: Session, next_path: str | None) -> Redirect:
    cookie = services(request).sessions.cookie(session.id)
    return Redirect(_local(next_path), status_code=303, headers={"set-cookie": cookie})


@get("/signin", include_in_schema=False)
async def signin_page(request: Request) -> Template:
    return page(request, "signin.html", None, next=_local(request.query_params.get("next")))


@post("/signin", include_in_schema=False, status_code=303)
async def signin_form(request: Request) -> Redirect | Template:
    fields = await form_fields(request, ("email", "password", "next"))
    next_path = fields.pop("next", None)
    try:
        session = await sign_in(request, services(request), fields)
    except SwitchyardError as exc:
        return page(
            request, "signin.html", None, exc.status_code,
            error=exc.message, email=fields.get("email", ""), next=_local(next_path),
        )  # fmt: skip
    return _signed_in(request, session, next_path)


@get("/signup", include_in_schema=False)
async def signup_page(request: Request) -> Template:
    return page(request, "signup.html", None, mode=services(request).settings.signup)


@post("/signup", include_in_schema=False, status_code=303)
async def signup_form(request: Request) -> Redirect | Template:
    svc = services(request)
    fields = await form_fields(request, ("email", "password", "invite"))
    if svc.settings.signup != "invite":
        fields.pop("invite", None)
    try:
        session = await sign_up(request, svc, fields)
    except SwitchyardError as exc:
        return page(
            request, "signup.html", None, exc.status_code,
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
