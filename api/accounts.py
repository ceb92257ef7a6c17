"""Admission of a request against its key's limits and credits, and the headers that say so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from redis.asyncio import Redis

from api.auth import Principal
from jobs.accounting import CREDITS_KEY, MINUTE_MS, UNLIMITED, USAGE, admit_args, hour_reset_ms
from jobs.client import redis_call
from jobs.records import iso_s, now_ms
from storage.db import Database
from storage.keys import credit_balances
from switchyard.errors import Forbidden, InvalidRequest, PaymentRequired, RateLimited, ServiceUnavailable

MODALITIES = ("chat", "image", "video")
_MESSAGES = {
    "hourly": "Hourly rate limit exceeded",
    "daily_requests": "Daily request limit exceeded",
    "daily_tokens": "Daily token limit exceeded",
    "per_minute": "Per-minute rate limit exceeded",
}


@dataclass(frozen=True, slots=True)
class Plan:
    """What admitting one request asks of Redis, and what its answer means."""

    price: int  # credits the call costs; drawn from a balance only for a metered key
    args: list[Any] | None  # `admit`'s nine arguments; None for the admin key (no limits)
    hourly_limit: int
    now: int
    # The window the `X-RateLimit-*` headers describe: the hour for a key, the minute for an
    # anonymous caller (whose only limits are per minute); its limit when it is the minute.
    minute_limit: int | None = None

    def headers(self, hourly_remaining: int | None) -> dict[str, str]:
        if self.args is None or hourly_remaining is None:
            return {}
        return rate_headers(self.hourly_limit, hourly_remaining, hour_reset_ms(self.now))

    def admitted_headers(self, verdict: list[Any], limits_remaining: dict[str, int] | None) -> dict[str, str]:
        """The headers of an admitted request, from admission's answer."""
        if self.minute_limit is not None:
            if len(verdict) < 7:
                return {}
            return rate_headers(self.minute_limit, int(verdict[6]), (self.now // MINUTE_MS + 1) * MINUTE_MS)
        return self.headers(limits_remaining["hourly"] if limits_remaining else None)


def rate_headers(limit: int, remaining: int, reset_ms: int) -> dict[str, str]:
    if limit < 0:
        return {}
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(max(remaining, 0)),
        "x-ratelimit-reset": str(reset_ms // 1000),
    }


def _limit(value: int | None) -> int:
    return UNLIMITED if value is None else int(value)  # None: unlimited (a key's `null`)


class Accounts:
    def __init__(self, redis: Redis, db: Database, *, sync_credits: int = 1, batch_credits: int = 2) -> None:
        self.redis = redis
        self.db = db
        self.sync_credits = sync_credits
        self.batch_credits = batch_credits
        self._usage = redis.register_script(USAGE)  # sent as its SHA, not its text, per call

    def check_request(self, principal: Principal, *, model: str | None, max_tokens: int | None) -> None:
        """The key's own bounds on a request: its model list and its per-request token cap."""
        record = principal.record
        if record is None:
            return
        if model is not None and record.models is not None and model not in record.models:
            raise Forbidden(f"this API key may not use model '{model}'")
        cap = record.limits.max_tokens_per_request
        if max_tokens is not None and cap is not None and max_tokens > cap:
            raise InvalidRequest.field(
                "max_tokens", f"exceeds this key's max_tokens_per_request ({cap})", max_tokens
            )

    def plan(self, principal: Principal, *, modality: str, reserve_tokens: int, batch: bool) -> Plan:
        # What the call costs; a key that is not credit-metered (and the admin key) draws it
        # from no balance, so `credits_remaining` stays null for it.
        price = self.batch_credits if batch else self.sync_credits
        now = now_ms()
        record = principal.record
        if record is None:  # the admin key: no limits
            return Plan(price, None, UNLIMITED, now)
        args = admit_args(record, now, price=price, reserve_tokens=reserve_tokens, modality=modality)
        minute = _limit(getattr(record.limits.per_minute, modality)) if principal.anonymous else None
        return Plan(price, args, _limit(record.limits.hourly), now, minute)

    async def window_usage(self, key_id: str, now: int) -> tuple[int, int, int]:
        """Requests this hour, requests today and tokens today, as admission counts them."""
        hour, day, tokens = await redis_call(lambda: self._usage(args=[key_id, now]))
        return int(hour), int(day), int(tokens)

    async def hourly_headers(self, principal: Principal) -> dict[str, str]:
        """The key's hourly window as `X-RateLimit-*` headers, for responses that admitted nothing."""
        record = principal.record
        if record is None:
            return {}
        now = now_ms()
        hour_used, _, _ = await self.window_usage(record.id, now)
        limit = _limit(record.limits.hourly)
        return rate_headers(limit, limit - hour_used, hour_reset_ms(now))

    async def seed_balance(self, principal: Principal) -> None:
        """Redis lost (or never had) this key's balance: start it from the database's copy."""
        assert principal.record is not None
        balance = (await credit_balances(self.db, [principal.key_id])).get(principal.key_id, 0)
        await redis_call(lambda: self.redis.hsetnx(CREDITS_KEY, principal.key_id, str(balance)))

    def refuse(self, plan: Plan, verdict: list[Any]) -> NoReturn:
        """Raise what admission's refusal means: 402 for credits, 429 for a limit."""
        outcome = verdict[0].decode()
        if outcome == "credits":
            short = PaymentRequired(required=int(verdict[2]), available=int(verdict[1]))
            short.headers = plan.headers(plan.hourly_limit - int(verdict[3]))
            raise short
        if outcome not in _MESSAGES:
            raise ServiceUnavailable(f"admission failed: {outcome}")
        used, limit, reset_ms = int(verdict[1]), int(verdict[2]), int(verdict[3])
        retry_after = max(1, -(-(reset_ms - plan.now) // 1000))
        window = {
            "limit": limit,
            "used": used,
            "remaining": max(limit - used, 0),
            "reset_at": iso_s(reset_ms),
        }
        headers = rate_headers(limit, 0, reset_ms) | {"retry-after": str(retry_after)}
        extra = {"limits": {outcome: window}}
        raise RateLimited(_MESSAGES[outcome], extra=extra, headers=headers, code=outcome)
