"""The chat-completion flow that every dialect's chat route shares."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response

from api.errors import CLOUDGPT
from api.personas import resolve_custom_model
from api.responses import json_response
from api.results import chat_body
from api.state import services
from api.streaming import stream_chat
from api.submit import submit
from api.upstream import upstream_override
from api.validation import ChatRequest, parse_chat
from jobs.kinds import CHAT_COMPLETION, ChatPayload
from jobs.token_estimate import chat_prompt_tokens

THINKING_EFFORT = "medium"  # OpenAI's own default for reasoning models
SAMPLING = frozenset({"temperature", "top_p"})


def with_thinking(req: ChatRequest, upstream: dict[str, Any]) -> tuple[ChatRequest, bool]:
    """000's `thinking_enabled` / `thinking_model` as providers spell them: `reasoning_effort`
    (unless the caller set it), and the call goes to `thinking_model` when one is named.
    `thinking_model` alone turns thinking on; `thinking_enabled: false` leaves the model's default."""
    on = req.thinking_enabled is True or (req.thinking_enabled is None and req.thinking_model is not None)
    if not on:
        return req, False
    upstream.setdefault("reasoning_effort", THINKING_EFFORT)
    if req.thinking_model is not None:
        upstream["model"] = req.thinking_model
        req = msgspec.structs.replace(req, model=req.thinking_model)
    return req, True


async def chat_route(
    request: Request,
    dialect: str,
    *,
    max_tokens_cap: int | None = None,
    default_max_tokens: int | None = None,
    default_model: str | None = None,
    defaults: dict[str, Any] | None = None,
    overridable: bool = False,
) -> Response[bytes]:
    svc = services(request)
    principal = await svc.keys.authenticate(request, anonymous=dialect == CLOUDGPT)  # 001's tier
    req, upstream = parse_chat(
        await request.body(), max_tokens_cap=max_tokens_cap, default_model=default_model
    )
    req, thinking = with_thinking(req, upstream)
    req, job_model = await resolve_custom_model(svc, principal, req, upstream)  # "@org/name" -> base
    for name, value in (defaults or {}).items():  # a dialect's documented defaults
        if not (thinking and name in SAMPLING):  # reasoning models refuse sampling settings
            upstream.setdefault(name, value)
    if default_max_tokens is not None and req.max_tokens is None and req.max_completion_tokens is None:
        # A default the caller did not ask for stays within the key's per-request cap.
        cap = principal.record.limits.max_tokens_per_request if principal.record is not None else None
        upstream["max_tokens"] = default_max_tokens if cap is None else min(default_max_tokens, cap)
    override = await upstream_override(request, svc, principal) if overridable else None
    if override is None or "base_url" not in override:  # a caller's own upstream knows its models
        await svc.catalog.require(req.model, "chat", "completion")
    max_tokens = upstream.get("max_tokens") or upstream.get("max_completion_tokens")
    svc.accounts.check_request(principal, model=req.model, max_tokens=max_tokens)
    # Admission reserves the prompt's estimated tokens as well as the most the reply may take.
    reserve_tokens = chat_prompt_tokens(upstream) + int(max_tokens or 0)
    payload: ChatPayload = {"model": req.model, "request": upstream}
    if override:
        payload["upstream"] = override
    if req.stream:
        return await stream_chat(
            request,
            svc,
            principal=principal,
            dialect=dialect,
            payload=payload,
            reserve_tokens=reserve_tokens,
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            model=job_model,
        )
    outcome, headers = await submit(
        request,
        svc,
        principal=principal,
        kind=CHAT_COMPLETION,
        payload=dict(payload),
        dialect=dialect,
        model=job_model,
        modality="chat",
        reserve_tokens=reserve_tokens,
    )
    if isinstance(outcome, Response):
        return outcome
    return json_response(chat_body(outcome), headers={"x-job-id": outcome.id, **headers})
