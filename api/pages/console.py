"""/playground and /admin.

/playground: pick one of your keys and a model that key may use, type a message, and the answer
streams into the page (api/static/playground.js: fetch() over /v1/chat/completions with
`stream: true`, acting as the key through the session and X-Switchyard-Key). The API's own
errors (429, 402, 400, ...) are shown as the API says them.

/admin (admins only; anyone else gets a 403 page): the admin overview (`api.overview`, the
same function as GET /api/admin/overview) and a grant/revoke form per key, which changes
credits through `change_credits`, as POST /api/keys/{id}/credits does.
"""

from __future__ import annotations

from litestar import Request, get, post
from litestar.response import Redirect, Template

from api.dialects.keys import change_credits
from api.overview import admin_overview
from api.pages.common import flash, form_fields, page, signed_in, take_flash
from api.sessions import Session
from api.state import services
from storage.keys import MAX_CREDITS, list_keys
from switchyard.errors import Forbidden, InvalidRequest


@get("/playground", include_in_schema=False)
async def playground_page(request: Request) -> Template:
    session = await signed_in(request)
    svc = services(request)
    keys = [k for k in await list_keys(svc.db, session.user.id) if not k.revoked and not k.expired]
    return page(request, "playground.html", session, keys=keys)


def _require_admin(session: Session) -> None:
    if not session.user.is_admin:
        raise Forbidden("only an admin may see the admin page")


@get("/admin", include_in_schema=False)
async def admin_page(request: Request) -> Template:
    session = await signed_in(request)
    _require_admin(session)
    svc = services(request)
    overview = await admin_overview(svc)
    return page(request, "admin.html", session, o=overview, done=await take_flash(request, session))


def _amount(raw: str | None, action: str | None) -> int:
    """The form's positive amount, signed by its button: grant adds, revoke takes away."""
    if action not in ("grant", "revoke"):
        raise InvalidRequest.field("action", "must be grant or revoke", action)
    text = (raw or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or not 0 < int(text) <= MAX_CREDITS:
        raise InvalidRequest.field("amount", f"must be a whole number from 1 to {MAX_CREDITS}", text[:20])
    return int(text) if action == "grant" else -int(text)


@post("/admin/keys/{key_id:str}/credits", include_in_schema=False, status_code=303)
async def credits_form(request: Request, key_id: str) -> Template | Redirect:
    """Grant or revoke a key's credits from the admin page; the API's message on a refusal."""
    session = await signed_in(request)  # the CSRF token is checked here
    _require_admin(session)
    svc = services(request)
    fields = await form_fields(request, ("amount", "action"))
    try:
        amount = _amount(fields.get("amount"), fields.get("action"))
        balance = await change_credits(svc, key_id, amount)
    except InvalidRequest as exc:
        overview = await admin_overview(svc)
        return page(request, "admin.html", session, 400, o=overview, error=exc.message, error_key=key_id)
    verb = "Granted" if amount > 0 else "Revoked"
    message = f"{verb} {abs(amount)} credits on key {key_id}: its balance is now {balance}."
    await flash(request, session, {"message": message, "key_id": key_id})
    return Redirect("/admin", status_code=303)


handlers = [playground_page, admin_page, credits_form]
