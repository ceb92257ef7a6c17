"""Which models exist and which providers serve them: the providers file plus discovered lists.

Workers discover the models of providers that do not list theirs and store them in Redis;
the API reads the catalog from there and never calls a provider.
"""

from __future__ import annotations

import difflib
import time

from redis.asyncio import Redis

from switchyard.errors import InvalidRequest, ModelNotFound
from switchyard.providers import ModelMeta, ProviderConfig, ProvidersConfig

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

    def model_meta(self, model: str) -> ModelMeta:
        """What the providers file says of a model (its first provider that says anything)."""
        for p in self.providers_for(model):
            if model in p.meta:
                return p.meta[model]
        return ModelMeta()

    def model_type(self, model: str) -> str | None:
        """chat, completion, embedding, image or video; None when no provider serves it."""
        providers = self.providers_for(model)
        return providers[0].model_type(model) if providers else None

    async def require(self, model: str, *types: str, field: str = "model") -> str:
        """The model's type, when a provider serves it and it is one of `types` (any, if none given).

        An unknown model is a 404 naming the closest known ids; a model of another type is a
        400 naming the field, what it is and what the route wants.
        """
        await self.refresh()
        kind = self.model_type(model)
        if kind is None:
            known = self._known()
            if types:
                known = [m for m in known if self.model_type(m) in types]
            raise ModelNotFound(model, suggestions=difflib.get_close_matches(model, known, n=5, cutoff=0.5))
        if types and kind not in types:
            wanted = " or ".join(types)
            reason = f"'{model}' is a {kind} model; this route takes {wanted} models"
            raise InvalidRequest.field(field, reason, model)
        return kind

    def _known(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.config.providers:
            for m in self.models_of(p):
                seen.setdefault(m)
        return list(seen)

    async def all_models(self) -> list[str]:
        await self.refresh()
        return self._known()

    async def store_discovered(self, provider: str, models: list[str]) -> None:
        assert self.redis is not None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(DISCOVERED_KEY + provider)
            if models:
                pipe.sadd(DISCOVERED_KEY + provider, *models)
            await pipe.execute()
        self._loaded_at = float("-inf")
