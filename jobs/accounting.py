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

# The admission check as Lua functions, shared by ADMIT (on its own), jobs.scripts.SUBMIT
# (admission and enqueue in one round trip) and jobs.scripts.DISPATCH_LINES (a Batch API chunk).
# `admit_lines` admits requests of one key in order, exactly as that many `admit` calls one
# after the other would, and counts the ones admitted with one command per counter: the first
# refusal ends the run (what comes after it waits, as it would behind a refused request).
# Arguments: key id, now_ms, credits cost (0: not metered), the tokens each request reserves
#            (a list), modality, hourly, daily requests, daily tokens, per-minute (-1: unlimited)
# Returns how many were admitted, the refusal that ended the run (or false), the tokens key,
#         and for each admitted request {hourly remaining, daily remaining, tokens remaining,
#         balance or -1, per-minute remaining}.
# A refusal is {limit name, used, limit, reset_ms} when a limit is reached,
#               {'credits', balance, cost, hourly used} when the balance is short,
#               or {'credits_unknown'}.
# `admit` is one request: {'ok', hourly remaining, daily remaining, tokens remaining, balance or
# -1, tokens key, per-minute remaining} or the refusal.
ADMIT_FUNCTION = r"""
local function admit_lines(k, now, cost, reserves, modality, hourly, daily, tokens, per_minute)
  now, cost = tonumber(now), tonumber(cost)
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
  local function left(limit, used) if limit < 0 then return -1 end return math.max(limit - used, 0) end
  local admitted, refusal, reserved = {}, false, 0
  local balance = -1
  if cost > 0 then balance = nil end  -- read when the first request gets past the limits
  for _, r in ipairs(reserves) do
    local reserve = tonumber(r)
    if hourly >= 0 and h + 1 > hourly then refusal = {'hourly', h, hourly, (hour + 1) * 3600000} break end
    if daily >= 0 and d + 1 > daily then
      refusal = {'daily_requests', d, daily, (day + 1) * 86400000}
      break
    end
    if tokens >= 0 and t + reserve > tokens then
      refusal = {'daily_tokens', t, tokens, (day + 1) * 86400000}
      break
    end
    if per_minute >= 0 and m + 1 > per_minute then
      refusal = {'per_minute', m, per_minute, (minute + 1) * 60000}
      break
    end
    if cost > 0 then
      if balance == nil then
        local b = redis.call('HGET', 'sy:credits', k)
        if not b then refusal = {'credits_unknown'} break end
        balance = tonumber(b)
      end
      if balance < cost then refusal = {'credits', balance, cost, h} break end
      balance = balance - cost
    end
    h, d, t, m = h + 1, d + 1, t + reserve, m + 1
    reserved = reserved + reserve
    admitted[#admitted + 1] = {left(hourly, h), left(daily, d), left(tokens, t), balance, left(per_minute, m)}
  end
  local n = #admitted
  if n > 0 then
    if cost > 0 then redis.call('HINCRBY', 'sy:credits', k, -cost * n) end
    -- A window's counter gets its expiry when this call creates it (the count is then what
    -- this call added): the window is in its name, so the expiry never changes after that.
    if redis.call('INCRBY', hk, n) == n then redis.call('PEXPIREAT', hk, (hour + 1) * 3600000 + 60000) end
    if redis.call('INCRBY', dk, n) == n then redis.call('PEXPIREAT', dk, (day + 1) * 86400000 + 60000) end
    if redis.call('INCRBY', tk, reserved) == reserved then
      redis.call('PEXPIREAT', tk, (day + 1) * 86400000 + 60000)
    end
    if redis.call('INCRBY', mk, n) == n then redis.call('PEXPIREAT', mk, (minute + 1) * 60000 + 60000) end
  end
  return n, refusal, tk, admitted
end

local function admit(k, now, cost, reserve, modality, hourly, daily, tokens, per_minute)
  local n, refusal, tk, admitted =
    admit_lines(k, now, cost, {reserve}, modality, hourly, daily, tokens, per_minute)
  if n == 0 then return refusal end
  local a = admitted[1]
  return {'ok', a[1], a[2], a[3], a[4], tk, a[5]}
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
