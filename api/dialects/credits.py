"""`credits` (api-reference 002): credit-priced chat, `{"error": "..."}` errors, Bearer auth."""

from __future__ import annotations

from litestar import Request, Response, Router, post

from api.dialects.chat import chat_route
from api.errors import CREDITS, handlers_for
from api.openapi import docs
from api.schemas.credits import CreditsCompletion
from api.validation import ChatRequest

CREDITS_DEFAULT_MAX_TOKENS = 150


@post(
    "/api/v1/chat",
    status_code=200,
    opt=docs(body=ChatRequest, answers=CreditsCompletion, work=True, streams=True),
)
async def chat(request: Request) -> Response[bytes]:
    """Chat completion, 1 credit; with `?batch=1`, 2 credits and a 202 job."""
    return await chat_route(request, CREDITS, default_max_tokens=CREDITS_DEFAULT_MAX_TOKENS)


router = Router(path="/", route_handlers=[chat], exception_handlers=handlers_for(CREDITS))
