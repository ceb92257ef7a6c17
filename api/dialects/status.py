"""API status (api-reference 000, "API Status"): a key's limits and usage, health, model stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Request, Response, Router, get
from sqlalchemy.exc import SQLAlchemyError

from api.auth import Principal
from api.errors import NATIVE, handlers_for
from api.openapi import docs
from api.responses import json_response
from api.schemas import native
from api.state import Services, services
from jobs.accounting import CREDITS_KEY, day_reset_ms, hour_reset_ms
from jobs.client import redis_call
from jobs.records import dt_ms, iso_s, now_ms
from storage import usage
from storage.bounds import bounded
from storage.keys import KeyRecord, as_utc, credit_balances
from switchyard.errors import InvalidRequest, ModelNotFound, ServiceUnavailable


def _days(request: Request, default: int = 30) -> int:
    raw = request.query_params.get("days")
    if raw is None:
        return default
    try:
        days = int(raw)
    except ValueError:
        raise InvalidRequest.field("days", "must be an integer", raw) from None
    if not 1 <= days <= 365:
        raise InvalidRequest.field("days", "must be between 1 and 365", days)
    return days


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise InvalidRequest.field(name, "must be true or false", raw)


def _period(t: usage.Totals, *, detailed: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": t.requests}
    if detailed:
        out["successful_requests"] = t.successful
        out["failed_requests"] = t.failed
    out["total_tokens"] = t.total_tokens
    out["estimated_cost"] = round(t.estimated_cost, 6)
    if not detailed:
        out["success_rate"] = t.success_rate
    return out


def _model_stats(model: str, t: usage.Totals) -> dict[str, Any]:
    return {
        "model": model,
        "requests": t.requests,
        "successful_requests": t.successful,
        "failed_requests": t.failed,
        "success_rate": t.success_rate,
        "total_tokens": t.total_tokens,
        "estimated_cost": round(t.estimated_cost, 6),
        "avg_latency_ms": t.avg_latency_ms,
    }


def _scope(principal: Principal) -> str | None:
    """A key sees its own usage; the admin key sees everyone's."""
    return None if principal.is_admin else principal.key_id


async def key_limits(svc: Services, record: KeyRecord | None) -> tuple[dict[str, Any] | None, str]:
    """A key's limits with what each window has used and has left, and its usage state."""
    if record is None:
        return None, "healthy"
    now = now_ms()
    hour_used, day_used, tokens_used = await svc.accounts.window_usage(record.id, now)
    lim = record.limits

    def window(limit: int | None, used: int) -> dict[str, Any]:  # None: unlimited
        remaining = None if limit is None else max(limit - int(used), 0)
        return {"limit": limit, "used": int(used), "remaining": remaining}

    def share(used: int, limit: int | None) -> float:
        return 0.0 if limit is None else (int(used) / limit if limit else 1.0)

    limits = {
        "hourly": {**window(lim.hourly, hour_used), "reset_at": iso_s(hour_reset_ms(now))},
        "daily": {
            "requests": window(lim.daily_requests, day_used),
            "tokens": window(lim.daily_tokens, tokens_used),
            "reset_at": iso_s(day_reset_ms(now)),
        },
        "per_minute": msgspec.to_builtins(lim.per_minute),
        "max_tokens_per_request": lim.max_tokens_per_request,
    }  # fmt: skip
    shares = [share(hour_used, lim.hourly), share(day_used, lim.daily_requests)]
    state = "exceeded" if max(shares) >= 1 else ("warning" if max(shares) >= 0.8 else "healthy")
    return limits, state


async def _credits(svc: Services, principal: Principal) -> dict[str, Any]:
    """The key's credit balance (api-reference 002's `credits_remaining`); null when the key is
    not credit-metered (the admin key, a key made without credits)."""
    record = principal.record
    if record is None or not record.metered:
        return {"metered": False, "balance": None}
    live = await redis_call(lambda: svc.redis.hget(CREDITS_KEY, record.id))
    if live is not None:
        return {"metered": True, "balance": int(live)}
    return {"metered": True, "balance": (await credit_balances(svc.db, [record.id])).get(record.id, 0)}


@get(
    "/api/v1/status",
    opt=docs(answers=native.StatusAnswer, query={"include_chart": "true: a daily series of 30 days"}),
)
async def status(request: Request) -> Response[bytes]:
    """The calling key, its limits, its usage today, over 7 and over 30 days.

    `include_chart=true` adds a daily series of the last 30 days.
    """
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    chart = _flag(request, "include_chart")
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    scope = _scope(principal)
    today = await usage.totals(svc.db, scope, midnight)
    week = await usage.totals(svc.db, scope, midnight - timedelta(days=6))
    month = await usage.totals(svc.db, scope, midnight - timedelta(days=29))
    limits, usage_state = await key_limits(svc, principal.record)
    record = principal.record
    if record is not None:
        expires = as_utc(record.expires_at) if record.expires_at else None
        days_left = max((expires - now).days, 0) if expires else None
        api_key = {
            "id": record.id,
            "name": record.name,
            "key_prefix": record.prefix,
            "is_active": record.is_active and not record.revoked and not record.expired,
            "created_at": iso_s(dt_ms(record.created_at)),
            "expires_at": iso_s(dt_ms(expires)),
            "days_until_expiration": days_left,
        }
        expiration = (
            "no_expiration"
            if expires is None
            else ("expiring_soon" if days_left is not None and days_left < 7 else "active")
        )
    else:
        api_key = {"id": "admin", "name": "admin", "key_prefix": None, "is_active": True,
                   "created_at": None, "expires_at": None, "days_until_expiration": None}  # fmt: skip
        expiration = "no_expiration"
    data: dict[str, Any] = {
        "api_key": api_key,
        "limits": limits,
        "credits": await _credits(svc, principal),
        "usage": {
            "today": _period(today, detailed=True),
            "last_7_days": _period(week),
            "last_30_days": _period(month),
        },
        "health": {"api_key_status": "active", "expiration_status": expiration, "usage_status": usage_state},
    }
    if chart:
        series = await usage.daily(svc.db, scope, 30, midnight.date())
        data["chart"] = {
            "daily": [
                {"date": day.isoformat(), **_period(t, detailed=True), "success_rate": t.success_rate}
                for day, t in series
            ]
        }
    return json_response({"success": True, "data": data})


@get("/api/v1/status/health", opt=docs(answers=native.ChecksAnswer))
async def health(request: Request) -> Response[bytes]:
    """Redis and the database, each checked with a round trip; 503 when either is down."""
    svc = services(request)
    await svc.keys.authenticate(request)
    checks: dict[str, str] = {}
    try:
        async with bounded("queue (Redis)"):
            await svc.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 (any failure is "down" here)
        checks["redis"] = f"error: {exc.__class__.__name__}"
    try:
        await svc.db.ping()
        checks["database"] = "ok"
    except (SQLAlchemyError, OSError, ServiceUnavailable) as exc:
        checks["database"] = f"error: {exc.__class__.__name__}"
    healthy = all(v == "ok" for v in checks.values())
    body = {"success": healthy, "data": {"status": "healthy" if healthy else "degraded", "checks": checks,
                                         "timestamp": iso_s(now_ms())}}  # fmt: skip
    return json_response(body, 200 if healthy else 503)


@get("/api/v1/status/models", opt=docs(answers=native.ModelsUsageAnswer, query={"days": "1 to 365 (30)"}))
async def models(request: Request) -> Response[bytes]:
    """Usage per model over the last `days` days."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    days = _days(request)
    since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    rows = await usage.per_model(svc.db, _scope(principal), since)
    return json_response(
        {"success": True, "data": {"days": days, "models": [_model_stats(m, t) for m, t in rows]}}
    )


@get("/api/v1/status/overview", opt=docs(answers=native.OverviewAnswer))
async def overview(request: Request) -> Response[bytes]:
    """Totals at a glance: today, 7 and 30 days, and the most used models."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    scope = _scope(principal)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = await usage.totals(svc.db, scope, midnight - timedelta(days=29))
    data = {
        "total_requests": month.requests,
        "success_rate": month.success_rate,
        "total_tokens": month.total_tokens,
        "estimated_cost": round(month.estimated_cost, 6),
        "avg_latency_ms": month.avg_latency_ms,
        "today": _period(await usage.totals(svc.db, scope, midnight), detailed=True),
        "last_7_days": _period(await usage.totals(svc.db, scope, midnight - timedelta(days=6))),
        "last_30_days": _period(month),
        "top_models": [
            _model_stats(m, t)
            for m, t in (await usage.per_model(svc.db, scope, midnight - timedelta(days=29)))[:5]
        ],
    }
    return json_response({"success": True, "data": data})


@get(
    "/api/v1/status/{model:path}", opt=docs(answers=native.ModelUsageAnswer, query={"days": "1 to 365 (30)"})
)
async def model_status(request: Request, model: str) -> Response[bytes]:
    """One model's usage over the last `days` days, with a daily series."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    model = model.lstrip("/")
    days = _days(request)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    scope = _scope(principal)
    t = await usage.totals(svc.db, scope, midnight - timedelta(days=days - 1), model)
    if t.requests == 0 and not await svc.catalog.serves(model):
        raise ModelNotFound(model)
    series = await usage.daily(svc.db, scope, days, midnight.date(), model)
    data = {
        **_model_stats(model, t),
        "days": days,
        "daily": [{"date": d.isoformat(), **_period(s, detailed=True)} for d, s in series],
    }
    return json_response({"success": True, "data": data})


router = Router(
    path="/",
    route_handlers=[status, health, models, overview, model_status],
    exception_handlers=handlers_for(NATIVE),
)
