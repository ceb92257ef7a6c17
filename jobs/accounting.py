"""Rate limits and credits, enforced atomically in Redis so every web process shares one count.

Windows are fixed and aligned to the clock (UTC): the hour, the day, the minute. Admission is
one Lua script that checks every limit and the credit balance and, only if all pass, counts
the request, reserves its tokens and charges its credits. A finished job settles its tokens
(reserved → used) and, when it failed through no fault of the caller, refunds its credits,
in the same script that finishes it (see `jobs.scripts.FINISH`).
"""

from __future__ import annotations

from typing import Any

from storage.keys import KeyRecord

CREDITS_KEY = "sy:credits"  # hash key id -> live balance
HOUR_MS, DAY_MS, MINUTE_MS = 3_600_000, 86_400_000, 60_000
UNLIMITED = -1

# Failures that are not the caller's doing: their credits come back.
REFUNDABLE_ERRORS = frozenset(
    {"provider_error", "timeout", "worker_lost", "expired", "internal_error", "bad_job"}
)

# The admission check as a Lua function, shared by ADMIT (on its own) and jobs.scripts.SUBMIT
# (admission and enqueue in one round trip).
# Arguments: key id, now_ms, credits cost (0: not metered), tokens to reserve, modality,
#            hourly, daily requests, daily tokens, per-minute (-1: unlimited)
# Returns {'ok', hourly remaining, daily remaining, tokens remaining, balance or -1, tokens key,
#          per-minute remaining}
#      or {limit name, used, limit, reset_ms} when a limit is reached,
#      or {'credits', balance, cost, hourly used} when the balance is short,
#      or {'credits_unknown'}.
ADMIT_FUNCTION = r"""
local function admit(k, now, cost, reserve, modality, hourly, daily, tokens, per_minute)
  now, cost, reserve = tonumber(now), tonumber(cost), tonumber(reserve)
  hourly, daily = tonumber(hourly), tonumber(daily)
  tokens, per_minute = tonumber(tokens), tonumber(per_minute)
  local hour, day, minute = math.floor(now / 3600000), math.floor(now / 86400000), math.floor(now / 60000)
  local hk = 'sy:rl:' .. k .. ':h:' .. hour
  local dk = 'sy:rl:' .. k .. ':d:' .. day
  local tk = 'sy:rl:' .. k .. ':t:' .. day
  local mk = 'sy:rl:' .. k .. ':m:' .. modality .. ':' .. minute
  local used = redis.call('MGET', hk, dk, tk, mk)
  local h, d = tonumber(used[1] or '0'), tonumber(used[2] or '0')
  local t, m = tonumber(used[3] or '0'), tonumber(used[4] or '0')
  if hourly >= 0 and h + 1 > hourly then return {'hourly', h, hourly, (hour + 1) * 3600000} end
  if daily >= 0 and d + 1 > daily then return {'daily_requests', d, daily, (day + 1) * 86400000} end
  if tokens >= 0 and t + reserve > tokens then return {'daily_tokens', t, tokens, (day + 1) * 86400000} end
  if per_minute >= 0 and m + 1 > per_minute then
    return {'per_minute', m, per_minute, (minute + 1) * 60000}
  end
  local balance = -1
  if cost > 0 then
    local b = redis.call('HGET', 'sy:credits', k)
    if not b then return {'credits_unknown'} end
    balance = tonumber(b)
    if balance < cost then return {'credits', balance, cost, h} end
    balance = redis.call('HINCRBY', 'sy:credits', k, -cost)
  end
  -- A window's counter gets its expiry when this call creates it (the count is then what
  -- this call added): the window is in its name, so the expiry never changes after that.
  if redis.call('INCR', hk) == 1 then redis.call('PEXPIREAT', hk, (hour + 1) * 3600000 + 60000) end
  if redis.call('INCR', dk) == 1 then redis.call('PEXPIREAT', dk, (day + 1) * 86400000 + 60000) end
  if redis.call('INCRBY', tk, reserve) == reserve then
    redis.call('PEXPIREAT', tk, (day + 1) * 86400000 + 60000)
  end
  if redis.call('INCR', mk) == 1 then redis.call('PEXPIREAT', mk, (minute + 1) * 60000 + 60000) end
  local function left(limit, used) if limit < 0 then return -1 end return math.max(limit - used, 0) end
  return {'ok', left(hourly, h + 1), left(daily, d + 1), left(tokens, t + reserve), balance, tk,
          left(per_minute, m + 1)}
end
"""

# ARGV: the nine arguments of `admit` above.
ADMIT = ADMIT_FUNCTION + "return admit(unpack(ARGV, 1, 9))\n"

# ARGV: key id, now_ms. Returns {hour used, day used, tokens used}: read-only, for status.
USAGE = r"""
local k = ARGV[1]
local now = tonumber(ARGV[2])
local hour, day = math.floor(now / 3600000), math.floor(now / 86400000)
return {
  tonumber(redis.call('GET', 'sy:rl:' .. k .. ':h:' .. hour) or '0'),
  tonumber(redis.call('GET', 'sy:rl:' .. k .. ':d:' .. day) or '0'),
  tonumber(redis.call('GET', 'sy:rl:' .. k .. ':t:' .. day) or '0'),
}
"""


def hour_reset_ms(now_ms: int) -> int:
    return (now_ms // HOUR_MS + 1) * HOUR_MS


def day_reset_ms(now_ms: int) -> int:
    return (now_ms // DAY_MS + 1) * DAY_MS


def admit_args(record: KeyRecord, now: int, *, price: int, reserve_tokens: int, modality: str) -> list[Any]:
    """`admit`'s nine arguments for one request of this key (the web's admission and a batch's
    dispatch ask the same)."""
    limits = record.limits

    def limit(value: int | None) -> int:
        return UNLIMITED if value is None else int(value)

    return [
        record.id, now, price if record.metered else 0, reserve_tokens, modality,
        limit(limits.hourly), limit(limits.daily_requests), limit(limits.daily_tokens),
        limit(getattr(limits.per_minute, modality)),
    ]  # fmt: skip
