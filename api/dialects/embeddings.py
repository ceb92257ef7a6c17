"""The embeddings flow that every dialect's embedding route shares (OpenAI's `/v1/embeddings`,
api-reference 004's `/api/embedding/`): validate, check the model's type, queue, render."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response
from msgspec import Meta

from api.responses import json_response
from api.results import embedding_body
from api.state import services
from api.submit import submit
from api.upstream import upstream_override
from api.validation import NonEmpty, convert, decode_object
from jobs.kinds import EMBEDDING, EmbeddingPayload
from jobs.token_estimate import input_tokens
from switchyard.errors import InvalidRequest

MAX_INPUTS = 2048  # OpenAI's bound on the items of one request


class EmbeddingRequest(msgspec.Struct, forbid_unknown_fields=False):
    """OpenAI's embeddings body; `input` is checked by `check_input` (msgspec's unions take one
    list type, and this one takes four shapes)."""

    input: str | list[Any]
    model: NonEmpty | None = None
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Meta(ge=1, le=65536)] | None = None
    user: str | None = None


def _token_array(value: Any, field: str) -> None:
    if not isinstance(value, list) or not value:
        raise InvalidRequest.field(field, "must be a non-empty array of token ids")
    for i, token in enumerate(value):
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise InvalidRequest.field(f"{field}[{i}]", "must be a token id (an integer, 0 or more)", token)


def check_input(value: str | list[Any], *, text_only: bool) -> None:
    """A string, or (unless `text_only`) a list of strings, a token array, or a list of token arrays."""
    if isinstance(value, str):
        if not value.strip():
            raise InvalidRequest.field("input", "must not be empty", value)
        return
    if text_only:
        raise InvalidRequest.field("input", "must be a string")
    if not value:
        raise InvalidRequest.field("input", "must not be empty")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest.field("input", f"must have at most {MAX_INPUTS} items", len(value))
    first = value[0]
    if isinstance(first, str):
        for i, text in enumerate(value):
            if not isinstance(text, str):
                raise InvalidRequest.field(f"input[{i}]", "must be a string like the items before it")
            if not text.strip():
                raise InvalidRequest.field(f"input[{i}]", "must not be empty", text)
    elif isinstance(first, int) and not isinstance(first, bool):
        _token_array(value, "input")
    elif isinstance(first, list):
        for i, tokens in enumerate(value):
            _token_array(tokens, f"input[{i}]")
    else:
        raise InvalidRequest.field(
            "input", "must be a string, a list of strings, a token array or a list of token arrays"
        )


async def embedding_route(
    request: Request,
    dialect: str,
    *,
    default_model: str | None = None,
    text_only: bool = False,
    overridable: bool = False,
) -> Response[bytes]:
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    raw = decode_object(await request.body())
    req = convert(raw, EmbeddingRequest)
    check_input(req.input, text_only=text_only)
    model = req.model or default_model
    if model is None:
        raise InvalidRequest.field("model", "is required")
    override = await upstream_override(request, svc, principal) if overridable else None
    if override is None or "base_url" not in override:  # a caller's own upstream knows its models
        await svc.catalog.require(model, "embedding")
    svc.accounts.check_request(principal, model=model, max_tokens=None)
    upstream: dict[str, Any] = (
        {**raw, "model": model} if not text_only else {"model": model, "input": req.input}
    )
    for ours in ("metadata", "webhook", "webhook_events_filter"):  # the job's own, never the provider's
        upstream.pop(ours, None)
    if req.encoding_format is not None:
        upstream["encoding_format"] = req.encoding_format
    payload: EmbeddingPayload = {"model": model, "request": upstream}
    if override:
        payload["upstream"] = override
    outcome, headers = await submit(
        request,
        svc,
        principal=principal,
        kind=EMBEDDING,
        payload=dict(payload),
        dialect=dialect,
        model=model,
        modality="chat",
        reserve_tokens=input_tokens(req.input),
    )
    if isinstance(outcome, Response):
        return outcome
    return json_response(embedding_body(outcome), headers={"x-job-id": outcome.id, **headers})
