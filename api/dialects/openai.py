"""OpenAI's own surface, at `/v1` and at `/openai/v1` (api-reference 000), for the official clients."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get, post

from api.dialects.chat import chat_route
from api.dialects.embeddings import EmbeddingRequest, embedding_route
from api.errors import OPENAI, handlers_for
from api.openapi import docs
from api.responses import json_response
from api.schemas import openai as oa
from api.state import services
from api.validation import ChatRequest
from switchyard.errors import ModelNotFound


@post(
    ["/v1/chat/completions", "/openai/v1/chat/completions"],
    status_code=200,
    opt=docs(body=ChatRequest, answers=oa.ChatCompletion, work=True, streams=True),
)
async def chat_completions(request: Request) -> Response[bytes]:
    """OpenAI chat completions, answered in OpenAI's exact shape."""
    return await chat_route(request, OPENAI)


def _model(model_id: str, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}


@get(["/v1/models", "/openai/v1/models"], opt=docs(answers=oa.ModelList))
async def list_models(request: Request) -> Response[bytes]:
    """The models this gateway routes (OpenAI's list shape), each owned by its first provider;
    a key restricted to some models sees only those."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    allowed = principal.record.models if principal.record is not None else None
    data = [
        _model(m, svc.catalog.providers_for(m)[0].name)
        for m in await svc.catalog.all_models()
        if allowed is None or m in allowed
    ]
    return json_response({"object": "list", "data": data})


@get(["/v1/models/{model_id:path}", "/openai/v1/models/{model_id:path}"], opt=docs(answers=oa.Model))
async def retrieve_model(request: Request, model_id: str) -> Response[bytes]:
    """One model (ids may contain slashes), 404 in OpenAI's shape when it is not routed."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    model_id = model_id.lstrip("/")
    allowed = principal.record.models if principal.record is not None else None
    if not await svc.catalog.serves(model_id) or (allowed is not None and model_id not in allowed):
        raise ModelNotFound(model_id)
    return json_response(_model(model_id, svc.catalog.providers_for(model_id)[0].name))


@post(
    ["/v1/embeddings", "/openai/v1/embeddings"],
    status_code=200,
    opt=docs(body=EmbeddingRequest, answers=oa.EmbeddingList, work=True),
)
async def embeddings(request: Request) -> Response[bytes]:
    """OpenAI embeddings: `input` a string, strings, a token array or token arrays; `model`
    must be an embedding model."""
    return await embedding_route(request, OPENAI)


router = Router(
    path="/",
    route_handlers=[chat_completions, list_models, retrieve_model, embeddings],
    exception_handlers=handlers_for(OPENAI),
)
