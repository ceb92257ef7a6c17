"""Aggregates over recorded usage, for the status endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlmodel import col

from storage.bounds import bounded_call
from storage.db import Database
from storage.models import Usage


@dataclass(slots=True)
class Totals:
    requests: int = 0
    successful: int = 0
    total_tokens: int = 0
    estimated_cost: float = 0.0
    latency_ms_sum: int = 0

    @property
    def failed(self) -> int:
        return self.requests - self.successful

    @property
    def success_rate(self) -> float:
        return round(100.0 * self.successful / self.requests, 1) if self.requests else 100.0

    @property
    def avg_latency_ms(self) -> float:
        return round(self.latency_ms_sum / self.requests, 1) if self.requests else 0.0


def _columns() -> list[Any]:
    return [
        func.count().label("requests"),
        func.coalesce(func.sum(case((col(Usage.success), 1), else_=0)), 0).label("successful"),
        func.coalesce(func.sum(Usage.total_tokens), 0).label("tokens"),
        func.coalesce(func.sum(Usage.estimated_cost), 0.0).label("cost"),
        func.coalesce(func.sum(Usage.latency_ms), 0).label("latency"),
    ]


def _totals(row: Any) -> Totals:
    return Totals(int(row.requests), int(row.successful), int(row.tokens), float(row.cost), int(row.latency))


# Whose usage: one key's, several keys' (a user's), or None for everyone's.
Scope = str | list[str] | None


def _scoped(query: Any, key_id: Scope, since: datetime, model: str | None = None) -> Any:
    query = query.where(Usage.created_at >= since)
    if isinstance(key_id, list):
        query = query.where(col(Usage.key_id).in_(key_id))
    elif key_id is not None:
        query = query.where(Usage.key_id == key_id)
    if model is not None:
        query = query.where(Usage.model == model)
    return query


@bounded_call("database")
async def totals(db: Database, key_id: Scope, since: datetime, model: str | None = None) -> Totals:
    async with db.connect() as conn:
        row = (await conn.execute(_scoped(select(*_columns()), key_id, since, model))).one()
    return _totals(row)


@bounded_call("database")
async def per_model(db: Database, key_id: Scope, since: datetime) -> list[tuple[str, Totals]]:
    query = _scoped(select(col(Usage.model), *_columns()), key_id, since).group_by(col(Usage.model))
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    out = [(row.model or "", _totals(row)) for row in rows]
    out.sort(key=lambda item: item[1].requests, reverse=True)
    return out


@bounded_call("database")
async def daily(
    db: Database, key_id: Scope, days: int, today: date, model: str | None = None
) -> list[tuple[date, Totals]]:
    """One entry per UTC day, oldest first, zeros included."""
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    if db.is_sqlite:
        day = func.date(Usage.created_at)
    else:
        day = func.to_char(func.timezone("UTC", Usage.created_at), "YYYY-MM-DD")
    query = _scoped(select(day.label("day"), *_columns()), key_id, since, model).group_by(day)
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    found = {str(row.day)[:10]: _totals(row) for row in rows}
    return [
        (first + timedelta(days=i), found.get((first + timedelta(days=i)).isoformat(), Totals()))
        for i in range(days)
    ]
