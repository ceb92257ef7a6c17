"""What every dashboard page shares: the templates, the signed-in user (or a 303 to /signin),
HTML error pages, and the project's own CSS and JS (served from a fixed list, no CDN)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from litestar import MediaType, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import File, Redirect, Template
from litestar.template.config import TemplateConfig
from litestar.types import ExceptionHandlersMap

from api.responses import fixed_asset
from api.sessions import CSRF_FIELD, Session
from api.state import services
from jobs.client import redis_call
from switchyard.errors import SwitchyardError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"
# The only files pages load: a fixed list, never a path from the request.
ASSETS = {"app.css": "text/css", "app.js": "text/javascript", "playground.js": "text/javascript"}


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return ""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _when_ms(epoch_ms: int | None) -> str:
    return "" if epoch_ms is None else _when(epoch_ms / 1000)


def _add_filters(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(timestamp=_when, timestamp_ms=_when_ms)


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_add_filters)


class SignInRequired(Exception):
    """A page asked for without a session: answered with a 303 to /signin?next=<the page>."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


async def signed_in(request: Request) -> Session:
    """The page's session; a state-changing request must carry its CSRF token (403 page)."""
    sessions = services(request).sessions
    session = await sessions.load(request)
    if session is None:
        raise SignInRequired(request.url.path)
    return await sessions.require(request)


FLASH_TTL_S = 120  # a shown-once value waits this long for the page the form redirects to


def _flash_key(session: Session) -> str:
    return "sy:flash:" + hashlib.sha256(session.id.encode()).hexdigest()


async def flash(request: Request, session: Session, value: dict[str, Any]) -> None:
    """Keep a value for the session's next page only (a new key's secret: a POST answers with a
    303, and a reload of the page it leads to never shows the value again)."""
    redis = services(request).redis
    await redis_call(lambda: redis.set(_flash_key(session), orjson.dumps(value), ex=FLASH_TTL_S))


async def take_flash(request: Request, session: Session) -> dict[str, Any] | None:
    redis = services(request).redis
    raw = await redis_call(lambda: redis.getdel(_flash_key(session)))
    return orjson.loads(raw) if raw else None


def page(request: Request, name: str, session: Session | None, status: int = 200, **context: Any) -> Template:
    return Template(
        template_name=name,
        context={
            "user": session.user if session else None,
            "csrf_token": session.csrf if session else "",
            "csrf_field": CSRF_FIELD,
            "path": request.url.path,
            **context,
        },
        status_code=status,
        media_type=MediaType.HTML,
    )


async def form_fields(request: Request, known: tuple[str, ...]) -> dict[str, str]:
    """A form's text fields among `known` (others, files and a body that is no form: ignored;
    what is missing is then said by the logic the form feeds)."""
    kind = request.headers.get("content-type") or ""
    if "application/x-www-form-urlencoded" not in kind and "multipart/form-data" not in kind:
        return {}
    form = await request.form()
    return {name: value for name in known if isinstance(value := form.get(name), str)}


def _error_page(request: Request, status: int, message: str) -> Response[Any]:
    session = request.state.get("switchyard_session")
    response = page(request, "error.html", session, status, status_code=status, message=message)
    return response  # type: ignore[return-value]


def page_handlers() -> ExceptionHandlersMap:
    """Pages answer errors with a page: the domain error's own message and status."""

    def to_signin(request: Request, exc: SignInRequired) -> Response[Any]:
        return Redirect(f"/signin?next={quote(exc.path)}", status_code=303)  # type: ignore[return-value]

    def domain(request: Request, exc: SwitchyardError) -> Response[Any]:
        return _error_page(request, exc.status_code, exc.message)

    def http(request: Request, exc: HTTPException) -> Response[Any]:
        return _error_page(request, exc.status_code, exc.detail or "This request cannot be answered")

    return {SignInRequired: to_signin, SwitchyardError: domain, HTTPException: http}


@get("/static/{name:str}", include_in_schema=False)
async def static_asset(name: str) -> File:
    return fixed_asset(STATIC, ASSETS, name, what="the pages' assets", max_age_s=3600)
