"""SQLModel tables. Table models stay inside `storage/`; callers get plain records or public views."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint, false
from sqlmodel import Field, SQLModel


class KeyBase(SQLModel):
    name: str = Field(max_length=200)


class ApiKey(KeyBase, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    prefix: str = Field(max_length=20)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    is_active: bool = True
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    limits: dict | None = Field(default=None, sa_column=Column(JSON))  # None: the defaults
    models: list | None = Field(default=None, sa_column=Column(JSON))  # None: every model
    # Credits granted, at creation and by top-ups; None means the key is not credit-metered.
    # The live balance is in Redis; granted less what the usage rows were charged seeds it.
    credits: int | None = None
    # May name its own upstream for a call (X-OpenAI-Base-URL / X-OpenAI-Key, api-reference 004).
    allow_upstream_override: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    # The user who owns the key (self-service keys); None: made by the admin for no one.
    user_id: str | None = Field(default=None, max_length=40, index=True)

    # Webhooks (jobs/webhooks.py): the URL a job of this key is reported to when it names none,
    # and the Standard Webhooks secret (`whsec_...`) its deliveries are signed with, shown once.
    webhook_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    webhook_secret: str | None = Field(default=None, max_length=100, repr=False)


class User(SQLModel, table=True):
    """A person who signs in (storage/users.py); their keys point here by `ApiKey.user_id`."""

    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=40)
    email: str = Field(max_length=320, unique=True, index=True)  # normalized (storage.users.normalize_email)
    password_hash: str = Field(max_length=500)
    role: str = Field(default="user", max_length=20)  # "admin" | "user"
    created_at: datetime
    disabled: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class Invite(SQLModel, table=True):
    """A sign-up invitation an admin made (SWITCHYARD_SIGNUP=invite); good for one sign-up."""

    __tablename__ = "invites"

    code_hash: str = Field(primary_key=True, max_length=64)  # SHA-256 of the code: shown once
    created_at: datetime
    expires_at: datetime | None = None
    used_by: str | None = Field(default=None, max_length=40)
    used_at: datetime | None = None


class Job(SQLModel, table=True):
    """A finished (or canceled) job. Live jobs are in Redis; workers write rows here in batches."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_owner_created", "owner_key_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=40)
    owner_key_id: str = Field(max_length=40)
    kind: str = Field(max_length=40)
    dialect: str = Field(max_length=20)
    priority: str = Field(max_length=20)
    model: str | None = Field(default=None, max_length=200)
    status: str = Field(max_length=20, index=True)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    credits_charged: int = 0
    provider: str | None = Field(default=None, max_length=100)
    result: dict | None = Field(default=None, sa_column=Column(JSON))
    error_type: str | None = Field(default=None, max_length=60)
    error_message: str | None = None
    # What admission and the provider reported (balance, limits left, tokens, cost), so a job
    # read back from here renders exactly as the synchronous call did.
    accounting: dict | None = Field(default=None, sa_column=Column(JSON))
    # The caller's labels (`metadata`: a map of text to text, bounded at the edge), filtered on
    # by `GET /api/v1/jobs?metadata[k]=v`. (`metadata` is SQLAlchemy's name for the schema.)
    job_metadata: dict | None = Field(default=None, sa_column=Column("metadata", JSON))


class Usage(SQLModel, table=True):
    """One row per finished job: what it cost and how it went. Written in batches by workers."""

    __tablename__ = "usage"
    __table_args__ = (
        Index("ix_usage_key_created", "key_id", "created_at"),
        Index("ix_usage_model_created", "model", "created_at"),
    )

    job_id: str = Field(primary_key=True, max_length=40)
    key_id: str = Field(max_length=40)
    model: str | None = Field(default=None, max_length=200)
    kind: str = Field(max_length=40)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    success: bool
    latency_ms: int = 0
    estimated_cost: float = 0.0
    credits: int = 0  # net credits charged (0 when refunded)
    created_at: datetime


class StoredFile(SQLModel, table=True):
    """A file served at `/api/v1/files/{id}`: metadata here, the bytes in the blob store under
    `blob_key` (content-addressed, so several rows may share one blob)."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_expires_at", "expires_at"),
        Index("ix_files_blob_key", "blob_key"),
        Index("ix_files_job_id", "job_id"),
    )

    id: str = Field(primary_key=True, max_length=40)  # public and unguessable
    blob_key: str = Field(max_length=64)  # SHA-256 of the content, hex
    mime_type: str = Field(max_length=200)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    filename: str = Field(max_length=255)
    owner_key_id: str | None = Field(default=None, max_length=40)  # None: only the admin reads it
    kind: str = Field(default="file", max_length=40)  # "media", "image", "thumbnail", ...
    job_id: str | None = Field(default=None, max_length=40)
    created_at: datetime
    expires_at: datetime | None = None  # None: kept until deleted


class CustomModel(SQLModel, table=True):
    """A persona: a base model run with a system prompt made from these fields, owned by one key."""

    __tablename__ = "custom_models"
    # The unique pair is also the index a chat call's `@org/name` lookup reads.
    __table_args__ = (UniqueConstraint("owner_key_id", "name", name="uq_custom_models_owner_name"),)

    id: int | None = Field(default=None, primary_key=True)
    owner_key_id: str = Field(max_length=40)
    name: str = Field(max_length=50)
    display_name: str = Field(max_length=100)
    description: str = Field(default="", max_length=500)
    personality_summary: str = Field(sa_column=Column(Text, nullable=False))
    system_prompt: str = Field(sa_column=Column(Text, nullable=False))
    base_model: str = Field(max_length=200)
    # Sampling defaults for calls that do not set their own; None: the base model's.
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    created_at: datetime
    updated_at: datetime


class BatchRow(SQLModel, table=True):
    """An OpenAI Batch API batch (api/dialects/batches.py). Its live status and counters are in
    Redis while it runs (`jobs.batches`); this row holds what it was created with, each status
    change the workers make, and the final counts, files and errors."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_owner_id", "owner_key_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)  # "batch_" + a time-ordered hex id
    owner_key_id: str = Field(max_length=40)
    endpoint: str = Field(max_length=60)
    input_file_id: str = Field(max_length=40)
    completion_window: str = Field(max_length=10)
    status: str = Field(max_length=20)
    model: str | None = Field(default=None, max_length=200)
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = Field(default=None, max_length=40)
    error_file_id: str | None = Field(default=None, max_length=40)
    errors: list | None = Field(default=None, sa_column=Column(JSON))  # [{code, message, param, line}]
    # string map, bounded at the edge (16 keys, 64/512 characters): for filtering and webhooks later
    batch_metadata: dict | None = Field(default=None, sa_column=Column("metadata", JSON))
    files_base: str | None = Field(default=None, max_length=500)  # where image URLs point
    created_at: datetime
    in_progress_at: datetime | None = None
    finalizing_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    expired_at: datetime | None = None
    cancelling_at: datetime | None = None
    cancelled_at: datetime | None = None
    expires_at: datetime | None = None
