"""Custom persona models: one key's named system prompts over a base model, and their usage.

A persona's uses are read from the usage table (what workers record for every finished job),
where a call through `@org/name` is recorded under that name and the calling key. So counting
adds nothing to the chat path, and a deleted persona's name made again starts from zero
(only usage since the persona's creation counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, literal, outerjoin
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from storage.bounds import bounded_call
from storage.db import Database
from storage.keys import as_utc, utcnow
from storage.models import CustomModel, Usage
from storage.usage import Totals
from switchyard.errors import Conflict

# The fields a caller sets; the rest (id, owner, times) are the store's.
EDITABLE = (
    "name",
    "display_name",
    "description",
    "personality_summary",
    "system_prompt",
    "base_model",
    "temperature",
    "top_p",
    "max_tokens",
)


@dataclass(frozen=True, slots=True)
class CustomModelRecord:
    id: int
    owner_key_id: str
    name: str
    display_name: str
    description: str
    personality_summary: str
    system_prompt: str
    base_model: str
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class CustomUsage(Totals):
    """A custom model's usage: the status routes' totals (and their rates), and its last use."""

    last_used_at: datetime | None = None


def _record(row: CustomModel) -> CustomModelRecord:
    assert row.id is not None
    return CustomModelRecord(
        id=row.id,
        owner_key_id=row.owner_key_id,
        name=row.name,
        display_name=row.display_name,
        description=row.description,
        personality_summary=row.personality_summary,
        system_prompt=row.system_prompt,
        base_model=row.base_model,
        temperature=row.temperature,
        top_p=row.top_p,
        max_tokens=row.max_tokens,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f"a custom model named '{name}' already exists for this key",
        details=[
            {"field": "name", "message": "already in use by another of this key's models", "value": name}
        ],
    )


@bounded_call("database")
async def create_custom(db: Database, owner_key_id: str, fields: dict[str, Any]) -> CustomModelRecord:
    """Store a new persona; a name this key already uses is a Conflict (the unique index decides,
    so two concurrent creations cannot both win)."""
    now = utcnow()
    row = CustomModel(
        owner_key_id=owner_key_id,
        created_at=now,
        updated_at=now,
        **{k: v for k, v in fields.items() if k in EDITABLE},
    )
    try:
        async with db.session() as session:
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise _name_taken(fields["name"]) from None
    return _record(row)


@bounded_call("database")
async def get_custom(db: Database, owner_key_id: str, model_id: int) -> CustomModelRecord | None:
    async with db.session() as session:
        row = await session.get(CustomModel, model_id)
    return _record(row) if row is not None and row.owner_key_id == owner_key_id else None


@bounded_call("database")
async def find_custom(db: Database, owner_key_id: str, name: str) -> CustomModelRecord | None:
    """The key's persona of that name: one read on the (owner, name) unique index."""
    query = select(CustomModel).where(CustomModel.owner_key_id == owner_key_id, CustomModel.name == name)
    async with db.session() as session:
        row = (await session.exec(query)).first()
    return _record(row) if row is not None else None


@bounded_call("database")
async def list_custom(
    db: Database, owner_key_id: str, *, offset: int, limit: int
) -> tuple[list[CustomModelRecord], int]:
    """A page of the key's personas, oldest first, and how many it has in all."""
    page = (
        select(CustomModel)
        .where(CustomModel.owner_key_id == owner_key_id)
        .order_by(col(CustomModel.id))
        .offset(offset)
        .limit(limit)
    )
    count = select(func.count()).select_from(CustomModel).where(CustomModel.owner_key_id == owner_key_id)
    async with db.session() as session:
        rows = (await session.exec(page)).all()
        total = (await session.exec(count)).one()
    return [_record(r) for r in rows], int(total)


@bounded_call("database")
async def update_custom(
    db: Database, owner_key_id: str, model_id: int, changes: dict[str, Any]
) -> CustomModelRecord | None:
    """Apply `changes` (EDITABLE fields only); None when the key has no such persona."""
    try:
        async with db.session() as session:
            row = await session.get(CustomModel, model_id)
            if row is None or row.owner_key_id != owner_key_id:
                return None
            for name, value in changes.items():
                if name in EDITABLE:
                    setattr(row, name, value)
            row.updated_at = utcnow()
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise _name_taken(changes.get("name", "")) from None
    return _record(row)


@bounded_call("database")
async def delete_custom(db: Database, owner_key_id: str, model_id: int) -> CustomModelRecord | None:
    async with db.session() as session:
        row = await session.get(CustomModel, model_id)
        if row is None or row.owner_key_id != owner_key_id:
            return None
        record = _record(row)
        await session.delete(row)
    return record


@bounded_call("database")
async def custom_usage(
    db: Database,
    owner_key_id: str,
    prefix: str,
    *,
    model_ids: list[int] | None = None,
    since: datetime | None = None,
) -> dict[int, CustomUsage]:
    """Usage per persona of the key, from the usage rows its calls left under `prefix + name`
    since the persona was made (and since `since`, when given). Every persona asked for is in
    the answer, unused ones with zeros."""
    on = [
        col(Usage.key_id) == col(CustomModel.owner_key_id),
        col(Usage.model) == literal(prefix) + col(CustomModel.name),
        col(Usage.created_at) >= col(CustomModel.created_at),
    ]
    if since is not None:
        on.append(col(Usage.created_at) >= since)
    query = (
        core_select(
            col(CustomModel.id),
            func.count(col(Usage.job_id)).label("requests"),
            func.coalesce(func.sum(case((col(Usage.success), 1), else_=0)), 0).label("successful"),
            func.coalesce(func.sum(col(Usage.total_tokens)), 0).label("tokens"),
            func.coalesce(func.sum(col(Usage.estimated_cost)), 0.0).label("cost"),
            func.coalesce(func.sum(col(Usage.latency_ms)), 0).label("latency"),
            func.max(col(Usage.created_at)).label("last_used"),
        )
        .select_from(outerjoin(CustomModel, Usage, and_(*on)))
        .where(col(CustomModel.owner_key_id) == owner_key_id)
        .group_by(col(CustomModel.id))
    )
    if model_ids is not None:
        if not model_ids:
            return {}
        query = query.where(col(CustomModel.id).in_(model_ids))
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {
        int(r.id): CustomUsage(
            requests=int(r.requests),
            successful=int(r.successful),
            total_tokens=int(r.tokens),
            estimated_cost=float(r.cost),
            latency_ms_sum=int(r.latency),
            last_used_at=_datetime(r.last_used),
        )
        for r in rows
    }


def _datetime(value: Any) -> datetime | None:
    """max() over a DateTime column: SQLite hands back the stored text, PostgreSQL a datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)
