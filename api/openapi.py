"""What the OpenAPI schema says about each route, and the offline API docs page.

The routes parse their bodies by hand (`api/validation.py`, for speed), so Litestar sees no
request body and types every answer `string`. Here each route is described for the schema
only: its body is the very msgspec Struct the route validates with (`docs(body=...)` in the
route's `opt`), its answer, `?batch=1` and `Prefer` on routes that create work, the security
schemes, and the error shape of the route's dialect as every 4xx/5xx. All of it is read once,
when the schema is first built; nothing here runs on the request path.

`/docs` is Swagger UI from the `litestar-offline-docs` package (Swagger UI 5, which reads
OpenAPI 3.1), served from this app: no CDN, so it works offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import litestar_offline_docs
import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Operation,
    SecurityScheme,
)
from litestar.response import File
from litestar.routes import HTTPRoute

from api.responses import fixed_asset
from switchyard.errors import SwitchyardError

SCHEMA_PATH = "/schema"  # the document itself is at /schema/openapi.json
DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(litestar_offline_docs.__file__).parent / "static"
# A signed-in browser: the session cookie and X-Switchyard-Key together (api/auth.py).
SECURITY: list[dict[str, list[str]]] = [
    {"bearer": []},
    {"apiKey": []},
    {"apiKeyQuery": []},
    {"sessionCookie": [], "sessionKey": []},
]
JSON = "application/json"
SSE = "text/event-stream"
BINARY = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class Docs:
    """A route's description for the schema: `body` and `answers` are msgspec types (or JSON
    schema dicts); `work`: the route creates a job (`?batch=1`, `Prefer: wait=N`, 202)."""

    body: Any = None
    answers: Any = None
    work: bool = False
    public: bool = False
    query: dict[str, str] = field(default_factory=dict)  # name -> what it means
    media_type: str = JSON
    streams: bool = False  # `"stream": true` answers server-sent events instead
    accepted: Any = None  # the 202's answer, when it is not the dialect's job
    binary: tuple[str, ...] = ()  # media types answered instead of JSON (a file's bytes)
    body_media_type: str = JSON  # multipart/form-data: an upload


def docs(**kwargs: Any) -> dict[str, Docs]:
    """`opt=docs(...)` on a route decorator."""
    return {"docs": Docs(**kwargs)}


# Each dialect's error shape (api/errors.py renders them); any 4xx or 5xx comes in it.
class _OpenAIErrorObject(msgspec.Struct):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class OpenAIError(msgspec.Struct):
    """OpenAI's error object (the `openai`, `cloudgpt` and `apidocs` dialects)."""

    error: _OpenAIErrorObject


class NativeError(msgspec.Struct):
    """The `native` dialect's error: `details` names the field and the reason on a 400."""

    success: bool
    error: str
    message: str
    details: Any = None


class CreditsError(msgspec.Struct):
    """The `credits` dialect's error, with its credit fields beside it when they apply."""

    error: str


class _DiscoveryErrorObject(msgspec.Struct):
    code: str
    message: str
    details: Any = None


class DiscoveryError(msgspec.Struct):
    """The `discovery` dialect's error."""

    error: _DiscoveryErrorObject
    timestamp: str


ERROR_SHAPES: dict[str, type[msgspec.Struct]] = {
    "native": NativeError,
    "credits": CreditsError,
    "discovery": DiscoveryError,
    "openai": OpenAIError,
    "cloudgpt": OpenAIError,
    "apidocs": OpenAIError,
}


def json_schema(t: Any) -> dict[str, Any]:
    """`t`'s JSON schema with every reference written out in place (the document has no
    components of ours: Litestar rebuilds `components.schemas` from its own registry)."""
    return t if isinstance(t, dict) else _schema_of(t)


def any_of(*types: Any) -> dict[str, Any]:
    """One of several Structs: msgspec takes a union of Structs only with a tag field, and
    some answers have none (a field's presence tells them apart)."""
    return {"anyOf": [json_schema(t) for t in types]}


@cache
def _schema_of(t: Any) -> dict[str, Any]:
    (out,), defs = msgspec.json.schema_components([t], ref_template="#/$defs/{name}")
    return _inline(out, defs)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _content(t: Any, media_type: str = JSON) -> dict[str, Any]:
    return {media_type: {"schema": json_schema(t)} if t is not None else {}}


def _event(error: Any) -> dict[str, Any]:
    """One server-sent event of a streamed chat: a chunk, or the error that ended the stream
    (in the dialect's shape), as JSON in `data`; the last event's `data` is `[DONE]`."""
    from api.schemas.openai import ChatCompletionChunk

    chunk = {
        "type": "string",
        "contentMediaType": JSON,
        "contentSchema": any_of(ChatCompletionChunk, error),
    }
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [{"const": "[DONE]"}, chunk]}},
    }


def _dialect_of(handler: Any) -> str:
    render = handler.resolve_exception_handlers().get(SwitchyardError)
    return getattr(render, "dialect", "native")


def _accepted(dialect: str, answer: Any = None) -> dict[str, Any]:
    from api.schemas import native, openai  # the schemas import storage; read when first built

    job = answer or (openai.Job if dialect == "openai" else native.AcceptedAnswer)
    return {
        "description": "`?batch=1`, or the wait bound passed: the job, to poll at the `Location` URL",
        "headers": {"Location": {"schema": {"type": "string"}, "description": "the job's poll URL"}},
        "content": _content(job),
    }


WORK_PARAMETERS = [
    {
        "name": "batch",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["0", "1"]},
        "description": "1: answer 202 at once with the job, to poll; run at batch priority",
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^wait=[0-9]+(\\.[0-9]+)?$"},
        "description": "`wait=N`: wait at most N seconds for the answer, then 202 with the job",
    },
]


def operation_for(handler: Any) -> type[Operation]:
    """An Operation class that writes `handler`'s description into what Litestar generated."""
    description: Docs = handler.opt.get("docs") or Docs()
    dialect = _dialect_of(handler)
    error = ERROR_SHAPES.get(dialect, NativeError)
    methods = handler.http_methods
    status = handler.status_code

    @dataclass
    class Described(Operation):  # a dataclass again, so that its __init__ calls __post_init__
        described: ClassVar[Docs] = description

        def __post_init__(self) -> None:
            d = self.described
            ok: dict[str, Any] = {"description": "the answer"}
            if "HEAD" in methods:
                ok = {"description": "the headers the GET would answer"}
            elif d.answers is not None:
                ok["content"] = _content(d.answers, d.media_type)
            elif d.media_type != JSON:  # a file's bytes
                ok["content"] = {d.media_type: {"schema": BINARY}}
            else:
                ok["content"] = {JSON: {}}  # JSON whose shape this schema does not spell out
            if d.streams:
                ok["content"][SSE] = {"schema": _event(error)}
            for media_type in d.binary:
                ok.setdefault("content", {})[media_type] = {"schema": BINARY}
            failed = {"description": "an error, in this dialect's shape", "content": _content(error)}
            responses: dict[str, Any] = {str(status): ok, "4XX": failed, "5XX": failed}
            if d.work:
                responses["202"] = _accepted(dialect, d.accepted)
            self.responses = responses  # type: ignore[assignment]
            if d.body is not None:
                self.request_body = {"required": True, "content": _content(d.body, d.body_media_type)}  # type: ignore[assignment]
            params: list[Any] = list(self.parameters or [])
            if d.work:
                params += WORK_PARAMETERS
            params += [
                {"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": m}
                for n, m in d.query.items()
            ]
            self.parameters = params or None
            self.security = [] if d.public else None  # None: the document's (bearer or X-API-Key)

    Described.__name__ = f"{handler.handler_name}_operation"
    return Described


def describe_routes(app: Litestar) -> None:
    """Give every route of `app` (those added later too) its described Operation: the error
    shape of its dialect at least, its body and answer where its `opt` declares them."""
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if handler.include_in_schema is not False:
                    handler.operation_class = operation_for(handler)


class OfflineSwagger(SwaggerRenderPlugin):
    """Swagger UI with its scripts and styles from this app, the favicon too; no validator
    badge (it would call out to swagger.io)."""

    def __init__(self) -> None:
        super().__init__(
            path="/swagger",
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon="",
        )

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        page = super().render(request, openapi_schema)
        return page.replace(b"deepLinking: true,", b"deepLinking: true, validatorUrl: null,", 1)


SWAGGER = OfflineSwagger()


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Switchyard",
        version="0.1.0",
        path=SCHEMA_PATH,
        render_plugins=[SWAGGER],
        security=SECURITY,
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http", scheme="bearer", description="`Authorization: Bearer <key>`"
                ),
                "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
                "apiKeyQuery": SecurityScheme(type="apiKey", name="api_key", security_scheme_in="query"),
                "sessionCookie": SecurityScheme(
                    type="apiKey",
                    name="sy_session",
                    security_scheme_in="cookie",
                    description="the session of POST /api/auth/signin; with X-Switchyard-Key, and"
                    " X-CSRF-Token (from GET /api/auth/me) on a call that is not GET or HEAD",
                ),
                "sessionKey": SecurityScheme(
                    type="apiKey",
                    name="X-Switchyard-Key",
                    security_scheme_in="header",
                    description="the id of one of the signed-in user's keys (an admin: any key): the call"
                    " acts as that key",
                ),
            }
        ),
    )


@get(DOCS_PATH, include_in_schema=False, media_type="text/html")
async def docs_page(request: Request) -> Response[bytes]:
    """Swagger UI over this app's own schema (rendered once, then kept)."""
    page = request.app.state.get("docs_page")
    if page is None:
        page = SWAGGER.render(request, request.app.openapi_schema.to_schema())
        request.app.state["docs_page"] = page
    return Response(page, media_type="text/html")


# The only files the page loads: a fixed list, never a path from the request.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
}


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False)
async def docs_asset(name: str) -> File:
    return fixed_asset(ASSETS_DIR, ASSETS, name, what="the API docs' assets", max_age_s=86400)


router = Router(path="/", route_handlers=[docs_page, docs_asset])
