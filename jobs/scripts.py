"""Lua scripts that make a multi-key job transition one atomic Redis round trip."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from jobs.accounting import ADMIT_FUNCTION

_pack = msgspec.msgpack.Encoder().encode

# Claim up to `limit` ready jobs for one worker, highest-priority queue first.
# A queue the worker does not serve still blocks the queues below it while it has jobs
# waiting (not already running): that is what makes interactive work run before batch work.
# ARGV: now_ms, limit, lease_ms, scan, n, then n pairs (queue, served 0/1)
# Returns {claimed, next_ms, blocked}; claimed is a list of 6-tuples (job id, queue,
# arq job body, try, state hash as flat list, aborted 0/1); next_ms is when the next job may be
# ready (a deferred job's time, or the end of a running job's lease: an idle worker looks again
# then, so a dead worker's jobs run again one lease after its last renewal, not at the next idle
# sweep); blocked is 1 when a queue this worker does not serve held the lower ones back.
CLAIM = r"""
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local lease = ARGV[3]
local scan = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local out = {}
local claimed = 0
local next_ms = false
local blocked = 0
for i = 0, n - 1 do
  local q = ARGV[6 + i * 2]
  local served = ARGV[7 + i * 2] == '1'
  local waiting = 0
  if claimed < limit or not served then
    -- Jobs stay in their queue while they run, so the ready ids begin with running ones:
    -- read the queue a page at a time (a page covers the claim and a few running jobs) up to
    -- `scan` ids past the claim, rather than `limit + scan` ids on every call.
    local offset, budget, stop = 0, limit + scan, false
    while offset < budget and not stop do
      local count = math.min(limit + 32, budget - offset)
      local ids = redis.call('ZRANGEBYSCORE', q, '-inf', now, 'LIMIT', offset, count)
      for _, id in ipairs(ids) do
        if served and claimed >= limit then stop = true break end
        local held = redis.call('PTTL', 'arq:in-progress:' .. id)
        if held >= 0 and served then
          -- running: if its worker dies, the job is ready when this lease lapses (0: within 1 ms)
          local lapse = now + math.max(held, 1)
          if (not next_ms) or lapse < next_ms then next_ms = lapse end
        end
        if held == -2 then
          if served and claimed < limit then
            local body = redis.call('GET', 'arq:job:' .. id)
            redis.call('PSETEX', 'arq:in-progress:' .. id, lease, '1')
            local try = redis.call('INCR', 'arq:retry:' .. id)
            redis.call('EXPIRE', 'arq:retry:' .. id, 88400)
            local state = {}
            local skey = 'sy:job:' .. id
            local status = redis.call('HGET', skey, 'status')
            if status or redis.call('EXISTS', skey) == 1 then
              -- still 'running' from an earlier claim: that worker died with it (a retry or a
              -- shutdown puts it back as 'queued'), and only such lost runs count as lost
              if status == 'running' then
                redis.call('HINCRBY', skey, 'lost', 1)
              end
              redis.call('HSET', skey, 'status', 'running', 'attempts', try)
              redis.call('HSETNX', skey, 'started', now)
              state = redis.call('HGETALL', skey)
            end
            local aborted = redis.call('ZREM', 'arq:abort', id)
            out[#out + 1] = {id, q, body or false, try, state, aborted}
            claimed = claimed + 1
          else
            waiting = waiting + 1
            if not served then stop = true break end
          end
        end
      end
      if #ids < count or (served and claimed >= limit) then stop = true end
      offset = offset + #ids
    end
  end
  if served then
    local nxt = redis.call('ZRANGEBYSCORE', q, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #nxt > 0 then
      local s = tonumber(nxt[2])
      if (not next_ms) or s < next_ms then next_ms = s end
    end
  elseif waiting > 0 then
    blocked = 1
    break
  end
end
return {out, next_ms, blocked}
"""

# What finishing and canceling share, as Lua functions prepended to both scripts.
# settle: once per job, turn its reserved tokens into the tokens it used and, when `refund`,
# give its credits back (to the key's balance when the key is metered); true the first time
# (a job's first finish or cancel: what counts a Batch API line once, `count_in_batch`).
# notify: publish the job's state to the web processes waiting for it, if any are (`notify`
# holds their channels, separated by spaces).
SETTLE_AND_NOTIFY = r"""
local function settle(skey, used, refund)
  if redis.call('HSETNX', skey, 'settled', '1') == 0 then return false end
  local f = redis.call('HMGET', skey, 'tokens_key', 'reserved', 'rl_tokens', 'credits', 'metered', 'owner')
  local tk = f[1]
  if tk and redis.call('EXISTS', tk) == 1 then
    local delta = used - tonumber(f[2] or '0')
    if delta ~= 0 then redis.call('INCRBY', tk, delta) end
    -- what the caller is shown as left today: after this call, not with its reservation
    local rl = tonumber(f[3] or '-1')
    if rl >= 0 and delta ~= 0 then redis.call('HSET', skey, 'rl_tokens', math.max(rl - delta, 0)) end
  end
  local credits = tonumber(f[4] or '0')
  if refund and credits > 0 then
    redis.call('HSET', skey, 'credits', 0, 'refunded', credits)
    if f[5] == '1' then
      local balance = redis.call('HINCRBY', 'sy:credits', f[6], credits)
      redis.call('HSET', skey, 'balance', balance)
    end
  end
  return true
end

local function notify(skey)
  local channel = redis.call('HGET', skey, 'notify')
  if not channel then return end
  local flat = redis.call('HGETALL', skey)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  local message = cjson.encode(h)
  -- one channel, or several separated by spaces when replays of an idempotent call wait too
  for ch in string.gmatch(channel, '%S+') do redis.call('PUBLISH', ch, message) end
end
"""

# Counting a finished line of a Batch API batch (jobs.batches), prepended to FINISH_BATCH and
# CANCEL. Once per job (called only when `settle`, which runs first in the same script, did its
# once-only work: no flag of its own): its outcome is counted on the batch and its id and
# custom_id are listed for the output file; the finish that makes the batch's finished lines
# reach its target (every dispatched line, set when dispatching ends) enqueues the batch's
# finalize job, and the first finish past the batch's window stops it (`stop` = expired) and
# enqueues its dispatch job to cancel what still waits. Both ARQ bodies are in the batch hash;
# both go in at score 0, ahead of the batch work already queued. Keys: `sy:batch:<id>` (hash)
# and `sy:batch:<id>:done` (list of "job_id custom_id").
BATCH_COUNT = r"""
local function batch_control(bkey, which)
  local jid = redis.call('HGET', bkey, which .. '_id')
  redis.call('SET', 'arq:job:' .. jid, redis.call('HGET', bkey, which .. '_body'), 'PX', 86400000)
  redis.call('ZADD', 'switchyard:queue:batch', 0, jid)
  redis.call('PUBLISH', 'sy:wake:batch', '')
end

local function batch_finalize_once(bkey, status, now)
  if redis.call('HSETNX', bkey, 'finalize_queued', '1') == 0 then return 0 end
  batch_control(bkey, 'finalize')
  if status == 'in_progress' then
    redis.call('HSET', bkey, 'status', 'finalizing', 'finalizing_at', now)
  end
  return 1
end

local function batch_check(bkey, now)
  local b = redis.call('HMGET', bkey, 'target', 'completed', 'failed', 'lost', 'status')
  if not b[1] then return 0 end
  local finished = tonumber(b[2] or '0') + tonumber(b[3] or '0') + tonumber(b[4] or '0')
  if finished < tonumber(b[1]) then return 0 end
  return batch_finalize_once(bkey, b[5], now)
end

-- `batch` and `custom_id` are the line's (FINISH_BATCH has them from the worker, which read
-- the job's state when it claimed it; CANCEL reads them).
local function count_in_batch(batch, custom_id, id, status, now)
  if not batch then return end
  local bkey = 'sy:batch:' .. batch
  -- one read of the batch: whether it still has a hash (its status), its target and counters,
  -- its window; the counter this line adds is added to what was read
  local b = redis.call('HMGET', bkey, 'status', 'target', 'completed', 'failed', 'lost', 'expires_at')
  if not b[1] then return end
  redis.call('HINCRBY', bkey, status == 'succeeded' and 'completed' or 'failed', 1)
  redis.call('RPUSH', bkey .. ':done', id .. ' ' .. (custom_id or ''))
  if b[2] then
    local finished = tonumber(b[3] or '0') + tonumber(b[4] or '0') + tonumber(b[5] or '0') + 1
    if finished >= tonumber(b[2]) and batch_finalize_once(bkey, b[1], now) == 1 then return end
  end
  if b[6] and tonumber(now) >= tonumber(b[6]) then
    if redis.call('HSETNX', bkey, 'stop', 'expired') == 1 then batch_control(bkey, 'expire') end
  end
end
"""

# Cancel a job. A queued job that no worker holds is canceled here and now; a running one
# is marked for abort and its worker is told over the wake channel.
# ARGV: job id, now_ms, persist zset, wake channel
# Returns {outcome, status}: outcome is 'canceled', 'aborting', 'finished' or 'missing'.
CANCEL = (
    SETTLE_AND_NOTIFY
    + BATCH_COUNT
    + r"""
local id = ARGV[1]
local now = ARGV[2]
local skey = 'sy:job:' .. id
local status = redis.call('HGET', skey, 'status')
if not status then return {'missing', false} end
if status == 'succeeded' or status == 'failed' or status == 'canceled' then
  return {'finished', status}
end
if status == 'queued' and redis.call('EXISTS', 'arq:in-progress:' .. id) == 0 then
  local q = 'switchyard:queue:' .. (redis.call('HGET', skey, 'queue') or redis.call('HGET', skey, 'priority'))
  redis.call('ZREM', q, id)
  redis.call('DEL', 'arq:job:' .. id, 'arq:retry:' .. id)
  redis.call('HSET', skey, 'status', 'canceled', 'finished', now,
             'error_type', 'canceled', 'error_message', 'canceled by the client', 'error_status', 409)
  -- canceled before it started: its tokens and credits go back
  local first = settle(skey, 0, true)
  redis.call('ZADD', ARGV[3], now, id)
  notify(skey)
  if first then
    local line = redis.call('HMGET', skey, 'batch', 'custom_id')
    count_in_batch(line[1], line[2], id, 'canceled', now)
  end
  return {'canceled', 'canceled'}
end
redis.call('ZADD', 'arq:abort', now, id)
redis.call('PUBLISH', ARGV[4], id)
return {'aborting', status}
"""
)

# Hand a batch of finished jobs to one persister: their score moves a lease into the future,
# so a second persister skips them and a crashed one's batch comes back after the lease.
# ARGV: persist zset, finished no later than (ms), now_ms, lease_ms, limit
TAKE_FOR_PERSIST = r"""
local ids = redis.call('ZRANGEBYSCORE', ARGV[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[5]))
local until_ms = tonumber(ARGV[3]) + tonumber(ARGV[4])
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', ARGV[1], until_ms, id)
  out[#out + 1] = {id, redis.call('HGETALL', 'sy:job:' .. id)}
end
return out
"""

# Submit: admission (when the key has limits: jobs.accounting's `admit`) and the enqueue, as
# one command: the job's state, ARQ's job body and queue entry, the owner's live index and a
# wake-up for the workers of that queue. A request that admission refuses enqueues nothing.
# ARGV[1]: `submit_args`' MessagePack array (id, queue, wake channel, owner, created_ms, ttl_ms,
#   last-used hash, admission's nine arguments or none, the state hash as field/value pairs,
#   and for an idempotency key (`Idempotency-Key`) its Redis key, the request's fingerprint
#   and the key's TTL ms, or none); ARGV[2]: ARQ's job body. One packed argument instead of
#   forty costs the web a fifth of the encoding and Redis less parsing.
# Returns admission's refusal as it is, or {'ok', ...admission's remaining values...}; an
# idempotency key already held is the earlier job's: {'replay', "<job id> <fingerprint>"},
# nothing admitted, charged or enqueued. Otherwise an accepted job takes the key in the same
# command (concurrent duplicates make exactly one job); a refused one leaves it free.
# Counts the job created, or the refusal, in switchyard.metrics' hashes (one HINCRBY).
SUBMIT = (
    ADMIT_FUNCTION
    + r"""
local P = cmsgpack.unpack(ARGV[1])
local id, queue, owner, created, ttl = P[1], P[2], P[4], P[5], P[6]
local admission, fields, once = P[8], P[9], P[10]
if #once > 0 then
  local held = redis.call('GET', once[1])
  if held then return {'replay', held} end
end
local skey = 'sy:job:' .. id
local state = {}
local verdict = {'ok'}
if #admission > 0 then
  verdict = admit(unpack(admission, 1, 9))
  if verdict[1] ~= 'ok' then
    redis.call('HINCRBY', 'sy:metrics:refused', verdict[1], 1)  -- switchyard.metrics
    return verdict
  end
  state = {'reserved', admission[4], 'tokens_key', verdict[6],
           'rl_hourly', verdict[2], 'rl_daily', verdict[3], 'rl_tokens', verdict[4]}
  if tonumber(admission[3]) > 0 then
    state[#state + 1] = 'metered'; state[#state + 1] = 1
    state[#state + 1] = 'balance'; state[#state + 1] = verdict[5]
  end
end
local kind, priority = '', ''
for i = 1, #fields, 2 do  -- JobRecord.to_hash names the kind, then the priority
  state[#state + 1] = fields[i]; state[#state + 1] = fields[i + 1]
  if fields[i] == 'kind' then kind = fields[i + 1]
  elseif fields[i] == 'priority' then priority = fields[i + 1] end
end
redis.call('HSET', skey, unpack(state))
redis.call('HINCRBY', 'sy:metrics:created', kind .. '|' .. priority, 1)  -- switchyard.metrics
redis.call('PEXPIRE', skey, ttl)
redis.call('SET', 'arq:job:' .. id, ARGV[2], 'PX', ttl)
redis.call('ZADD', queue, created, id)
redis.call('ZADD', 'sy:owner:' .. owner, created, id)
redis.call('HSET', P[7], owner, created)
redis.call('PUBLISH', P[3], '')
if #once > 0 then redis.call('SET', once[1], id .. ' ' .. once[2], 'PX', once[3]) end
return verdict
"""
)


def _text(value: Any) -> str:
    """A value as Redis stores it (redis-py's spelling: `repr` of a number)."""
    if type(value) is str:
        return value
    if isinstance(value, bytes):
        return value.decode()
    return repr(value)


def _texts(values: Iterable[Any]) -> list[str]:
    return [v if type(v) is str else _text(v) for v in values]


def _flat(fields: dict[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        flat += (name, value if type(value) is str else _text(value))
    return flat


def submit_args(
    job_id: str,
    *,
    queue: str,
    wake_channel: str,
    owner: str,
    created_ms: int,
    ttl_ms: int,
    last_used_key: str,
    admission: Sequence[Any] | None,
    state: dict[str, Any],
    once: tuple[str, str, int] | None,
    job_body: bytes,
) -> list[bytes]:
    """SUBMIT's two arguments. Text only: Redis' MessagePack reader has no binary type (ARQ's
    body, which is bytes, goes on its own)."""
    packed = _pack([
        job_id, queue, wake_channel, owner, str(created_ms), str(ttl_ms), last_used_key,
        _texts(admission) if admission is not None else [],
        _flat(state),
        _texts(once) if once is not None else [],
    ])  # fmt: skip
    return [packed, job_body]


# Follow a job another request submitted (a replay of an idempotent call): when it is not
# over, this web process' done channel joins its `notify` channels. Returns its state hash
# (flat), or false when Redis no longer holds it (then the database does).
# ARGV: job id, done channel
FOLLOW = r"""
local skey = 'sy:job:' .. ARGV[1]
local status = redis.call('HGET', skey, 'status')
if not status then return false end
if status ~= 'succeeded' and status ~= 'failed' and status ~= 'canceled' then
  local channels = redis.call('HGET', skey, 'notify')
  if not channels then
    redis.call('HSET', skey, 'notify', ARGV[2])
  elseif not string.find(' ' .. channels .. ' ', ' ' .. ARGV[2] .. ' ', 1, true) then
    redis.call('HSET', skey, 'notify', channels .. ' ' .. ARGV[2])
  end
end
return redis.call('HGETALL', skey)
"""

# Finish: ARQ's cleanup, the outcome into the state hash, the settlement of the job's reserved
# tokens against what it used, the refund of its credits when it failed through no fault of
# the caller, the hand-off to the persister and the notification of a waiting caller, as one
# command. ARGV[1]: `finish_args`' MessagePack array (id, queue, result ttl s, persist zset,
# finished_ms, tokens used, refund 0/1, then the field/value pairs to set, as one array).
_FINISH_BODY = r"""
local P = cmsgpack.unpack(ARGV[1])
local id, queue, finished = P[1], P[2], P[5]
local skey = 'sy:job:' .. id
redis.call('DEL', 'arq:in-progress:' .. id, 'arq:retry:' .. id, 'arq:job:' .. id)
redis.call('ZREM', queue, id)
redis.call('ZREM', 'arq:abort', id)
if redis.call('EXISTS', skey) == 0 then return 0 end
redis.call('HSET', skey, unpack(P[8]))
local first = settle(skey, tonumber(P[6]), P[7] == '1')  -- once: a second finish changes nothing
redis.call('EXPIRE', skey, P[3])
redis.call('ZADD', P[4], finished, id)
notify(skey)
--[[batch]]
return 1
"""


def finish_args(
    job_id: str,
    *,
    queue: str,
    result_ttl_s: int,
    persist_set: str,
    finished_ms: int,
    tokens_used: int,
    refund: bool,
    update: dict[str, Any],
    batch_line: tuple[str, str] | None = None,
) -> list[bytes]:
    """FINISH's (and FINISH_BATCH's) one argument; `update` holds text, numbers or UTF-8 bytes;
    `batch_line` is a Batch API line's batch id and custom_id (FINISH_BATCH)."""
    fields = [
        job_id, queue, str(result_ttl_s), persist_set, str(finished_ms), str(tokens_used),
        "1" if refund else "0", _flat(update),
    ]  # fmt: skip
    if batch_line is not None:
        fields += [_text(batch_line[0]), _text(batch_line[1])]
    return [_pack(fields)]


FINISH = SETTLE_AND_NOTIFY + _FINISH_BODY.replace("--[[batch]]\n", "")

# FINISH for a job that is a line of a batch (its state names the batch): the same, then the
# line counted on its batch, on its first finish. Its batch id and custom_id come from
# `finish_args(batch_line=...)` (the worker has them from the claim: no read of the state);
# without them they are read from the state. Interactive and plain batch jobs never run this.
FINISH_BATCH = (
    SETTLE_AND_NOTIFY
    + BATCH_COUNT
    + _FINISH_BODY.replace(
        "--[[batch]]",
        "if first then\n"
        "  local status = false\n"
        "  local u = P[8]\n"
        "  for i = 1, #u - 1, 2 do if u[i] == 'status' then status = u[i + 1] end end\n"
        "  local batch, custom_id = P[9], P[10]\n"
        "  if not batch then\n"
        "    local line = redis.call('HMGET', skey, 'batch', 'custom_id')\n"
        "    batch, custom_id = line[1], line[2]\n"
        "  end\n"
        "  count_in_batch(batch, custom_id, id, status or redis.call('HGET', skey, 'status'), finished)\n"
        "end",
    )
)

# Dispatching of a batch ended (every line enqueued, or it was stopped): its target is what
# was dispatched; when every one of those has already finished, finalize now.
# ARGV: batch key, now_ms. Returns 1 when this call enqueued the finalize job.
BATCH_TARGET = (
    BATCH_COUNT
    + r"""
local bkey = ARGV[1]
if redis.call('EXISTS', bkey) == 0 then return 0 end
redis.call('HSET', bkey, 'target', redis.call('HGET', bkey, 'dispatched') or '0')
return batch_check(bkey, ARGV[2])
"""
)

# Dispatch a chunk of a Batch API batch's lines (jobs.batches, workers/batches.py): the lines
# admitted in order against the key's limits (`admit_lines`: the first refusal ends the chunk,
# the lines from it on wait for a later dispatch), each admitted line enqueued as SUBMIT would
# enqueue it, and where dispatching got to, as one command: one round trip per chunk, and a
# chunk is either dispatched and recorded or not at all.
# ARGV: batch key, lock ms, queue, wake channel, owner, now_ms, ttl_ms, last-used hash,
#       the state fields every line's job shares (a JSON object of strings),
#       the lines (a JSON array of [job id, ARQ body, tokens to reserve, model, custom_id,
#       byte offset of the line, line number], all strings),
#       the byte offset and line number after the chunk,
#       '1' and admission's nine arguments (`admit`'s, its reserve unused), or '0'.
# Returns {lines dispatched, admission's refusal or false, the batch's `stop` or false}.
DISPATCH_LINES = (
    ADMIT_FUNCTION
    + r"""
local bkey, queue, wake, owner, now, ttl = ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local common = cjson.decode(ARGV[9])
local lines = cjson.decode(ARGV[10])
local n, refusal, tk, limits, metered = #lines, false, false, {}, false
if ARGV[13] == '1' then
  local reserves = {}
  for i, line in ipairs(lines) do reserves[i] = line[3] end
  n, refusal, tk, limits = admit_lines(ARGV[14], ARGV[15], ARGV[16], reserves, ARGV[18], ARGV[19],
                                       ARGV[20], ARGV[21], ARGV[22])
  metered = tonumber(ARGV[16]) > 0
  if refusal then redis.call('HINCRBY', 'sy:metrics:refused', refusal[1], 1) end  -- switchyard.metrics
end
local shared = {}
for field, value in pairs(common) do shared[#shared + 1] = field; shared[#shared + 1] = value end
local ids = {}
for i = 1, n do
  local line = lines[i]
  local id = line[1]
  local state = {'id', id, 'created', now, 'model', line[4], 'custom_id', line[5], unpack(shared)}
  local a = limits[i]
  if a then
    for _, v in ipairs({'reserved', line[3], 'tokens_key', tk, 'rl_hourly', a[1], 'rl_daily', a[2],
                        'rl_tokens', a[3]}) do state[#state + 1] = v end
    if metered then
      state[#state + 1] = 'metered'; state[#state + 1] = 1
      state[#state + 1] = 'balance'; state[#state + 1] = a[4]
    end
  end
  local skey = 'sy:job:' .. id
  redis.call('HSET', skey, unpack(state))
  redis.call('PEXPIRE', skey, ttl)
  redis.call('SET', 'arq:job:' .. id, line[2], 'PX', ttl)
  ids[i] = id
end
if n > 0 then
  -- the queue, the owner's live index and the batch's list of jobs take the chunk at once
  -- (in slices: Lua's unpack has a bound)
  for first = 1, n, 200 do
    local last = math.min(first + 199, n)
    local scored = {}
    for i = first, last do scored[#scored + 1] = now; scored[#scored + 1] = ids[i] end
    redis.call('ZADD', queue, unpack(scored))
    redis.call('ZADD', 'sy:owner:' .. owner, unpack(scored))
    redis.call('RPUSH', bkey .. ':jobs', unpack(ids, first, last))
  end
  redis.call('HINCRBY', 'sy:metrics:created', (common['kind'] or '') .. '|' .. (common['priority'] or ''), n)
  redis.call('HSET', ARGV[8], owner, now)
  redis.call('PUBLISH', wake, '')
  redis.call('HINCRBY', bkey, 'dispatched', n)
end
if n == #lines then
  redis.call('HSET', bkey, 'offset', ARGV[11], 'next_line', ARGV[12])
else
  redis.call('HSET', bkey, 'offset', lines[n + 1][6], 'next_line', lines[n + 1][7])
end
redis.call('PEXPIRE', bkey .. ':lock', ARGV[2])
return {n, refusal, redis.call('HGET', bkey, 'stop') or false}
"""
)

# Read back a batch's finished lines for its output and error files (workers/batches.py): a
# page of its done list (`job_id custom_id` entries) and, for each, these fields of its job's
# state (all nil once Redis has let the state go): one round trip per page.
# ARGV: done list key, first index, how many, then the field names.
# Returns {{entry, {values...}}, ...}.
READ_FINISHED = r"""
local first = tonumber(ARGV[2])
local entries = redis.call('LRANGE', ARGV[1], first, first + tonumber(ARGV[3]) - 1)
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local out = {}
for i, entry in ipairs(entries) do
  out[i] = {entry, redis.call('HMGET', 'sy:job:' .. string.match(entry, '^%S*'), unpack(fields))}
end
return out
"""
