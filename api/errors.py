"""Domain errors rendered in each dialect's documented error shape.

Every dialect router installs `handlers_for(dialect)`; nothing else in `api/` builds an error
body. Status codes come from the domain error (DESIGN.md, Errors).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.responses import json_response
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
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large", 429: "Too Many Requests",
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
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
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
    headers = dict(err.headers)
    return json_response(error_body(dialect, err), err.status_code, headers=headers or None)


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


# The database or its pool cannot be reached (asyncpg's refused connect arrives unwrapped).
_DB_UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout, ConnectionError)


def handlers_for(dialect: str) -> ExceptionHandlersMap:
    def domain(_: Request, exc: SwitchyardError) -> Response[bytes]:
        return render(dialect, exc)

    def http(_: Request, exc: HTTPException) -> Response[bytes]:
        return render(dialect, _from_http(exc))

    def internal(_: Request, exc: Exception) -> Response[bytes]:
        if isinstance(exc, _DB_UNREACHABLE):  # a route that did not map it itself: still a 503
            log.warning("database unreachable: %s", exc)
            return render(dialect, ServiceUnavailable("database unavailable: try again shortly"))
        log.exception("unhandled error", exc_info=exc)
        return render(dialect, SwitchyardError("internal error; the request was not completed"))

    return {SwitchyardError: domain, HTTPException: http, Exception: internal}  # type: ignore[dict-item]
