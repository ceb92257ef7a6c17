"""/keys: create a key (its secret shown once, with a copy button), list, revoke; the same
storage functions and checks as /api/keys, through HTML forms with the session's CSRF token."""

from __future__ import annotations

from litestar import Request, get, post
from litestar.response import Redirect, Template

from api.dialects.keys import key_views
from api.pages.common import flash, form_fields, page, signed_in, take_flash
from api.state import services
from storage.keys import create_key, list_keys, revoke_key
from switchyard.errors import InvalidRequest, NotFound

MAX_NAME = 200


@get("/keys", include_in_schema=False)
async def keys_page(request: Request) -> Template:
    session = await signed_in(request)
    svc = services(request)
    views = await key_views(svc, await list_keys(svc.db, session.user.id))
    return page(request, "keys.html", session, keys=views, created=await take_flash(request, session))


@post("/keys", include_in_schema=False, status_code=303)
async def create_key_form(request: Request) -> Template | Redirect:
    """A key of the user's own (a name; limits and credits are the admin's to give)."""
    session = await signed_in(request)
    svc = services(request)
    name = (await form_fields(request, ("name",))).get("name", "").strip()
    if not name or len(name) > MAX_NAME:
        reason = "must not be blank" if not name else f"must be at most {MAX_NAME} characters"
        views = await key_views(svc, await list_keys(svc.db, session.user.id))
        error = InvalidRequest.field("name", reason).message
        return page(request, "keys.html", session, 400, keys=views, error=error)
    record, secret = await create_key(svc.db, name, None, user_id=session.user.id)
    # Shown once, on the page this redirects to: a reload neither shows it again nor makes another.
    await flash(request, session, {"name": record.name, "prefix": record.prefix, "key": secret})
    return Redirect("/keys", status_code=303)


@post("/keys/{key_id:str}/revoke", include_in_schema=False, status_code=303)
async def revoke_key_form(request: Request, key_id: str) -> Redirect:
    session = await signed_in(request)
    svc = services(request)
    if await revoke_key(svc.db, key_id, session.user.id) is None:
        raise NotFound(f"API key '{key_id[:100]}' not found")
    svc.keys.invalidate()
    return Redirect("/keys", status_code=303)


handlers = [keys_page, create_key_form, revoke_key_form]
