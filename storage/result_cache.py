"""Per-service result caches in Redis (YouTube, TikTok, Instagram, Pinterest, lyrics).

A result is cached under the normalized request (`jobs.media.cache_key`), so a repeat is
answered without running yt-dlp or calling a provider again, by any worker process or by the
API itself. Each service keeps its entries (`sy:cache:{service}:e:{key}`, expiring), an index
of them with their expiry and size (for `entries` and `bytes` without a scan), and its hit and
miss counters. Every operation is one Lua call.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from jobs.records import now_ms

PREFIX = "sy:cache:"

# KEYS: entry, stats. ARGV: none. Returns the entry or false, counting a hit or a miss.
_GET = r"""
local v = redis.call('GET', KEYS[1])
redis.call('HINCRBY', KEYS[2], v and 'hits' or 'misses', 1)
return v
"""

# KEYS: entry, index, sizes. ARGV: entry key, value, ttl ms, expires at ms, size.
_PUT = r"""
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
return 1
"""

# Forget entries that expired, then count. KEYS: index, sizes, stats. ARGV: now ms.
_STATS = r"""
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  for i = 1, #gone, 500 do
    redis.call('HDEL', KEYS[2], unpack(gone, i, math.min(i + 499, #gone)))
  end
end
local bytes = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do bytes = bytes + tonumber(v) end
local counts = redis.call('HMGET', KEYS[3], 'hits', 'misses')
return {tonumber(counts[1] or '0'), tonumber(counts[2] or '0'), redis.call('ZCARD', KEYS[1]), bytes}
"""

# Drop every entry of the service and its counters. KEYS: index, sizes, stats. ARGV: entry prefix.
_CLEAR = r"""
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #keys, 500 do
  local batch = {}
  for j = i, math.min(i + 499, #keys) do batch[#batch + 1] = ARGV[1] .. keys[j] end
  redis.call('DEL', unpack(batch))
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return #keys
"""

# Drop one entry (it pointed at a file that is gone). KEYS: entry, index, sizes. ARGV: key.
_DROP = r"""
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""


class ResultCache:
    def __init__(self, redis: Redis, service: str, ttl_s: int) -> None:
        self.redis = redis
        self.service = service
        self.ttl_s = ttl_s
        base = f"{PREFIX}{service}:"
        self._entry_prefix = base + "e:"
        self._index, self._sizes, self._stats = base + "index", base + "sizes", base + "stats"
        self._get = redis.register_script(_GET)
        self._put = redis.register_script(_PUT)
        self._stats_script = redis.register_script(_STATS)
        self._clear = redis.register_script(_CLEAR)
        self._drop = redis.register_script(_DROP)

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self._get(keys=[self._entry_prefix + key, self._stats])
        return orjson.loads(raw) if raw else None

    async def put(self, key: str, value: dict[str, Any], *, extra_bytes: int = 0) -> None:
        """Cache `value`; `extra_bytes`: what it stands for beyond its JSON (a stored file)."""
        body = orjson.dumps(value)
        ttl_ms = self.ttl_s * 1000
        await self._put(
            keys=[self._entry_prefix + key, self._index, self._sizes],
            args=[key, body, ttl_ms, now_ms() + ttl_ms, len(body) + extra_bytes],
        )

    async def drop(self, key: str) -> None:
        await self._drop(keys=[self._entry_prefix + key, self._index, self._sizes], args=[key])

    async def stats(self) -> dict[str, Any]:
        hits, misses, entries, size = await self._stats_script(
            keys=[self._index, self._sizes, self._stats], args=[now_ms()]
        )
        lookups = int(hits) + int(misses)
        return {
            "service": self.service,
            "hits": int(hits),
            "misses": int(misses),
            "hit_rate": round(int(hits) / lookups, 4) if lookups else 0.0,
            "entries": int(entries),
            "bytes": int(size),
            "ttl_seconds": self.ttl_s,
        }

    async def clear(self) -> int:
        """Remove every entry (and reset the counters); the number of entries removed."""
        return int(await self._clear(keys=[self._index, self._sizes, self._stats], args=[self._entry_prefix]))
