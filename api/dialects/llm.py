"""More LLM routes: cloudgpt's `POST /api/chat` (api-reference 001) and api-reference 004's
`POST /api/llm/generate/`, `/api/llm/instruct/` and `/api/embedding/`.

Both dialects spell errors as OpenAI's error object; each has its own router so that stays
theirs to change. 004's routes leave the model optional (the configured default serves) and
take `X-OpenAI-Base-URL` / `X-OpenAI-Key` from keys allowed to (api/upstream.py).
"""

from __future__ import annotations

from litestar import Request, Response, Router, post

from api.dialects.chat import chat_route
from api.dialects.embeddings import EmbeddingRequest, embedding_route
from api.errors import APIDOCS, CLOUDGPT, handlers_for
from api.openapi import docs
from api.schemas import apidocs
from api.schemas.openai import ChatCompletion
from api.state import services
from api.validation import ChatRequest

CLOUDGPT_DEFAULTS = {"temperature": 0.7}  # 001: "Sampling temperature (0-2). Default: 0.7"


@post(
    "/api/chat",
    status_code=200,
    opt=docs(body=ChatRequest, answers=ChatCompletion, work=True, streams=True),
)
async def cloudgpt_chat(request: Request) -> Response[bytes]:
    """Chat completion (001): an OpenAI chat.completion; `?batch=1` answers 202 with a job."""
    return await chat_route(request, CLOUDGPT, defaults=CLOUDGPT_DEFAULTS)


@post(
    "/api/llm/generate/",
    status_code=200,
    opt=docs(body=ChatRequest, answers=apidocs.Generated, work=True, streams=True),
)
async def generate(request: Request) -> Response[bytes]:
    """Text generation (004, text_gen): `{"content", "usage"}`."""
    return await chat_route(
        request, APIDOCS, default_model=services(request).settings.default_chat_model, overridable=True
    )


@post(
    "/api/llm/instruct/",
    status_code=200,
    opt=docs(body=ChatRequest, answers=apidocs.Generated, work=True, streams=True),
)
async def instruct(request: Request) -> Response[bytes]:
    """Instruction following (004, text2text): `{"content", "usage"}`."""
    settings = services(request).settings
    default_model = settings.default_instruct_model or settings.default_chat_model
    return await chat_route(request, APIDOCS, default_model=default_model, overridable=True)


@post(
    "/api/embedding/",
    status_code=200,
    opt=docs(body=EmbeddingRequest, answers=apidocs.OneEmbedding, work=True),
)
async def embedding(request: Request) -> Response[bytes]:
    """One text's embedding (004): `{"embedding": [...], "usage"}`."""
    return await embedding_route(
        request,
        APIDOCS,
        default_model=services(request).settings.default_embedding_model,
        text_only=True,
        overridable=True,
    )


cloudgpt_router = Router(path="/", route_handlers=[cloudgpt_chat], exception_handlers=handlers_for(CLOUDGPT))
apidocs_router = Router(
    path="/", route_handlers=[generate, instruct, embedding], exception_handlers=handlers_for(APIDOCS)
)
