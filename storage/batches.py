"""Batch rows (`storage.models.BatchRow`): created by the web process, moved along by the
batch workers. Reads and writes are one short session each, within the web's dependency
bound (`storage.bounds`); none is on a hot path."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import col, select, update

from storage.bounds import bounded_call
from storage.db import Database
from storage.keys import as_utc
from storage.models import BatchRow

_TIMES = (
    "created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
    "expired_at", "cancelling_at", "cancelled_at", "expires_at",
)  # fmt: skip


def _normalized(row: BatchRow) -> BatchRow:
    """SQLite hands datetimes back naive; they were written as UTC."""
    for name in _TIMES:
        value = getattr(row, name)
        if isinstance(value, datetime):
            setattr(row, name, as_utc(value))
    return row


@bounded_call("database")
async def insert_batch(db: Database, row: BatchRow) -> BatchRow:
    async with db.session() as session:
        session.add(row)
    return row


@bounded_call("database")
async def get_batch(db: Database, batch_id: str) -> BatchRow | None:
    async with db.session() as session:
        row = await session.get(BatchRow, batch_id)
    return _normalized(row) if row else None


@bounded_call("database")
async def update_batch(db: Database, batch_id: str, **fields: Any) -> None:
    async with db.session() as session:
        await session.exec(update(BatchRow).where(col(BatchRow.id) == batch_id).values(**fields))  # type: ignore[call-overload]


@bounded_call("database")
async def list_batches(
    db: Database, owner: str | list[str] | None, *, after: str | None, limit: int
) -> list[BatchRow]:
    """Newest first (ids are time-ordered); `owner`: one key's, several keys' (a user's), or
    None: every key's (the admin)."""
    query = select(BatchRow)
    if isinstance(owner, list):
        query = query.where(col(BatchRow.owner_key_id).in_(owner))
    elif owner is not None:
        query = query.where(BatchRow.owner_key_id == owner)
    if after is not None:
        query = query.where(col(BatchRow.id) < after)
    query = query.order_by(col(BatchRow.id).desc()).limit(limit)
    async with db.session() as session:
        rows = (await session.exec(query)).all()
    return [_normalized(r) for r in rows]
