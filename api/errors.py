"""Domain errors rendered in each dialect's documented error shape.

Every dialect router installs `handlers_for(dialect)`; nothing else in `api/` builds an error
body. Status codes come from the domain error (DESIGN.md, Errors).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.responses import JSON
from switchyard.errors import InvalidRequest, ModelNotFound, ServiceUnavailable, SwitchyardError

log = logging.getLogger("switchyard.api")

NATIVE, CLOUDGPT, CREDITS, OPENAI, DISCOVERY, APIDOCS = (
    "native",
    "cloudgpt",
    "credits",
    "openai",
    "discovery",
    "apidocs",
)

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large", 422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


def error_body(dialect: str, err: SwitchyardError) -> dict[str, Any]:
    title = err.title if type(err).title != SwitchyardError.title else TITLES.get(err.status_code, err.title)
    if dialect == NATIVE:
        return {"success": False, "error": title, "message": err.message, "details": err.details, **err.extra}
    if dialect == CREDITS:
        return {"error": err.message, **err.extra}
    if dialect == DISCOVERY:
        return {
            "error": {
                "code": _discovery_code(err),
                "message": err.message,
                "details": _discovery_details(err),
            },
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            **err.extra,
        }
    # cloudgpt, openai, apidocs: OpenAI's error object
    body: dict[str, Any] = {
        "message": err.message,
        "type": err.error_type,
        "code": err.code,
        "param": err.param,
    }
    return {"error": body, **err.extra}


# api-reference 003 spells its error codes in capitals, with its own names for some.
_DISCOVERY_CODES = {
    "model_not_found": "MODEL_NOT_FOUND",
    "invalid_request_error": "INVALID_FILTER",
    "provider_error": "PROVIDER_ERROR",
    "rate_limit_exceeded": "RATE_LIMITED",
    "authentication_error": "UNAUTHORIZED",
    "permission_error": "FORBIDDEN",
    "not_found_error": "NOT_FOUND",
}


def _discovery_code(err: SwitchyardError) -> str:
    return _DISCOVERY_CODES.get(err.code, err.code.upper())


def _discovery_details(err: SwitchyardError) -> Any:
    """003 gives details as one object: the unknown model and the ones that exist, or the field."""
    if isinstance(err, ModelNotFound):
        return {"model_id": err.details[0]["value"], "available_models": err.suggestions}
    if len(err.details) == 1:
        return dict(err.details[0])
    return err.details or None


def render(dialect: str, err: SwitchyardError) -> Response[bytes]:
    """The error as its dialect spells it. This cannot fail: a value it echoes that JSON cannot
    carry (an integer beyond 64 bits, a lone surrogate, something deeper than orjson goes) is
    replaced by a bounded string, and when even that fails, a minimal error in the same shape."""
    status = _status(err)
    try:
        content = error_json(dialect, err)
        return Response(content=content, status_code=status, media_type=JSON, headers=_headers(err.headers))
    except Exception:
        log.exception("error renderer failed for a %d; answered with a minimal error", status)
        return _minimal(dialect, status)


def error_json(dialect: str, err: SwitchyardError) -> bytes:
    """The error's body as JSON (also a stream's error event); what JSON cannot carry is
    replaced by a bounded string, and if that fails too, the minimal error in the same shape."""
    try:
        body = error_body(dialect, err)
        try:
            return orjson.dumps(body)
        except TypeError:
            return orjson.dumps(_encodable(body, 0))
    except Exception:
        log.exception("error body of a %d could not be built; a minimal one instead", _status(err))
        return _minimal_json(dialect, _status(err))


def _status(err: SwitchyardError) -> int:
    return err.status_code if type(err.status_code) is int and 400 <= err.status_code <= 599 else 500


_MAX_ECHO_DEPTH = 16
_MAX_ECHO_CHARS = 200
_INT64 = (-(2**63), 2**64 - 1)  # what orjson encodes


def _bounded_repr(value: Any) -> str:
    text = (
        repr(value)
        if not isinstance(value, int)
        else str(value)
        if value.bit_length() < 600
        else "(huge integer)"
    )
    text = _plain(text)
    return text if len(text) <= _MAX_ECHO_CHARS else text[: _MAX_ECHO_CHARS - 1] + "…"


def _plain(text: str) -> str:
    """`text` as valid UTF-8 (lone surrogates become U+FFFD)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _encodable(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else _bounded_repr(value)
    if isinstance(value, str):
        return _plain(value)
    if depth >= _MAX_ECHO_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {_plain(str(k)): _encodable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v, depth + 1) for v in value]
    return _bounded_repr(value)


def _headers(headers: dict[str, str]) -> dict[str, str] | None:
    """Headers that HTTP can carry (latin-1, no line breaks); any other is left out."""
    out = {}
    for name, value in headers.items():
        name, value = str(name), str(value)
        try:
            name.encode("ascii")
            value.encode("latin-1")
        except UnicodeEncodeError:
            continue
        if name.isprintable() and value.isprintable():
            out[name] = value
    return out or None


_LAST_RESORT = b'{"error":{"message":"error","type":"internal_error","code":"internal_error","param":null}}'


def _minimal(dialect: str, status: int) -> Response[bytes]:
    return Response(content=_minimal_json(dialect, status), status_code=status, media_type=JSON)


def _minimal_json(dialect: str, status: int) -> bytes:
    err = SwitchyardError(TITLES.get(status, "Error"))
    err.status_code = status
    err.error_type = err.code = "invalid_request_error" if status < 500 else "internal_error"
    try:
        return orjson.dumps(error_body(dialect, err))
    except Exception:  # the last resort: the OpenAI shape, written out
        return _LAST_RESORT


def _from_http(exc: HTTPException) -> SwitchyardError:
    status = exc.status_code or HTTP_500_INTERNAL_SERVER_ERROR
    err = SwitchyardError(exc.detail or TITLES.get(status, "Error"))
    err.status_code = status
    err.error_type = {404: "not_found_error", 405: "method_not_allowed", 413: "request_too_large"}.get(
        status, "invalid_request_error" if status < 500 else "internal_error"
    )
    err.code = err.error_type
    if status == 413:
        err.message = "request body is larger than the limit"
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        err = InvalidRequest(
            exc.detail or "invalid request",
            details=[
                {"field": e.get("key"), "message": e.get("message"), "value": None}
                for e in exc.extra
                if isinstance(e, dict)
            ],
        )
    if exc.headers:
        err.headers = dict(exc.headers)
    return err


def _too_large(request: Request) -> str:
    """The 413 message, with the limit the body went over."""
    try:
        limit = request.route_handler.resolve_request_max_body_size()
    except Exception:  # noqa: BLE001 (no route: the message goes out without the figure)
        limit = None
    if not limit:
        return "request body is larger than the limit"
    return f"request body is larger than the limit of {limit:,} bytes (SWITCHYARD_MAX_BODY_BYTES)"


# The database or its pool cannot be reached (asyncpg's refused connect arrives unwrapped).
_DB_UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout, ConnectionError)


# Which dialect owns a path nobody routed (404) or routed for other methods (405): routing
# fails before any router's handlers apply, so the app-level handler picks by prefix. Most
# specific first; what no prefix claims is Switchyard's own (native).
_PREFIX_DIALECTS: tuple[tuple[str, str], ...] = (
    ("/openai/v1/", OPENAI),
    ("/v1/", OPENAI),
    ("/api/v1/chat", CREDITS),
    ("/api/v1/", NATIVE),
    ("/api/image/generate", APIDOCS),
    ("/api/llm/", APIDOCS),
    ("/api/embedding", APIDOCS),
    ("/api/models/chat", CLOUDGPT),
    ("/api/models/image", CLOUDGPT),
    ("/api/models/video", CLOUDGPT),
    ("/api/chat", CLOUDGPT),
    ("/api/image", CLOUDGPT),
    ("/api/video", CLOUDGPT),
    ("/api/keys", CLOUDGPT),
    ("/api/auth/", CLOUDGPT),
    ("/api/models", DISCOVERY),
    ("/api/providers", DISCOVERY),
    ("/api/cache", DISCOVERY),
    ("/health", DISCOVERY),
    ("/ws/", DISCOVERY),
)


def dialect_for_path(path: str) -> str:
    for prefix, dialect in _PREFIX_DIALECTS:
        if prefix.endswith("/"):
            if path.startswith(prefix) or path == prefix[:-1]:
                return dialect
        elif path == prefix or path.startswith(prefix + "/"):
            return dialect
    return NATIVE


def app_handlers() -> ExceptionHandlersMap:
    """The app's own handlers: what reaches them was not handled by a router (unknown routes,
    wrong methods), and answers in the dialect of the path's prefix."""
    by_dialect = {d: handlers_for(d) for d in (NATIVE, CLOUDGPT, CREDITS, OPENAI, DISCOVERY, APIDOCS)}

    def by_path(request: Request, exc: Exception) -> Response[bytes]:
        try:
            path = str(request.scope["path"])
        except Exception:  # noqa: BLE001 (the renderer cannot fail: no path, Switchyard's own shape)
            path = ""
        handlers: Any = by_dialect[dialect_for_path(path)]
        if isinstance(exc, SwitchyardError):
            return handlers[SwitchyardError](request, exc)  # type: ignore[no-any-return]
        if isinstance(exc, HTTPException):
            return handlers[HTTPException](request, exc)  # type: ignore[no-any-return]
        return handlers[Exception](request, exc)  # type: ignore[no-any-return]

    return {SwitchyardError: by_path, HTTPException: by_path, Exception: by_path}


def handlers_for(dialect: str) -> ExceptionHandlersMap:
    def domain(_: Request, exc: SwitchyardError) -> Response[bytes]:
        return render(dialect, exc)

    domain.dialect = dialect  # type: ignore[attr-defined]  # the schema's error shape (api/openapi.py)

    def http(request: Request, exc: HTTPException) -> Response[bytes]:
        err = _from_http(exc)
        if err.status_code == 413:
            err.message = _too_large(request)
        return render(dialect, err)

    def internal(_: Request, exc: Exception) -> Response[bytes]:
        # A route that did not map these itself: still a 503 in the dialect's shape, never a 500.
        # Redis' errors first: its ConnectionError is the builtin's subclass.
        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            log.warning("Redis unreachable: %r", exc)
            return render(dialect, ServiceUnavailable("queue unavailable: Redis cannot be reached"))
        if isinstance(exc, _DB_UNREACHABLE):
            log.warning("database unreachable: %r", exc)
            return render(dialect, ServiceUnavailable("database unavailable: try again shortly"))
        if isinstance(exc, TimeoutError):
            log.warning("a dependency did not answer in time: %r", exc)
            return render(
                dialect, ServiceUnavailable("a dependency did not answer in time; try again shortly")
            )
        log.exception("unhandled error", exc_info=exc)
        return render(dialect, SwitchyardError("internal error; the request was not completed"))

    return {SwitchyardError: domain, HTTPException: http, Exception: internal}  # type: ignore[dict-item]
