"""Lua scripts that make a multi-key job transition one atomic Redis round trip."""

from __future__ import annotations

# Claim up to `limit` ready jobs for one worker, highest-priority queue first.
# A queue the worker does not serve still blocks the queues below it while it has jobs
# waiting (not already running): that is what makes interactive work run before batch work.
# ARGV: now_ms, limit, lease_ms, scan, n, then n pairs (queue, served 0/1)
# Returns {claimed, next_ms}; claimed is a flat list of 5-tuples
# (job id, queue, arq job body, try, state hash as flat list).
CLAIM = r"""
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local lease = ARGV[3]
local scan = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local out = {}
local claimed = 0
local next_ms = false
for i = 0, n - 1 do
  local q = ARGV[6 + i * 2]
  local served = ARGV[7 + i * 2] == '1'
  local waiting = 0
  if claimed < limit or not served then
    local ids = redis.call('ZRANGEBYSCORE', q, '-inf', now, 'LIMIT', 0, limit + scan)
    for _, id in ipairs(ids) do
      if redis.call('EXISTS', 'arq:in-progress:' .. id) == 0 then
        if served and claimed < limit then
          local body = redis.call('GET', 'arq:job:' .. id)
          redis.call('PSETEX', 'arq:in-progress:' .. id, lease, '1')
          local try = redis.call('INCR', 'arq:retry:' .. id)
          redis.call('EXPIRE', 'arq:retry:' .. id, 88400)
          local state = {}
          local skey = 'sy:job:' .. id
          if redis.call('EXISTS', skey) == 1 then
            redis.call('HSET', skey, 'status', 'running', 'attempts', try)
            redis.call('HSETNX', skey, 'started', now)
            state = redis.call('HGETALL', skey)
          end
          out[#out + 1] = {id, q, body or false, try, state}
          claimed = claimed + 1
        else
          waiting = waiting + 1
          if not served then break end
        end
      end
    end
  end
  if served then
    local nxt = redis.call('ZRANGEBYSCORE', q, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #nxt > 0 then
      local s = tonumber(nxt[2])
      if (not next_ms) or s < next_ms then next_ms = s end
    end
  elseif waiting > 0 then
    break
  end
end
return {out, next_ms}
"""

# Cancel a job. A queued job that no worker holds is canceled here and now; a running one
# is marked for abort and its worker is told over the wake channel.
# ARGV: job id, now_ms, persist zset, wake channel
# Returns {outcome, status}: outcome is 'canceled', 'aborting', 'finished' or 'missing'.
CANCEL = r"""
local id = ARGV[1]
local now = ARGV[2]
local skey = 'sy:job:' .. id
local status = redis.call('HGET', skey, 'status')
if not status then return {'missing', false} end
if status == 'succeeded' or status == 'failed' or status == 'canceled' then
  return {'finished', status}
end
if status == 'queued' and redis.call('EXISTS', 'arq:in-progress:' .. id) == 0 then
  local q = 'switchyard:queue:' .. redis.call('HGET', skey, 'priority')
  redis.call('ZREM', q, id)
  redis.call('DEL', 'arq:job:' .. id, 'arq:retry:' .. id)
  redis.call('HSET', skey, 'status', 'canceled', 'finished', now,
             'error_type', 'canceled', 'error_message', 'canceled by the client', 'error_status', 409)
  redis.call('ZADD', ARGV[3], now, id)
  local notify = redis.call('HGET', skey, 'notify')
  if notify then
    local flat = redis.call('HGETALL', skey)
    local h = {}
    for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
    redis.call('PUBLISH', notify, cjson.encode(h))
  end
  return {'canceled', 'canceled'}
end
redis.call('ZADD', 'arq:abort', now, id)
redis.call('PUBLISH', ARGV[4], 'c:' .. id)
return {'aborting', status}
"""

# Hand a batch of finished jobs to one persister: their score moves a lease into the future,
# so a second persister skips them and a crashed one's batch comes back after the lease.
# ARGV: persist zset, now_ms, lease_ms, limit
TAKE_FOR_PERSIST = r"""
local ids = redis.call('ZRANGEBYSCORE', ARGV[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
local until_ms = tonumber(ARGV[2]) + tonumber(ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', ARGV[1], until_ms, id)
  out[#out + 1] = {id, redis.call('HGETALL', 'sy:job:' .. id)}
end
return out
"""
