"""The discovery dialect's answers (api-reference 003): models, providers, the catalog's
cache and /health."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class Model(msgspec.Struct):
    id: str
    name: str
    provider: str
    providers: list[str]
    type: str
    company: str | None
    context_length: int | None
    max_tokens: int | None
    supports_chat: bool
    supports_completion: bool
    supports_thinking: bool
    input_cost: float | None
    output_cost: float | None
    description: str | None
    capabilities: list[str]
    created_at: str | None
    updated_at: str | None
    max_duration_s: float | UnsetType = UNSET  # video models
    training_data: str | None | UnsetType = UNSET  # one model's detail only
    knowledge_cutoff: str | None | UnsetType = UNSET


class Pagination(msgspec.Struct):
    limit: int
    offset: int
    total: int
    has_next: bool
    next_offset: int | None
    next_cursor: str | None


class ModelList(msgspec.Struct):
    models: list[Model]
    count: int
    providers: list[str]  # the active ones
    timestamp: str
    cache_hit: bool
    pagination: Pagination


class SearchResults(msgspec.Struct):
    models: list[Model]
    count: int
    query: str | None
    filters_applied: dict[str, Any]
    pagination: Pagination


class RefreshQueued(msgspec.Struct):
    """202: no worker finished the refresh within the wait; it still runs."""

    status: str
    message: str
    timestamp: str


class Refreshed(msgspec.Struct):
    status: str  # success, partial or error
    message: str
    models_discovered: int
    providers_updated: list[str]
    providers_failed: dict[str, str]  # name -> why
    duration_ms: int
    timestamp: str | None
    changes: int  # models added, removed or changed


class ProviderInfo(msgspec.Struct):
    name: str
    status: str
    last_check: str | None


class OneModel(msgspec.Struct):
    model: Model
    provider_info: ProviderInfo


class ProviderState(msgspec.Struct):
    status: str
    last_check: str | None
    models_count: int
    error: str | None
    response_time_ms: float | None
    cooldown_until: str | None


class ProvidersSummary(msgspec.Struct):
    total_providers: int
    active_providers: int
    total_models: int
    last_update: str | None


class ProvidersStatus(msgspec.Struct):
    providers: dict[str, ProviderState]
    summary: ProvidersSummary


class ProviderModels(msgspec.Struct):
    provider: str
    models: list[Model]
    count: int
    last_updated: str | None
    cache_hit: bool
    pagination: Pagination


class HitRate(msgspec.Struct):
    hits: int
    misses: int
    hit_rate: float


class CacheFigures(HitRate):
    total_entries: int
    memory_usage_mb: float
    oldest_entry: str | None
    newest_entry: str | None


class CacheStats(msgspec.Struct):
    cache_stats: CacheFigures
    provider_stats: dict[str, HitRate]


class CacheCleared(msgspec.Struct):
    status: str
    message: str
    cleared_entries: int


class HealthServices(msgspec.Struct):
    discovery: str
    cache: str
    redis: str
    database: str
    providers: dict[str, str]
    redis_persistence: str


class HealthMetrics(msgspec.Struct):
    uptime_seconds: int
    memory_usage_mb: float
    cache_hit_rate: float


class Health(msgspec.Struct):
    """healthy or degraded (200), unhealthy (503, in this same shape)."""

    status: str
    timestamp: str
    services: HealthServices
    problems: list[str]
    warnings: list[str]
    dead_letters: int | None
    metrics: HealthMetrics
