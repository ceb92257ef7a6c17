"""A job's record as Redis and the database hold it, and its public view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
STATUSES: tuple[str, ...] = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)
TERMINAL: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELED})


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class JobRecord:
    id: str
    kind: str
    dialect: str
    priority: str
    owner: str
    status: str
    created_ms: int
    model: str | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    attempts: int = 0
    credits_charged: int = 0
    provider: str | None = None
    result: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_status: int | None = None
    balance: int | None = None  # credits left after this job was charged; None: not metered
    limits_remaining: dict[str, int] | None = None  # at admission: hourly, daily_requests, daily_tokens
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost: float = 0.0
    progress: dict[str, Any] | None = None  # a running media job's: stage, percent, bytes

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    # --- Redis hash <-> record -------------------------------------------------------------
    def to_hash(self) -> dict[str, str | int]:
        h: dict[str, str | int] = {
            "id": self.id,
            "kind": self.kind,
            "dialect": self.dialect,
            "priority": self.priority,
            "owner": self.owner,
            "status": self.status,
            "created": self.created_ms,
            "attempts": self.attempts,
            "credits": self.credits_charged,
        }
        if self.model is not None:
            h["model"] = self.model
        return h

    @classmethod
    def from_hash(cls, h: dict[Any, Any]) -> JobRecord:
        h = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in h.items()
        }

        def opt_int(name: str) -> int | None:
            v = h.get(name)
            return int(v) if v not in (None, "") else None

        result = h.get("result")
        limits = None
        if h.get("rl_hourly") is not None:
            limits = {
                "hourly": int(h["rl_hourly"]),
                "daily_requests": int(h.get("rl_daily") or 0),
                "daily_tokens": int(h.get("rl_tokens") or 0),
            }
        return cls(
            id=h["id"],
            kind=h["kind"],
            dialect=h.get("dialect", "native"),
            priority=h["priority"],
            owner=h["owner"],
            status=h["status"],
            created_ms=int(h["created"]),
            model=h.get("model") or None,
            started_ms=opt_int("started"),
            finished_ms=opt_int("finished"),
            attempts=int(h.get("attempts") or 0),
            credits_charged=int(h.get("credits") or 0),
            provider=h.get("provider") or None,
            result=orjson.loads(result) if result else None,
            error_type=h.get("error_type") or None,
            error_message=h.get("error_message") or None,
            error_status=opt_int("error_status"),
            balance=opt_int("balance") if h.get("metered") == "1" else None,
            limits_remaining=limits,
            prompt_tokens=int(h.get("prompt_tokens") or 0),
            completion_tokens=int(h.get("completion_tokens") or 0),
            estimated_cost=float(h.get("cost") or 0.0),
            progress=orjson.loads(h["progress"]) if h.get("progress") else None,
        )

    def usage_row(self) -> dict[str, Any]:
        """What this finished job used, for the usage table and the status endpoints."""
        return {
            "job_id": self.id,
            "key_id": self.owner,
            "model": self.model,
            "kind": self.kind,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "success": self.status == SUCCEEDED,
            "latency_ms": max(0, (self.finished_ms or self.created_ms) - self.created_ms),
            "estimated_cost": self.estimated_cost,
            "credits": self.credits_charged,
            "created_at": ms_to_datetime(self.finished_ms or self.created_ms),
        }

    # --- database row <-> record -------------------------------------------------------------
    def to_row(self) -> dict[str, Any]:
        def dt(ms: int | None) -> datetime | None:
            return ms_to_datetime(ms)

        return {
            "id": self.id,
            "owner_key_id": self.owner,
            "kind": self.kind,
            "dialect": self.dialect,
            "priority": self.priority,
            "model": self.model,
            "status": self.status,
            "created_at": dt(self.created_ms),
            "started_at": dt(self.started_ms),
            "finished_at": dt(self.finished_ms),
            "attempts": self.attempts,
            "credits_charged": self.credits_charged,
            "provider": self.provider,
            "result": self.result,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "accounting": {
                "balance": self.balance,
                "limits_remaining": self.limits_remaining,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "estimated_cost": self.estimated_cost,
                "error_status": self.error_status,
            },
        }

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        accounting: dict[str, Any] = getattr(row, "accounting", None) or {}

        def ms(d: datetime | None) -> int | None:
            if d is None:
                return None
            return int((d.replace(tzinfo=UTC) if d.tzinfo is None else d).timestamp() * 1000)

        return cls(
            id=row.id,
            kind=row.kind,
            dialect=row.dialect,
            priority=row.priority,
            owner=row.owner_key_id,
            status=row.status,
            created_ms=ms(row.created_at) or 0,
            model=row.model,
            started_ms=ms(row.started_at),
            finished_ms=ms(row.finished_at),
            attempts=row.attempts,
            credits_charged=row.credits_charged,
            provider=row.provider,
            result=row.result,
            error_type=row.error_type,
            error_message=row.error_message,
            balance=accounting.get("balance"),
            limits_remaining=accounting.get("limits_remaining"),
            prompt_tokens=int(accounting.get("prompt_tokens") or 0),
            completion_tokens=int(accounting.get("completion_tokens") or 0),
            estimated_cost=float(accounting.get("estimated_cost") or 0.0),
            error_status=accounting.get("error_status"),
        )
