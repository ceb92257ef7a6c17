"""Which models exist and which providers serve them: the providers file plus discovered lists.

Workers discover what each provider's `GET /models` lists and store it in Redis (one hash
field per provider, with a version counter bumped on every store); the API reads the catalog
from there and never calls a provider. A provider whose file entry lists its models is routed
by that list; its discovered listing only adds what the file does not say (names, context...).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from storage.bounds import bounded
from switchyard.errors import InvalidRequest, ModelNotFound, ServiceUnavailable
from switchyard.providers import ModelMeta, ModelPrice, ProviderConfig, ProvidersConfig

log = logging.getLogger("switchyard.catalog")

STALE_RETRY_S = 1.0  # after a failed reload, a loaded catalog is served this long before the next try
CATALOG_KEY = "sy:catalog"  # hash: provider name -> JSON listing {"models": [...], "updated": ms}
CATALOG_VERSION_KEY = "sy:catalog:version"  # bumped whenever a listing is stored or cleared
STATUS_KEY = "sy:providers:status"  # hash: provider name -> JSON status of its last check

# What a stored listing keeps of one model the provider listed (the rest is dropped).
LISTING_FIELDS = ("id", "created", "owned_by", "name", "description", "context_length", "input_cost",
                  "output_cost")  # fmt: skip
_GENERIC_OWNERS = frozenset({"system", "user", "organization-owner", "standin", "vllm", "library"})


@dataclass(slots=True)
class Listing:
    """What one provider's `/models` said at its last successful check."""

    models: dict[str, dict[str, Any]]  # model id -> its sanitized entry, in the provider's order
    updated_ms: int

    @classmethod
    def decode(cls, raw: bytes | str) -> Listing:
        data = orjson.loads(raw)
        models = {str(m["id"]): m for m in data.get("models", ()) if isinstance(m, dict) and "id" in m}
        return cls(models, int(data.get("updated") or 0))

    def encode(self) -> bytes:
        return orjson.dumps({"models": list(self.models.values()), "updated": self.updated_ms})


@dataclass(slots=True)
class ModelEntry:
    """One routed model with everything known about it: the file's metadata first, then what
    its providers' listings say."""

    id: str
    providers: list[str]
    type: str
    meta: ModelMeta
    listed: dict[str, Any] = field(default_factory=dict)  # its first provider's listing entry
    price: ModelPrice | None = None
    updated_ms: int | None = None

    @property
    def provider(self) -> str:
        return self.providers[0]

    @property
    def name(self) -> str:
        return self.meta.name or _str(self.listed.get("name")) or self.id

    @property
    def description(self) -> str | None:
        return self.meta.description or _str(self.listed.get("description"))

    @property
    def company(self) -> str:
        if self.meta.company:
            return self.meta.company
        if "/" in self.id:
            return self.id.split("/", 1)[0]
        owner = _str(self.listed.get("owned_by"))
        return owner if owner and owner not in _GENERIC_OWNERS else self.provider

    @property
    def context_length(self) -> int | None:
        value = self.meta.context_length or self.listed.get("context_length")
        return int(value) if isinstance(value, int | float) and value > 0 else None

    @property
    def capabilities(self) -> list[str]:
        return list(self.meta.capabilities)

    @property
    def supports_thinking(self) -> bool:
        return self.meta.supports_thinking or any(c in ("thinking", "reasoning") for c in self.capabilities)

    @property
    def input_cost(self) -> float | None:
        """US dollars per 1K prompt tokens, when known (the file's price, else the listing's)."""
        if self.price is not None:
            return round(self.price.prompt / 1000, 9)
        value = self.listed.get("input_cost")
        return float(value) if isinstance(value, int | float) else None

    @property
    def output_cost(self) -> float | None:
        if self.price is not None:
            return round(self.price.completion / 1000, 9)
        value = self.listed.get("output_cost")
        return float(value) if isinstance(value, int | float) else None

    @property
    def created_ms(self) -> int | None:
        created = self.listed.get("created")
        return int(created) * 1000 if isinstance(created, int) and created > 0 else None

    def summary(self) -> dict[str, Any]:
        """The merged description of the model, without timestamps: what a refresh compares."""
        return {
            "id": self.id,
            "name": self.name,
            "provider": self.provider,
            "providers": list(self.providers),
            "type": self.type,
            "company": self.company,
            "description": self.description,
            "context_length": self.context_length,
            "max_tokens": self.meta.max_tokens,
            "input_cost": self.input_cost,
            "output_cost": self.output_cost,
            "capabilities": self.capabilities,
            "supports_thinking": self.supports_thinking,
            "max_duration_s": self.meta.max_duration_s,
        }


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Catalog:
    def __init__(
        self, config: ProvidersConfig, redis: Redis | None = None, *, refresh_s: float = 10.0
    ) -> None:
        self.config = config
        self.redis = redis
        self.refresh_s = refresh_s
        self.listings: dict[str, Listing] = {}
        self._version: bytes | None = None
        self._loaded_at = float("-inf")
        self._entries: list[ModelEntry] | None = None
        self._loading: asyncio.Future[None] | None = None

    async def refresh(self, force: bool = False) -> None:
        """Reload the stored listings when they changed; without `force`, at most every
        `refresh_s` (the hot path), with it at once (one GET when nothing changed).

        One load at a time: callers that arrive while one runs await it (a burst on a fresh
        process never routes against the empty listing of a load not yet done). A load that
        fails before any succeeded is a 503; after one did, the hot path goes on with the
        catalog it has (stale beats down) and tries again a second later.
        """
        if self.redis is None:
            return
        if not force and time.monotonic() - self._loaded_at < self.refresh_s:
            return
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
            self._loading.add_done_callback(self._loaded)
        try:
            await asyncio.shield(self._loading)
        except (RedisError, OSError, ServiceUnavailable) as exc:
            if force:
                raise  # who asks for the fresh catalog is told, as Redis said it
            if self._version is None:
                if isinstance(exc, ServiceUnavailable):
                    raise
                raise ServiceUnavailable(
                    f"model catalog unavailable: Redis cannot be reached ({exc.__class__.__name__})"
                ) from exc
            log.warning("model catalog: reload failed (%r); serving the catalog loaded before", exc)
            self._loaded_at = time.monotonic() - self.refresh_s + STALE_RETRY_S

    def _loaded(self, task: asyncio.Future[None]) -> None:
        self._loading = None
        if not task.cancelled():
            task.exception()  # read here too: a load nobody awaits any more is no "never retrieved"

    async def _load(self) -> None:
        assert self.redis is not None
        async with bounded("queue (Redis)"):
            version = await self.redis.get(CATALOG_VERSION_KEY)
            if version == self._version and self._version is not None:
                self._loaded_at = time.monotonic()
                return
            raw = await self.redis.hgetall(CATALOG_KEY)  # type: ignore[misc]
        listings: dict[str, Listing] = {}
        for name, value in raw.items():
            try:
                listings[name.decode()] = Listing.decode(value)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                continue  # a damaged entry is as good as none; the next discovery rewrites it
        self.listings = listings
        self._version = version if version is not None else b"0"
        self._entries = None
        self._loaded_at = time.monotonic()

    def models_of(self, provider: ProviderConfig) -> tuple[str, ...]:
        if provider.models is not None:
            return provider.models
        listing = self.listings.get(provider.name)
        return tuple(listing.models) if listing is not None else ()

    def providers_for(self, model: str) -> list[ProviderConfig]:
        return [p for p in self.config.providers if model in self.models_of(p)]

    def provider(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.config.providers if p.name == name), None)

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
            raise ModelNotFound(model, suggestions=self.close_matches(model, known))
        if types and kind not in types:
            wanted = " or ".join(types)
            reason = f"'{model}' is a {kind} model; this route takes {wanted} models"
            raise InvalidRequest.field(field, reason, model)
        return kind

    def close_matches(self, model: str, known: list[str] | None = None) -> list[str]:
        return difflib.get_close_matches(model, self._known() if known is None else known, n=5, cutoff=0.5)

    def _known(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.config.providers:
            for m in self.models_of(p):
                seen.setdefault(m)
        return list(seen)

    async def all_models(self) -> list[str]:
        await self.refresh()
        return self._known()

    def entries(self) -> list[ModelEntry]:
        """Every routed model, merged across its providers, in file order (built once per load)."""
        if self._entries is not None:
            return self._entries
        entries: dict[str, ModelEntry] = {}
        for p in self.config.providers:
            listing = self.listings.get(p.name)
            for model in self.models_of(p):
                entry = entries.get(model)
                listed = listing.models.get(model) if listing is not None else None
                if entry is None:
                    entries[model] = ModelEntry(
                        id=model,
                        providers=[p.name],
                        type=p.model_type(model),
                        meta=p.meta.get(model) or ModelMeta(),
                        listed=dict(listed or {}),
                        price=p.prices.get(model),
                        updated_ms=listing.updated_ms if listing is not None else None,
                    )
                    continue
                entry.providers.append(p.name)
                if entry.meta == ModelMeta() and model in p.meta:
                    entry.meta = p.meta[model]
                if not entry.listed and listed:
                    entry.listed = dict(listed)
                if entry.price is None:
                    entry.price = p.prices.get(model)
                if listing is not None:
                    entry.updated_ms = max(entry.updated_ms or 0, listing.updated_ms)
        self._entries = list(entries.values())
        return self._entries

    def entry(self, model: str) -> ModelEntry | None:
        return next((e for e in self.entries() if e.id == model), None)

    async def statuses(self) -> dict[str, dict[str, Any]]:
        """Each provider's last check (status, last_check ms, models_count, error, response_time_ms)."""
        if self.redis is None:
            return {}
        raw = await self.redis.hgetall(STATUS_KEY)  # type: ignore[misc]
        out: dict[str, dict[str, Any]] = {}
        for name, value in raw.items():
            try:
                out[name.decode()] = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
        return out

    async def store_listing(self, provider: str, models: list[dict[str, Any]], updated_ms: int) -> None:
        """Store what a provider's `/models` listed (kept until the next good listing)."""
        assert self.redis is not None
        listing = Listing(
            {str(m["id"]): {k: m[k] for k in LISTING_FIELDS if k in m} for m in models}, updated_ms
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(CATALOG_KEY, provider, listing.encode())  # type: ignore[arg-type]
            pipe.incr(CATALOG_VERSION_KEY)
            await pipe.execute()
        self._loaded_at = float("-inf")
