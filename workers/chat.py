"""Chat completions through `kind = "openai"` providers, with retries and fallbacks."""

from __future__ import annotations

from typing import Any

from arq import Retry

from jobs.kinds import ChatPayload
from switchyard.errors import ModelNotFound, ProviderFailed
from workers.context import WorkerCtx
from workers.fallback import job_providers
from workers.providers import ProviderError
from workers.providers import openai as openai_provider
from workers.streaming import relay_chat_stream


def backoff_s(base: float, attempt: int) -> float:
    return min(base * (2 ** (attempt - 1)), 10.0)


async def chat_completion(ctx: WorkerCtx, job_id: str, payload: ChatPayload) -> dict[str, Any]:
    """Try each provider serving the model `provider_attempts` times, in file order.

    The attempt number is ARQ's job try, so a retry goes back on the queue (deferred with
    backoff) instead of holding a worker slot while it sleeps.
    """
    settings = ctx["settings"]
    model = payload["model"]
    providers = await job_providers(ctx, model, payload.get("upstream"))
    if not providers:
        raise ModelNotFound(model)
    per_provider = settings.provider_attempts
    attempt = ctx["job_try"]
    index = (attempt - 1) // per_provider
    if index >= len(providers):
        raise ProviderFailed(
            f"all {len(providers)} provider(s) for {model!r} failed after {attempt - 1} attempts"
        )
    provider = providers[index]
    last_attempt = index == len(providers) - 1 and attempt % per_provider == 0
    timeout = provider.timeout_s or settings.provider_timeout_s
    try:
        if payload.get("stream"):
            completion = await relay_chat_stream(ctx, job_id, provider, model, payload["request"], timeout)
        else:
            completion = await openai_provider.chat_completion(
                ctx["http"], provider, payload["request"], timeout
            )
    except ProviderError as exc:
        if not exc.retryable:
            refused = ProviderFailed(f"provider {provider.name!r} refused the request: {exc}")
            refused.error_type = refused.code = "provider_rejected"  # the request's fault: no refund
            raise refused from None
        if last_attempt:
            raise ProviderFailed(
                f"provider {provider.name!r} failed on attempt {attempt} (no fallback left): {exc}"
            ) from None
        if attempt % per_provider == 0:  # this provider is spent: the next one goes at once
            raise Retry(defer=None) from None
        delay = (
            exc.retry_after if exc.retry_after is not None else backoff_s(settings.retry_backoff_s, attempt)
        )
        raise Retry(defer=min(delay, 30.0)) from None
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
