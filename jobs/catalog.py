"""Which models exist and which providers serve them: the providers file plus discovered lists.

Workers discover the models of providers that do not list theirs and store them in Redis;
the API reads the catalog from there and never calls a provider.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from switchyard.providers import ProviderConfig, ProvidersConfig

DISCOVERED_KEY = "sy:models:"  # set per provider name


class Catalog:
    def __init__(
        self, config: ProvidersConfig, redis: Redis | None = None, *, refresh_s: float = 10.0
    ) -> None:
        self.config = config
        self.redis = redis
        self.refresh_s = refresh_s
        self._discovered: dict[str, frozenset[str]] = {}
        self._loaded_at = float("-inf")

    async def refresh(self, force: bool = False) -> None:
        dynamic = [p for p in self.config.providers if p.models is None]
        if not dynamic or self.redis is None:
            return
        if not force and time.monotonic() - self._loaded_at < self.refresh_s:
            return
        self._loaded_at = time.monotonic()
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in dynamic:
                pipe.smembers(DISCOVERED_KEY + p.name)
            found = await pipe.execute()
        self._discovered = {
            p.name: frozenset(m.decode() for m in ms) for p, ms in zip(dynamic, found, strict=True)
        }

    def models_of(self, provider: ProviderConfig) -> frozenset[str] | tuple[str, ...]:
        return (
            provider.models
            if provider.models is not None
            else self._discovered.get(provider.name, frozenset())
        )

    def providers_for(self, model: str) -> list[ProviderConfig]:
        return [p for p in self.config.providers if model in self.models_of(p)]

    async def serves(self, model: str) -> bool:
        await self.refresh()
        return bool(self.providers_for(model))

    async def all_models(self) -> list[str]:
        await self.refresh()
        seen: dict[str, None] = {}
        for p in self.config.providers:
            for m in self.models_of(p):
                seen.setdefault(m)
        return list(seen)

    async def store_discovered(self, provider: str, models: list[str]) -> None:
        assert self.redis is not None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(DISCOVERED_KEY + provider)
            if models:
                pipe.sadd(DISCOVERED_KEY + provider, *models)
            await pipe.execute()
        self._loaded_at = float("-inf")
