"""Chat completions through `kind = "openai"` providers, with retries and fallbacks."""

from __future__ import annotations

from typing import Any

from jobs.kinds import ChatPayload
from switchyard.providers import ProviderConfig
from workers.context import WorkerCtx
from workers.fallback import call_with_fallbacks
from workers.providers import openai as openai_provider
from workers.streaming import relay_chat_stream


async def chat_completion(ctx: WorkerCtx, job_id: str, payload: ChatPayload) -> dict[str, Any]:
    """The job's providers in turn (workers/fallback.py): a streamed job relays the provider's
    chunks as they arrive, the others wait for the whole completion."""
    model = payload["model"]

    async def call(provider: ProviderConfig, timeout: float) -> dict[str, Any]:
        if payload.get("stream"):
            return await relay_chat_stream(ctx, job_id, provider, model, payload["request"], timeout)
        return await openai_provider.chat_completion(ctx["http"], provider, payload["request"], timeout)

    provider, completion = await call_with_fallbacks(ctx, payload, call)
    reported = completion.get("usage")
    usage: dict[str, Any] = reported if isinstance(reported, dict) else {}
    prompt_tokens = _int(usage.get("prompt_tokens"))
    completion_tokens = _int(usage.get("completion_tokens"))
    price = provider.prices.get(model)
    return {
        "result": completion,
        "provider": provider.name,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        "cost": price.cost(prompt_tokens, completion_tokens) if price else 0.0,
    }


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
