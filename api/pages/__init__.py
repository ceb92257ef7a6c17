"""The dashboard: server-rendered HTML pages for a signed-in user (Jinja2 templates in
api/templates, the project's own CSS/JS in api/static). Every page answers errors with a page;
none is in the OpenAPI schema."""

from __future__ import annotations

from litestar import Router

from api.pages import auth, console, dashboard, jobs, keys
from api.pages.common import page_handlers, static_asset, template_config

__all__ = ["router", "template_config"]

router = Router(
    path="/",
    route_handlers=[
        *auth.handlers,
        *dashboard.handlers,
        *keys.handlers,
        *jobs.handlers,
        *console.handlers,
        static_asset,
    ],
    exception_handlers=page_handlers(),
    include_in_schema=False,
    opt={"page": True},  # errors are HTML pages (tests/test_fuzz.py tells them from the dialects')
)
