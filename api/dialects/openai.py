"""OpenAI's own surface, at `/v1` and at `/openai/v1` (api-reference 000), for the official clients."""

from __future__ import annotations

from litestar import Request, Response, Router, post

from api.dialects.chat import chat_route
from api.errors import OPENAI, handlers_for


@post(["/v1/chat/completions", "/openai/v1/chat/completions"], status_code=200)
async def chat_completions(request: Request) -> Response[bytes]:
    """OpenAI chat completions, answered in OpenAI's exact shape."""
    return await chat_route(request, OPENAI)


router = Router(path="/", route_handlers=[chat_completions], exception_handlers=handlers_for(OPENAI))
