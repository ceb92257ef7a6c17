"""`native` (api-reference 000): `{"success": true, "data": ...}` bodies, `X-API-Key` auth."""

from __future__ import annotations

from litestar import Request, Response, Router, post

from api.dialects.chat import chat_route
from api.errors import NATIVE, handlers_for
from api.openapi import docs
from api.schemas import native as schemas
from api.validation import ChatRequest

NATIVE_MAX_TOKENS, NATIVE_DEFAULT_MAX_TOKENS = 32768, 1000
NATIVE_DEFAULTS = {"temperature": 0.7, "top_p": 0.95}  # 000: "default: 0.7", "default: 0.95"


@post(
    "/api/v1/completion",
    status_code=200,
    opt=docs(body=ChatRequest, answers=schemas.Completion, work=True, streams=True),
)
async def completion(request: Request) -> Response[bytes]:
    """Chat completion (000: Chat Completion). `?batch=1` answers 202 with a job to poll."""
    return await chat_route(
        request,
        NATIVE,
        max_tokens_cap=NATIVE_MAX_TOKENS,
        default_max_tokens=NATIVE_DEFAULT_MAX_TOKENS,
        defaults=NATIVE_DEFAULTS,
    )


router = Router(path="/", route_handlers=[completion], exception_handlers=handlers_for(NATIVE))
