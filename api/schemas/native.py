"""The native dialect's answers (api-reference 000 and DESIGN.md's job API): `{"success":
true, "data": ...}` around a chat.completion, a job, usage figures, image results."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from api.schemas.openai import ChatCompletion
from storage.keys import PerMinute


class NativeUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    thinking_tokens: int
    estimated_cost: float


class LimitsRemaining(msgspec.Struct):
    remaining: dict[str, int | None]  # hourly, daily_requests, daily_tokens; null: unlimited


class Completion(msgspec.Struct):
    """000's Chat Completion: the chat.completion in `data`, the usage and what is left."""

    success: bool
    data: ChatCompletion
    usage: NativeUsage
    request_id: str
    processing_time_ms: int
    limits: LimitsRemaining | UnsetType = UNSET


class JobError(msgspec.Struct):
    type: str | None
    message: str | None


class JobLinks(msgspec.Struct):
    self: str
    cancel: str


class Job(msgspec.Struct):
    """A job: its result once it succeeded, in the shape the synchronous call answers (which
    depends on its kind and dialect, so it is free-form here)."""

    id: str
    object: Literal["job"]
    kind: str
    status: str
    priority: str
    model: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    attempts: int
    credits_charged: int
    provider: str | None
    result: Any
    error: JobError | None
    progress: dict[str, Any] | None  # a running media job's: stage, percent, bytes
    metadata: dict[str, str]
    links: JobLinks
    cancel_requested: bool | UnsetType = UNSET  # DELETE's answer only


class JobAnswer(msgspec.Struct):
    success: bool
    data: Job


class Pagination(msgspec.Struct):
    next_cursor: str | None
    has_more: bool


class JobList(msgspec.Struct):
    success: bool
    data: list[Job]
    pagination: Pagination


class Accepted(msgspec.Struct):
    job_id: str
    status: str
    poll_url: str
    job: Job


class AcceptedAnswer(msgspec.Struct):
    """202: the job, to poll at `poll_url` (the `Location` header)."""

    success: bool
    data: Accepted


class GeneratedImage(msgspec.Struct):
    index: int
    size: str | None
    quality: str
    revised_prompt: str | None
    thumbnail_url: str | None
    url: str | None | UnsetType = UNSET
    b64_json: str | UnsetType = UNSET


class GeneratedImages(msgspec.Struct):
    created: int | None
    data: list[GeneratedImage]


class ImageUsage(msgspec.Struct):
    images_generated: int
    estimated_cost: float


class Generate(msgspec.Struct):
    success: bool
    data: GeneratedImages
    usage: ImageUsage
    request_id: str
    processing_time_ms: int


class ImageModel(msgspec.Struct):
    id: str
    name: str
    type: Literal["image"]
    provider: str
    empresa: str | None
    description: str | None
    deterministic: bool | None


class ImageModels(msgspec.Struct):
    models: list[ImageModel]
    total: int


class ImageModelsAnswer(msgspec.Struct):
    success: bool
    data: ImageModels


# --- status (000's Status API) -------------------------------------------------------------------
class Window(msgspec.Struct):
    limit: int | None  # null: unlimited
    used: int
    remaining: int | None


class HourlyWindow(Window, kw_only=True):
    reset_at: str


class DailyWindows(msgspec.Struct):
    requests: Window
    tokens: Window
    reset_at: str


class KeyLimits(msgspec.Struct):
    hourly: HourlyWindow
    daily: DailyWindows
    per_minute: PerMinute
    max_tokens_per_request: int | None


class StatusKey(msgspec.Struct):
    id: str
    name: str
    key_prefix: str | None
    is_active: bool
    created_at: str | None
    expires_at: str | None
    days_until_expiration: int | None


class Credits(msgspec.Struct):
    metered: bool
    balance: int | None


class Period(msgspec.Struct):
    requests: int
    total_tokens: int
    estimated_cost: float
    success_rate: float | UnsetType = UNSET
    successful_requests: int | UnsetType = UNSET
    failed_requests: int | UnsetType = UNSET


class DatedPeriod(Period, kw_only=True):
    date: str


class StatusUsage(msgspec.Struct):
    today: Period
    last_7_days: Period
    last_30_days: Period


class StatusHealth(msgspec.Struct):
    api_key_status: str
    expiration_status: str
    usage_status: str


class Chart(msgspec.Struct):
    daily: list[DatedPeriod]


class Status(msgspec.Struct):
    api_key: StatusKey
    limits: KeyLimits | None  # null for the admin key
    credits: Credits
    usage: StatusUsage
    health: StatusHealth
    chart: Chart | UnsetType = UNSET  # with `include_chart=true`


class StatusAnswer(msgspec.Struct):
    success: bool
    data: Status


class Checks(msgspec.Struct):
    status: str
    checks: dict[str, str]  # redis, database: "ok" or "error: <what>"
    timestamp: str


class ChecksAnswer(msgspec.Struct):
    success: bool
    data: Checks


class ModelStats(msgspec.Struct):
    model: str
    requests: int
    successful_requests: int
    failed_requests: int
    success_rate: float
    total_tokens: int
    estimated_cost: float
    avg_latency_ms: float


class ModelsUsage(msgspec.Struct):
    days: int
    models: list[ModelStats]


class ModelsUsageAnswer(msgspec.Struct):
    success: bool
    data: ModelsUsage


class Overview(msgspec.Struct):
    total_requests: int
    success_rate: float
    total_tokens: int
    estimated_cost: float
    avg_latency_ms: float
    today: Period
    last_7_days: Period
    last_30_days: Period
    top_models: list[ModelStats]


class OverviewAnswer(msgspec.Struct):
    success: bool
    data: Overview


class ModelUsage(ModelStats, kw_only=True):
    days: int
    daily: list[DatedPeriod]


class ModelUsageAnswer(msgspec.Struct):
    success: bool
    data: ModelUsage


# --- models (000's Models API) -------------------------------------------------------------------
class ModelUse(msgspec.Struct):
    requests: int
    successful_requests: int
    failed_requests: int
    total_tokens: int
    avg_latency_ms: float


class Model(msgspec.Struct):
    id: str
    nvidia_model_id: str
    name: str
    type: str
    description: str | None
    max_tokens: int | None
    context_length: int | None
    supports_thinking: bool
    empresa: str
    provider: str
    capabilities: list[str]
    stats: ModelUse | UnsetType = UNSET  # with `include_stats=true`: the last 30 days


class Synced(msgspec.Struct):
    status: str | None
    message: str | None
    models_discovered: int | None | UnsetType = UNSET
    providers_updated: list[str] | None | UnsetType = UNSET
    providers_failed: dict[str, str] | None | UnsetType = UNSET
    timestamp: str | None | UnsetType = UNSET


class ModelsByType(msgspec.Struct):
    models: dict[str, list[Model]]  # type -> its models
    total: int
    counts: dict[str, int]  # provider -> models, and `total`
    sync: Synced | UnsetType = UNSET  # with `sync=true`
    stats_days: int | UnsetType = UNSET  # with `include_stats=true`


class ModelsAnswer(msgspec.Struct):
    success: bool
    data: ModelsByType


class ModelGroup(msgspec.Struct):
    """`/{type}`, `/thinking` or `/{company}`: the models, with what chose them."""

    models: list[Model]
    total: int
    type: str | UnsetType = UNSET
    company: str | UnsetType = UNSET


class ModelProvider(msgspec.Struct):
    name: str
    status: str


class Pricing(msgspec.Struct):
    input_per_1k: float | None
    output_per_1k: float | None
    currency: str


class ModelInfo(Model, kw_only=True):
    """`/{id}/info`: one model, its providers and their status, its price."""

    providers: list[ModelProvider]
    pricing: Pricing
    max_duration_s: float | None


class ModelGroupAnswer(msgspec.Struct):
    success: bool
    data: ModelGroup


class ModelInfoAnswer(msgspec.Struct):
    success: bool
    data: ModelInfo


# --- media and content (000's download, search and movie routes) ---------------------------------
class Content(msgspec.Struct):
    """What the service found (a video's title, duration, formats and file; search results;
    lyrics; movies): its fields are the site's, so free-form here. A download's `data` holds
    the file's `file_id`, `url`, `mime_type`, `size` and `buffer` (base64, null when large)."""

    success: bool
    data: dict[str, Any] | None
    cached: bool
    timestamp: str


class NoSearch(msgspec.Struct):
    query: str
    results: list[Any]
    count: int
    available: bool  # false: the site offers no search to this gateway
    reason: str


class NoSearchAnswer(msgspec.Struct):
    success: bool
    data: NoSearch
    cached: bool
    timestamp: str


class ResultCacheStats(msgspec.Struct):
    service: str
    hits: int
    misses: int
    hit_rate: float
    entries: int
    bytes: int
    ttl_seconds: int


class ResultCacheStatsAnswer(msgspec.Struct):
    success: bool
    data: ResultCacheStats


class ResultCacheCleared(msgspec.Struct):
    service: str
    cleared: int


class ResultCacheClearedAnswer(msgspec.Struct):
    success: bool
    data: ResultCacheCleared


# --- webhooks and dead letters -------------------------------------------------------------------
class DeliveryAttempt(msgspec.Struct):
    at: str | None
    status_code: int | None
    error: str | None
    duration_ms: float


class Delivery(msgspec.Struct):
    id: str | None
    object: Literal["webhook_delivery"]
    event: str | None
    url: str | None
    job_id: str | None
    batch_id: str | None
    status: str | None
    created_at: str | None
    attempts: list[DeliveryAttempt]
    next_attempt_at: str | None
    finished_at: str | None


class DeliveryList(msgspec.Struct):
    success: bool
    data: list[Delivery]
    pagination: Pagination


class DeadLetter(msgspec.Struct):
    id: str
    job_id: str | None
    where: str
    reason: str
    at: str | None
    raw_kind: str  # "hash": a job's state hash; "message": what a channel or list carried
    raw: dict[str, str]  # the record's fields as text


class DeadLetterList(msgspec.Struct):
    success: bool
    count: int
    data: list[DeadLetter]


class DeadLetterDropped(msgspec.Struct):
    id: str
    deleted: bool


class DeadLetterDroppedAnswer(msgspec.Struct):
    success: bool
    data: DeadLetterDropped


class DeadLetterRequeued(msgspec.Struct):
    id: str
    job_id: str | None
    requeued: bool


class DeadLetterRequeuedAnswer(msgspec.Struct):
    success: bool
    data: DeadLetterRequeued
