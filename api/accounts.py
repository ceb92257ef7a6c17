"""Admission of a request against its key's limits and credits, and the headers that say so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from api.auth import Principal
from jobs.accounting import ADMIT, CREDITS_KEY, UNLIMITED, Admission, hour_reset_ms
from jobs.client import redis_call
from jobs.records import iso, now_ms
from storage.db import Database
from storage.keys import KeyLimits, get_key
from switchyard.errors import Forbidden, InvalidRequest, PaymentRequired, RateLimited

MODALITIES = ("chat", "image", "video")
_MESSAGES = {
    "hourly": "Hourly rate limit exceeded",
    "daily_requests": "Daily request limit exceeded",
    "daily_tokens": "Daily token limit exceeded",
    "per_minute": "Per-minute rate limit exceeded",
}


@dataclass(frozen=True, slots=True)
class Charge:
    """What admission took from a key, carried on the job so the worker can settle or refund it."""

    admission: Admission | None
    credits: int
    reserved_tokens: int

    def job_state(self) -> dict[str, Any]:
        if self.admission is None:
            return {}
        a = self.admission
        state: dict[str, Any] = {
            "reserved": self.reserved_tokens,
            "tokens_key": a.tokens_key,
            "rl_hourly": a.hourly_remaining,
            "rl_daily": a.daily_remaining,
            "rl_tokens": a.tokens_remaining,
        }
        if a.balance is not None:
            state["metered"] = 1
            state["balance"] = a.balance
        return state

    def headers(self) -> dict[str, str]:
        if self.admission is None:
            return {}
        a = self.admission
        return rate_headers(a.hourly_limit, a.hourly_remaining, a.reset_ms)


def rate_headers(limit: int, remaining: int, reset_ms: int) -> dict[str, str]:
    if limit < 0:
        return {}
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(max(remaining, 0)),
        "x-ratelimit-reset": str(reset_ms // 1000),
    }


def _limit(value: int | None) -> int:
    return UNLIMITED if value is None else int(value)


class Accounts:
    def __init__(self, redis: Redis, db: Database, *, sync_credits: int = 1, batch_credits: int = 2) -> None:
        self.redis = redis
        self.db = db
        self.sync_credits = sync_credits
        self.batch_credits = batch_credits
        self._admit = redis.register_script(ADMIT)

    def check_request(self, principal: Principal, *, model: str | None, max_tokens: int | None) -> None:
        """The key's own bounds on a request: its model list and its per-request token cap."""
        record = principal.record
        if record is None:
            return
        if model is not None and record.models is not None and model not in record.models:
            raise Forbidden(f"this API key may not use model '{model}'")
        cap = record.limits.max_tokens_per_request
        if max_tokens is not None and max_tokens > cap:
            raise InvalidRequest.field(
                "max_tokens", f"exceeds this key's max_tokens_per_request ({cap})", max_tokens
            )

    async def admit(self, principal: Principal, *, modality: str, reserve_tokens: int, batch: bool) -> Charge:
        record = principal.record
        # What the call costs; a key that is not credit-metered (and the admin key) draws it
        # from no balance, so `credits_remaining` stays null for it.
        price = self.batch_credits if batch else self.sync_credits
        if record is None:  # the admin key: no limits
            return Charge(None, price, 0)
        limits: KeyLimits = record.limits
        cost = price if record.metered else 0
        now = now_ms()
        argv = [
            record.id, now, cost, reserve_tokens, modality,
            _limit(limits.hourly), _limit(limits.daily_requests), _limit(limits.daily_tokens),
            _limit(getattr(limits.per_minute, modality)),
        ]  # fmt: skip
        result = await redis_call(lambda: self._admit(args=argv))
        if result[0] == b"credits_unknown":  # Redis lost or never had this balance: start from the database
            fresh = await get_key(self.db, record.id)
            balance = fresh.credits if fresh is not None and fresh.credits is not None else 0
            await redis_call(lambda: self.redis.hsetnx(CREDITS_KEY, record.id, balance))
            result = await redis_call(lambda: self._admit(args=argv))
        outcome = result[0].decode()
        if outcome == "ok":
            _, hourly_left, daily_left, tokens_left, balance, tokens_key = result
            admission = Admission(
                hourly_remaining=int(hourly_left),
                daily_remaining=int(daily_left),
                tokens_remaining=int(tokens_left),
                balance=int(balance) if cost > 0 else None,
                tokens_key=tokens_key.decode(),
                hourly_limit=limits.hourly,
                reset_ms=hour_reset_ms(now),
            )
            return Charge(admission, price, reserve_tokens)
        if outcome == "credits":
            raise PaymentRequired(required=int(result[2]), available=int(result[1]))
        used, limit, reset_ms = int(result[1]), int(result[2]), int(result[3])
        retry_after = max(1, -(-(reset_ms - now) // 1000))
        window = {"limit": limit, "used": used, "remaining": max(limit - used, 0), "reset_at": iso(reset_ms)}
        headers = rate_headers(limit, 0, reset_ms) | {"retry-after": str(retry_after)}
        raise RateLimited(
            _MESSAGES[outcome], extra={"limits": {outcome: window}}, headers=headers, code=outcome
        )
