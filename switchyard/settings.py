"""Settings read from the environment (and `.env`), with the names DESIGN.md fixes."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(default=Path("./data"), validation_alias="SWITCHYARD_DATA_DIR")
    providers_file: Path | None = Field(default=None, validation_alias="SWITCHYARD_PROVIDERS")
    admin_key: str | None = Field(default=None, validation_alias="SWITCHYARD_ADMIN_KEY")
    host: str = Field(default="127.0.0.1", validation_alias="SWITCHYARD_HOST")
    port: int = Field(default=8000, validation_alias="SWITCHYARD_PORT")
    sync_timeout_s: float = Field(default=60.0, gt=0, validation_alias="SWITCHYARD_SYNC_TIMEOUT_S")
    allow_private_urls: bool = Field(default=False, validation_alias="SWITCHYARD_ALLOW_PRIVATE_URLS")
    # Images and video (workers/images.py, workers/imaging.py).
    image_max_pixels: int = Field(default=40_000_000, gt=0, validation_alias="SWITCHYARD_IMAGE_MAX_PIXELS")
    image_max_bytes: int = Field(default=25_000_000, gt=0, validation_alias="SWITCHYARD_IMAGE_MAX_BYTES")
    image_cache_ttl_s: int = Field(default=86_400, ge=0, validation_alias="SWITCHYARD_IMAGE_CACHE_TTL_S")
    video_timeout_s: float = Field(default=300.0, gt=0, validation_alias="SWITCHYARD_VIDEO_TIMEOUT_S")
    video_max_bytes: int = Field(default=200_000_000, gt=0, validation_alias="SWITCHYARD_VIDEO_MAX_BYTES")
    video_max_duration_s: float = Field(
        default=10.0, gt=0, validation_alias="SWITCHYARD_VIDEO_MAX_DURATION_S"
    )

    # Beyond DESIGN.md's contract: tuning knobs with safe defaults.
    # Every wait of the web process on the database or Redis ends in a 503 after this long.
    dependency_timeout_s: float = Field(
        default=2.0, gt=0, le=60, validation_alias="SWITCHYARD_DEPENDENCY_TIMEOUT_S"
    )
    max_body_bytes: int = Field(default=1_000_000, gt=0, validation_alias="SWITCHYARD_MAX_BODY_BYTES")
    # The time limit of each try of a job (one run of its handler on a worker; a provider's 5xx
    # or timeout ends the try and the job is queued again, up to `provider_attempts` tries per
    # provider). `settings_problems` asks it to exceed provider timeout x attempts + backoff, so
    # that one provider's tries fit in the time an OpenAI-dialect call waits (api/submit.py).
    job_timeout_s: float = Field(default=150.0, gt=0, validation_alias="SWITCHYARD_JOB_TIMEOUT_S")
    provider_timeout_s: float = Field(default=60.0, gt=0, validation_alias="SWITCHYARD_PROVIDER_TIMEOUT_S")
    # the HTTP/1.1 connection of the provider calls: httptools' parser (workers/h1.py), or
    # httpcore's own (h11, pure Python; kept to compare against)
    provider_client: Literal["httptools", "httpcore"] = Field(
        default="httptools", validation_alias="SWITCHYARD_PROVIDER_CLIENT"
    )
    provider_attempts: int = Field(default=2, ge=1, le=10, validation_alias="SWITCHYARD_PROVIDER_ATTEMPTS")
    retry_backoff_s: float = Field(default=0.2, ge=0, validation_alias="SWITCHYARD_RETRY_BACKOFF_S")
    worker_max_jobs: int = Field(default=64, ge=1, validation_alias="SWITCHYARD_WORKER_MAX_JOBS")
    # A batch worker keeps fewer jobs in flight: shorter queues at Redis and the providers it
    # shares with interactive work, at little cost to its throughput.
    batch_max_jobs: int = Field(default=16, ge=1, validation_alias="SWITCHYARD_BATCH_MAX_JOBS")
    worker_lease_s: float = Field(default=15.0, gt=0, validation_alias="SWITCHYARD_WORKER_LEASE_S")
    worker_max_tries: int = Field(default=8, ge=1, validation_alias="SWITCHYARD_WORKER_MAX_TRIES")
    worker_shutdown_grace_s: float = Field(default=10.0, ge=0, validation_alias="SWITCHYARD_SHUTDOWN_GRACE_S")
    # 19: the CPU goes to web and interactive workers whenever they want it (batch p95 bench)
    batch_nice: int = Field(default=19, ge=0, le=19, validation_alias="SWITCHYARD_BATCH_NICE")
    sync_credits: int = Field(default=1, ge=0, validation_alias="SWITCHYARD_SYNC_CREDITS")
    batch_credits: int = Field(default=2, ge=0, validation_alias="SWITCHYARD_BATCH_CREDITS")
    result_ttl_s: int = Field(default=3600, ge=1, validation_alias="SWITCHYARD_RESULT_TTL_S")
    # How long an `Idempotency-Key` stays bound to its job (Stripe's 24 h; tests shorten it).
    idempotency_ttl_s: float = Field(
        default=86_400.0, gt=0, le=30 * 86_400, validation_alias="SWITCHYARD_IDEMPOTENCY_TTL_S"
    )
    # Dead letters (jobs/deadletters.py): records a background loop could not read or write,
    # kept in Redis for an admin (`/api/admin/dead-letters`): at most this many, this long.
    dead_letter_max: int = Field(default=10_000, ge=1, validation_alias="SWITCHYARD_DEAD_LETTER_MAX")
    dead_letter_retention_s: int = Field(
        default=30 * 86_400, ge=60, validation_alias="SWITCHYARD_DEAD_LETTER_RETENTION_S"
    )
    # Webhooks (jobs/webhooks.py, workers/webhooks.py): one attempt's bound, and the waits
    # between attempts (Standard Webhooks' schedule, ~24 h; tests shorten it), seconds, commas.
    webhook_timeout_s: float = Field(default=10.0, gt=0, validation_alias="SWITCHYARD_WEBHOOK_TIMEOUT_S")
    webhook_retry_schedule: str = Field(
        default="5,300,1800,7200,18000,36000,36000", validation_alias="SWITCHYARD_WEBHOOK_RETRY_SCHEDULE"
    )
    webhook_concurrency: int = Field(default=32, ge=1, validation_alias="SWITCHYARD_WEBHOOK_CONCURRENCY")

    @property
    def webhook_retry_delays_s(self) -> list[float]:
        return [float(part) for part in self.webhook_retry_schedule.split(",") if part.strip()]

    # GET /metrics without the admin key (for a Prometheus that reaches it over a private network).
    metrics_public: bool = Field(default=False, validation_alias="SWITCHYARD_METRICS_PUBLIC")
    # Files (storage/blobs.py, storage/files.py, GET /api/v1/files/{id}).
    blob_dir: Path | None = Field(default=None, validation_alias="SWITCHYARD_BLOB_DIR")  # <data dir>/blobs
    # Where blobs live: `file:///path` (default: the blob dir above) or `s3://bucket/prefix` on any
    # S3-compatible service (AWS S3, MinIO, R2, Ceph), with the endpoint and credentials below.
    blob_url: str | None = Field(default=None, validation_alias="SWITCHYARD_BLOB_URL")
    s3_endpoint_url: str | None = Field(default=None, validation_alias="SWITCHYARD_S3_ENDPOINT_URL")
    s3_region: str = Field(default="us-east-1", min_length=1, validation_alias="SWITCHYARD_S3_REGION")
    s3_access_key_id: str | None = Field(default=None, validation_alias="SWITCHYARD_S3_ACCESS_KEY_ID")
    s3_secret_access_key: str | None = Field(default=None, validation_alias="SWITCHYARD_S3_SECRET_ACCESS_KEY")
    # `proxied`: file routes stream the bytes through the web process; `presigned`: they answer a
    # redirect to a URL of the object store, valid for `file_url_ttl_s` (S3 only).
    file_urls: Literal["proxied", "presigned"] = Field(
        default="proxied", validation_alias="SWITCHYARD_FILE_URLS"
    )
    file_url_ttl_s: int = Field(
        default=3600, ge=1, le=7 * 86_400, validation_alias="SWITCHYARD_FILE_URL_TTL_S"
    )
    file_ttl_s: int = Field(default=86_400, ge=1, validation_alias="SWITCHYARD_FILE_TTL_S")
    file_cleanup_interval_s: float = Field(
        default=300.0, gt=0, validation_alias="SWITCHYARD_FILE_CLEANUP_INTERVAL_S"
    )
    # Files up to this size are also inlined as base64 `buffer` in JSON responses; larger: `url` only.
    file_buffer_max_bytes: int = Field(
        default=25_000_000, ge=0, validation_alias="SWITCHYARD_FILE_BUFFER_MAX_BYTES"
    )
    public_url: str | None = Field(default=None, validation_alias="SWITCHYARD_PUBLIC_URL")
    # The OpenAI Batch API (api/dialects/batches.py, workers/batches.py): an input file's bounds,
    # how long batch input and output files are kept, what "24h" means (tests shorten it), how
    # many lines one dispatch step enqueues, and how long a batch held back by the key's limits
    # or credits waits at most before it asks admission again.
    batch_max_lines: int = Field(
        default=50_000, ge=1, le=1_000_000, validation_alias="SWITCHYARD_BATCH_MAX_LINES"
    )
    batch_max_bytes: int = Field(default=200_000_000, ge=1, validation_alias="SWITCHYARD_BATCH_MAX_BYTES")
    batch_file_ttl_s: int = Field(default=30 * 86_400, ge=1, validation_alias="SWITCHYARD_BATCH_FILE_TTL_S")
    batch_window_s: float = Field(default=86_400.0, gt=0, validation_alias="SWITCHYARD_BATCH_WINDOW_S")
    batch_dispatch_chunk: int = Field(
        default=500, ge=1, le=5000, validation_alias="SWITCHYARD_BATCH_DISPATCH_CHUNK"
    )
    batch_admission_recheck_s: float = Field(
        default=60.0, gt=0, validation_alias="SWITCHYARD_BATCH_ADMISSION_RECHECK_S"
    )
    # Model discovery: how often a worker refreshes the catalog (one worker per period), and
    # how long a provider's `GET /models` may take.
    discovery_interval_s: float = Field(
        default=300.0, gt=0, validation_alias="SWITCHYARD_DISCOVERY_INTERVAL_S"
    )
    discovery_timeout_s: float = Field(default=10.0, gt=0, validation_alias="SWITCHYARD_DISCOVERY_TIMEOUT_S")
    # A provider failing this many calls in a row is skipped for `provider_cooldown_s`
    # (unless no other provider serves the model).
    provider_cooldown_failures: int = Field(
        default=5, ge=1, validation_alias="SWITCHYARD_PROVIDER_COOLDOWN_FAILURES"
    )
    provider_cooldown_s: float = Field(default=30.0, gt=0, validation_alias="SWITCHYARD_PROVIDER_COOLDOWN_S")
    # Media jobs (yt-dlp downloads) run on the media lane's workers, this many at once each.
    media_max_jobs: int = Field(default=4, ge=1, validation_alias="SWITCHYARD_MEDIA_MAX_JOBS")
    media_job_timeout_s: float = Field(default=900.0, gt=0, validation_alias="SWITCHYARD_MEDIA_JOB_TIMEOUT_S")
    media_max_duration_s: float = Field(
        default=3600.0, gt=0, validation_alias="SWITCHYARD_MEDIA_MAX_DURATION_S"
    )
    media_max_bytes: int = Field(default=500_000_000, gt=0, validation_alias="SWITCHYARD_MEDIA_MAX_BYTES")
    media_cache_ttl_s: int = Field(default=86_400, ge=1, validation_alias="SWITCHYARD_MEDIA_CACHE_TTL_S")
    media_nice: int = Field(default=5, ge=0, le=19, validation_alias="SWITCHYARD_MEDIA_NICE")
    # Open `/ws/models` sockets per web process; one more is closed with 1013 (try again later).
    ws_max_sockets: int = Field(default=200, ge=1, validation_alias="SWITCHYARD_WS_MAX_SOCKETS")
    web_workers: int = Field(
        default=1, ge=1, validation_alias=AliasChoices("SWITCHYARD_WEB_WORKERS", "WEB_CONCURRENCY")
    )
    # The model of a route whose document makes it optional (api-reference 004); the defaults are
    # the keyless default provider's chat model and OpenAI's small embedding model.
    default_chat_model: str = Field(
        default="openai", min_length=1, validation_alias="SWITCHYARD_DEFAULT_CHAT_MODEL"
    )
    # 004's text2text category (`/api/llm/instruct/`) has a default of its own; unset, the
    # text_gen one (`/api/llm/generate/`, SWITCHYARD_DEFAULT_CHAT_MODEL) serves both.
    default_instruct_model: str | None = Field(
        default=None, min_length=1, validation_alias="SWITCHYARD_DEFAULT_INSTRUCT_MODEL"
    )
    default_embedding_model: str = Field(
        default="text-embedding-3-small", min_length=1, validation_alias="SWITCHYARD_DEFAULT_EMBEDDING_MODEL"
    )
    # Custom persona models are called as "@<custom_org>/<name>"; one created without a base
    # model gets `custom_base_model` when the catalog serves it, else the first chat model.
    custom_org: str = Field(
        default="switchyard", min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$",
        validation_alias="SWITCHYARD_CUSTOM_ORG",
    )  # fmt: skip
    custom_base_model: str = Field(
        default="microsoft/phi-3-medium-128k-instruct", validation_alias="SWITCHYARD_CUSTOM_BASE_MODEL"
    )

    # Users and sign-in (api/sessions.py, api/dialects/users.py). Sign-up is off unless asked:
    # an install opened to the network should not take strangers' accounts by surprise.
    signup: Literal["open", "invite", "off"] = Field(default="off", validation_alias="SWITCHYARD_SIGNUP")
    session_ttl_s: int = Field(default=14 * 86_400, ge=60, validation_alias="SWITCHYARD_SESSION_TTL_S")
    # Sign-in attempts per email and per client IP in a window of `signin_window_s`.
    signin_attempts_per_email: int = Field(default=10, ge=1, validation_alias="SWITCHYARD_SIGNIN_PER_EMAIL")
    signin_attempts_per_ip: int = Field(default=50, ge=1, validation_alias="SWITCHYARD_SIGNIN_PER_IP")
    signin_window_s: int = Field(default=900, ge=1, validation_alias="SWITCHYARD_SIGNIN_WINDOW_S")
    # api-reference 001's anonymous tier: calls to its routes without a key, limited per client IP.
    anonymous: bool = Field(default=False, validation_alias="SWITCHYARD_ANONYMOUS")
    # Proxies whose X-Forwarded-For names the client (CIDRs, comma-separated); others' is ignored.
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(), validation_alias="SWITCHYARD_TRUSTED_PROXIES"
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())
        return value

    @property
    def database_url_or_default(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'switchyard.db').resolve()}"

    @property
    def public_base_url(self) -> str:
        """Where clients reach this gateway, for the URLs it hands out (files): the public URL,
        else the listening address. Never the request's `Host` header, which the caller writes."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def blob_dir_or_default(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"


def retry_backoff_total_s(settings: Settings) -> float:
    """The sum of the backoffs between one provider's tries (workers/fallback.py's formula)."""
    base = settings.retry_backoff_s
    return sum(min(base * 2 ** (attempt - 1), 10.0) for attempt in range(1, settings.provider_attempts))


def settings_problems(settings: Settings) -> list[str]:
    """What in these settings cannot work as configured, one sentence each (empty: fine).

    `switchyard up`, `web` and `worker` print these and exit 2 rather than start.
    """
    from switchyard.redis_client import url_problem

    problems = []
    redis_problem = url_problem(settings.redis_url)
    if redis_problem:
        problems.append(redis_problem)
    blob_url = settings.blob_url or "file://"
    if not blob_url.startswith(("file://", "s3://")):
        problems.append(f"SWITCHYARD_BLOB_URL ({blob_url}) must be file:///path or s3://bucket/prefix")
    elif blob_url.startswith("s3://") and not blob_url.removeprefix("s3://").split("/", 1)[0]:
        problems.append(f"SWITCHYARD_BLOB_URL ({blob_url}) names no bucket: s3://bucket/prefix")
    if settings.file_urls == "presigned" and not blob_url.startswith("s3://"):
        problems.append(
            "SWITCHYARD_FILE_URLS=presigned needs an S3 blob store (SWITCHYARD_BLOB_URL=s3://...):"
            " files on a local disk have no URL of their own"
        )
    tries_s = settings.provider_timeout_s * settings.provider_attempts + retry_backoff_total_s(settings)
    if settings.job_timeout_s <= tries_s:
        problems.append(
            f"SWITCHYARD_JOB_TIMEOUT_S ({settings.job_timeout_s:g}) must exceed SWITCHYARD_PROVIDER_TIMEOUT_S"
            f" ({settings.provider_timeout_s:g}) x SWITCHYARD_PROVIDER_ATTEMPTS"
            f" ({settings.provider_attempts})"
            f" + retry backoff ({retry_backoff_total_s(settings):g}) = {tries_s:g} s: a slow provider's"
            " retries could never finish within the job's time"
        )
    return problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
