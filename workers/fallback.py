"""Which upstreams serve a job, and calling them in turn: retries with backoff, then fallbacks.

The providers serving a job's model come from the catalog, in file order. A caller allowed to
may name its own upstream for one call (`X-OpenAI-Base-URL` / `X-OpenAI-Key`, api-reference
004): the job then carries it, and it replaces the catalog's providers (a key alone replaces
their keys).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from arq import Retry

from jobs import queues
from jobs.kinds import UpstreamOverride
from switchyard.errors import ModelNotFound, ProviderFailed
from switchyard.providers import ProviderConfig
from switchyard.urls import check_url_async
from workers.context import WorkerCtx
from workers.providers import ProviderError
from workers.routing import provider_health

T = TypeVar("T")

OVERRIDE = "override"  # the provider name a caller-named upstream is recorded under


class OverrideProvider(ProviderConfig):
    """An upstream or key named by the caller: the key is used as given, never read from this
    machine's environment as an `env:NAME` key of the providers file is."""

    def resolved_api_key(self) -> str | None:
        return self.api_key


async def job_providers(
    ctx: WorkerCtx, model: str, override: UpstreamOverride | None
) -> list[ProviderConfig]:
    if override and override.get("base_url"):
        # Checked again here (the API checked it at submission): the name may resolve elsewhere now.
        url = await check_url_async(
            override["base_url"], allow_private=ctx["settings"].allow_private_urls, field="X-OpenAI-Base-URL"
        )
        return [OverrideProvider(name=OVERRIDE, kind="openai", base_url=url, api_key=override.get("api_key"))]
    await ctx["catalog"].refresh()
    providers = ctx["catalog"].providers_for(model)
    if not providers:  # the API saw the model: another worker may have just discovered it
        await ctx["catalog"].refresh(force=True)
        providers = ctx["catalog"].providers_for(model)
    if override and override.get("api_key"):
        return [OverrideProvider(**{**p.model_dump(), "api_key": override["api_key"]}) for p in providers]
    return providers


LAST_ERROR_FIELD = "last_error"  # in the job's state hash: why its latest provider call failed


async def note_failure(ctx: WorkerCtx, provider: ProviderConfig, exc: ProviderError) -> None:
    """Keep why this try failed (a timeout, a 5xx) for the job's final message, should its
    tries run out between providers; only on a failure, so the hot path pays nothing."""
    if "redis" in ctx and "job_id" in ctx:
        await ctx["redis"].hset(  # type: ignore[misc]
            queues.STATE_KEY + ctx["job_id"], LAST_ERROR_FIELD, f"provider {provider.name!r}: {exc}"
        )


def all_failed(ctx: WorkerCtx, model: str, providers: int, attempt: int) -> ProviderFailed:
    last = (ctx.get("job") or {}).get(LAST_ERROR_FIELD)
    return ProviderFailed(
        f"all {providers} provider(s) for {model!r} failed after {attempt - 1} attempts"
        + (f"; the last: {last}" if last else "")
    )


def backoff_s(base: float, attempt: int) -> float:
    return min(base * (2 ** (attempt - 1)), 10.0)


async def call_with_fallbacks(
    ctx: WorkerCtx,
    payload: Any,
    call: Callable[[ProviderConfig, float], Awaitable[T]],
) -> tuple[ProviderConfig, T]:
    """`call` on the job's providers: each gets `provider_attempts` tries, in order (those
    cooling down after repeated failures last: workers/routing.py).

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
    health = provider_health(ctx, payload)
    providers = await health.plan(providers, ctx["job_id"], attempt, ctx.get("job"))
    index = (attempt - 1) // per_provider
    if index >= len(providers):
        raise all_failed(ctx, model, len(providers), attempt)
    provider = providers[index]
    last_attempt = index == len(providers) - 1 and attempt % per_provider == 0
    try:
        result = await call(provider, provider.timeout_s or settings.provider_timeout_s)
    except ProviderError as exc:
        if not exc.retryable:
            refused = ProviderFailed(f"provider {provider.name!r} refused the request: {exc}")
            refused.error_type = refused.code = "provider_rejected"  # the request's fault: no refund
            raise refused from None
        await health.failed(provider.name)
        await note_failure(ctx, provider, exc)
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
    await health.succeeded(provider.name)
    return provider, result
