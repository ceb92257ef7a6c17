"""Which provider a job tries next: file order, with providers that keep failing cooled down.

A provider that fails `SWITCHYARD_PROVIDER_COOLDOWN_FAILURES` calls in a row (5xx, timeout,
connection error; not a refusal of the request) cools down for `SWITCHYARD_PROVIDER_COOLDOWN_S`:
a Redis key with that TTL, so every worker skips it, and provider status shows it as `error`.
A cooling provider goes last rather than nowhere: with no other provider left it is still
tried.

A job's order is fixed at its first attempt (and kept in its state hash when cooldowns changed
it), so a cooldown that starts mid-job cannot make later attempts skip or repeat a provider.
The hot path pays nothing for this: a model with one provider never asks, and what is cooling
is read from Redis at most every `cache_s` per worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from jobs import queues
from jobs.discovery import COOLDOWN_KEY, FAILS_KEY
from switchyard import metrics
from switchyard.providers import ProviderConfig
from switchyard.settings import Settings

if TYPE_CHECKING:
    from workers.context import WorkerCtx

log = logging.getLogger("switchyard.worker")

PLAN_FIELD = "plan"  # in the job's state hash: provider names in the order this job tries them


class ProviderHealth:
    def __init__(self, redis: Redis, settings: Settings, *, cache_s: float = 0.25) -> None:
        self.redis = redis
        self.threshold = settings.provider_cooldown_failures
        self.cooldown_ms = int(settings.provider_cooldown_s * 1000)
        self.fails_ttl_ms = max(60_000, 2 * self.cooldown_ms)  # failures this far apart are not "in a row"
        self.cache_s = cache_s
        self._cooling: set[str] = set()
        self._read_at = float("-inf")
        self._failing: set[str] = set()  # providers whose failures this worker has counted

    async def cooling(self, names: Sequence[str]) -> set[str]:
        if time.monotonic() - self._read_at >= self.cache_s:
            self._read_at = time.monotonic()
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.exists(COOLDOWN_KEY + name)
                found = await pipe.execute()
            self._cooling = {name for name, hit in zip(names, found, strict=True) if hit}
        return self._cooling & set(names)

    async def plan(
        self, providers: list[ProviderConfig], job_id: str, job_try: int, state: dict[str, str] | None
    ) -> list[ProviderConfig]:
        """The order in which this job tries `providers` (file order, cooling ones last)."""
        if len(providers) < 2:
            return providers
        stored = (state or {}).get(PLAN_FIELD)
        if job_try > 1 or stored:
            if not stored:  # the first attempt found nothing cooling: file order throughout
                return providers
            order = stored.split(",")
            by_name = {p.name: p for p in providers}
            return [by_name[n] for n in order if n in by_name] + [p for p in providers if p.name not in order]
        cooling = await self.cooling([p.name for p in providers])
        if not cooling:
            return providers
        ready = [p for p in providers if p.name not in cooling]
        ordered = ready + [p for p in providers if p.name in cooling]
        await self.redis.hset(queues.STATE_KEY + job_id, PLAN_FIELD, ",".join(p.name for p in ordered))  # type: ignore[misc]
        return ordered

    async def failed(self, name: str) -> None:
        """One more failure in a row; at the threshold the provider cools down."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(FAILS_KEY + name)
            pipe.pexpire(FAILS_KEY + name, self.fails_ttl_ms)
            pipe.hincrby(metrics.PROVIDER_ERRORS_KEY, name, 1)
            count, _, _ = await pipe.execute()
        self._failing.add(name)
        if int(count) >= self.threshold:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(COOLDOWN_KEY + name, b"1", px=self.cooldown_ms)
                pipe.delete(FAILS_KEY + name)
                await pipe.execute()
            self._cooling.add(name)
            log.warning(
                "provider %s failed %d calls in a row: cooling down for %d ms", name, count, self.cooldown_ms
            )

    async def succeeded(self, name: str) -> None:
        """A success ends a run of failures (a round trip only after this worker saw some)."""
        if name in self._failing:
            self._failing.discard(name)
            await self.redis.delete(FAILS_KEY + name)


class _Untracked:
    """A caller's own upstream (`X-OpenAI-Base-URL`/`X-OpenAI-Key`) is not ours to judge: its
    failures neither cool down a provider nor reorder anything."""

    async def plan(
        self, providers: list[ProviderConfig], job_id: str, job_try: int, state: dict[str, str] | None
    ) -> list[ProviderConfig]:
        return providers

    async def failed(self, name: str) -> None:
        return None

    async def succeeded(self, name: str) -> None:
        return None


UNTRACKED = _Untracked()


def provider_health(ctx: WorkerCtx, payload: Any) -> ProviderHealth | _Untracked:
    if payload.get("upstream") or "provider_health" not in ctx:
        return UNTRACKED
    return ctx["provider_health"]
