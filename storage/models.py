"""SQLModel tables. Table models stay inside `storage/`; callers get plain records or public views."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Index
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
