"""A job's record as Redis and the database hold it, and its public view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from switchyard.errors import RecordUnreadable

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
STATUSES: tuple[str, ...] = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)
TERMINAL: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELED})


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


# Timestamps, one form per surface: Switchyard's own routes (jobs, files, dead letters) give
# ISO 8601 with milliseconds (`iso`); 000 and 003 show whole seconds (`iso_s`); 001, 002 and
# OpenAI give Unix seconds (integers, made where they are written).
def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_s(ms: int | None) -> str | None:
    """ISO 8601 to the second, as api-reference 000 and 003 show (`2024-11-07T10:00:00Z`)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms // 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def dt_ms(dt: datetime | None) -> int | None:
    """A database datetime (SQLite's come back naive, written as UTC) as epoch milliseconds."""
    if dt is None:
        return None
    return int((dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).timestamp() * 1000)


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
    metadata: dict[str, str] | None = None  # the caller's own labels (api/metadata.py bounds them)

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
        if self.metadata:
            h["metadata"] = orjson.dumps(self.metadata).decode()
        return h

    @classmethod
    def from_hash(cls, h: Any, *, job_id: str | None = None) -> JobRecord:
        """The record of a state hash (as HGETALL or the completion message gives it).

        Numbers are read as Lua may have written them (`12.0`, `1e+17`), exactly where the text
        holds an integer; a hash that cannot be read at all raises `RecordUnreadable` naming the
        job (`job_id` when the hash does not name it itself).
        """
        if not isinstance(h, dict):
            raise RecordUnreadable(job_id, f"not a hash but {type(h).__name__}")
        # bytes that are not UTF-8 read as U+FFFD: text is kept, never refused
        h = {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else k): (
                v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            )
            for k, v in h.items()
        }
        try:  # what workers write: plain integers (the web reads one such record per call)
            return cls._from_plain(h)
        except (KeyError, ValueError, TypeError):
            pass
        name = h.get("id")
        job_id = name if isinstance(name, str) and name else job_id
        try:
            return cls._from_text(h, job_id)
        except KeyError as exc:
            raise RecordUnreadable(job_id, f"field {exc.args[0]!r} is missing") from None
        except (ValueError, TypeError) as exc:  # orjson's JSONDecodeError is a ValueError
            raise RecordUnreadable(job_id, str(exc)[:300]) from None

    @classmethod
    def _from_plain(cls, h: dict[str, Any]) -> JobRecord:
        def opt_int(name: str) -> int | None:
            v = h.get(name)
            return int(v) if v not in (None, "") else None

        for name in _TEXT_FIELDS:
            if type(h.get(name, "")) is not str:
                raise TypeError(name)
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
            metadata=_metadata(orjson.loads(h["metadata"])) if h.get("metadata") else None,
        )

    @classmethod
    def _from_text(cls, h: dict[str, Any], job_id: str | None) -> JobRecord:
        def opt_int(name: str) -> int | None:
            v = h.get(name)
            return _int(name, v) if v not in (None, "") else None

        def num(name: str) -> int:
            v = h.get(name)
            return _int(name, v) if v not in (None, "") else 0

        def opt_text(name: str) -> str | None:
            v = h.get(name)
            return _str(name, v) if v not in (None, "") else None

        if job_id is None:
            raise KeyError("id")
        result = h.get("result")
        progress = h.get("progress")
        limits = None
        if h.get("rl_hourly") is not None:
            limits = {
                "hourly": _int("rl_hourly", h["rl_hourly"]),
                "daily_requests": num("rl_daily"),
                "daily_tokens": num("rl_tokens"),
            }
        return cls(
            id=job_id,
            kind=_str("kind", h["kind"]),
            dialect=_str("dialect", h.get("dialect", "native")),
            priority=_str("priority", h["priority"]),
            owner=_str("owner", h["owner"]),
            status=_str("status", h["status"]),
            created_ms=_int("created", h["created"]),
            model=opt_text("model"),
            started_ms=opt_int("started"),
            finished_ms=opt_int("finished"),
            attempts=num("attempts"),
            credits_charged=num("credits"),
            provider=opt_text("provider"),
            result=_json("result", result) if result else None,
            error_type=opt_text("error_type"),
            error_message=opt_text("error_message"),
            error_status=opt_int("error_status"),
            balance=opt_int("balance") if h.get("metered") in ("1", 1) else None,
            limits_remaining=limits,
            prompt_tokens=num("prompt_tokens"),
            completion_tokens=num("completion_tokens"),
            estimated_cost=_float("cost", h.get("cost") or 0.0),
            progress=_json("progress", progress) if progress else None,
            metadata=_metadata(_json("metadata", h["metadata"])) if h.get("metadata") else None,
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
            "metadata": self.metadata,  # the column's name (its attribute is `job_metadata`)
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
        """The record of a `jobs` row; one that cannot be read raises `RecordUnreadable`."""
        job_id = getattr(row, "id", None)
        try:
            return cls._from_row(row)
        except (AttributeError, KeyError, ValueError, TypeError, OverflowError) as exc:
            raise RecordUnreadable(
                job_id if isinstance(job_id, str) else None, f"{exc.__class__.__name__}: {exc}"[:300]
            ) from None

    @classmethod
    def _from_row(cls, row: Any) -> JobRecord:
        accounting = getattr(row, "accounting", None)
        # what admission reported is kept beside the job, not part of it: a row whose
        # accounting is not an object still reads, without it
        if not isinstance(accounting, dict):
            accounting = {}

        def ms(d: datetime | None) -> int | None:
            if d is None:
                return None
            return int((d.replace(tzinfo=UTC) if d.tzinfo is None else d).timestamp() * 1000)

        def opt_int(name: str) -> int | None:
            v = accounting.get(name)
            return None if v is None else _int(name, v)

        limits = accounting.get("limits_remaining")
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
            balance=opt_int("balance"),
            limits_remaining={str(k): _int(str(k), v) for k, v in limits.items()}
            if isinstance(limits, dict)
            else None,
            prompt_tokens=opt_int("prompt_tokens") or 0,
            completion_tokens=opt_int("completion_tokens") or 0,
            estimated_cost=_float("estimated_cost", accounting.get("estimated_cost") or 0.0),
            error_status=opt_int("error_status"),
            metadata=_metadata(getattr(row, "job_metadata", None)),
        )


# --- reading what Redis, Lua and the database hold ------------------------------------------------
# Beyond this, a count is no count (and a gigantic exponent must not make a gigantic integer).
_INT_DIGITS = 30
_INT_LIMIT = 10**_INT_DIGITS
_TEXT_FIELDS = (
    "id",
    "kind",
    "dialect",
    "priority",
    "owner",
    "status",
    "model",
    "provider",
    "error_type",
    "error_message",
)


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} is not text: {_show(value)}")
    return value


def _int(name: str, value: Any) -> int:
    """An integer as Redis or Lua wrote it. Lua formats numbers with %.17g: a counter past 10^16
    comes back as `1e+17`, and a script's arithmetic may give `12.0`; both read exactly (a
    fraction is dropped)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or abs(value) >= _INT_LIMIT:
            raise ValueError(f"field {name!r} is not a usable number: {_show(value)}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} is not a number: {_show(value)}")
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"field {name!r} is not a number: {_show(value)}") from None
    if not number.is_finite() or number.adjusted() >= _INT_DIGITS:
        raise ValueError(f"field {name!r} is not a usable number: {_show(value)}")
    return int(number)


def _float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"field {name!r} is not a number: {_show(value)}") from None


def _json(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} is not JSON text: {_show(value)}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"field {name!r} is not JSON ({exc})") from None


def _metadata(value: Any) -> dict[str, str] | None:
    """A job's metadata as stored: a map of text to text (anything else is no metadata)."""
    if not isinstance(value, dict) or not value:
        return None
    return {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in value.items()}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
