"""The benchmark's own Redis observations: queue length, command counter and job states.

These are the benchmark looking at the system, not load on it: one connection, a ZCARD
every 100 ms while a queue drains, two INFO calls around an idle window, and one SCAN of
the job state hashes at the end of the drain.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from redis.asyncio import Redis

BATCH_QUEUE = "switchyard:queue:batch"
INTERACTIVE_QUEUE = "switchyard:queue:interactive"
BATCH_HEALTH_KEY = BATCH_QUEUE + ":health-check"  # ARQ's, set by a worker once it runs
PERSIST_SETS = ("sy:persist", "sy:persist:batch")  # finished jobs not yet in the database, by priority
STATE_PREFIX = "sy:job:"
WORKERS_KEY = "sy:workers"  # switchyard.metrics.WORKERS_KEY


class Probe:
    def __init__(self, url: str) -> None:
        # One connection, so nothing but the commands below is ever sent.
        self.redis = Redis.from_url(url, single_connection_client=True)

    async def close(self) -> None:
        await self.redis.aclose()

    async def zcard(self, key: str) -> int:
        return int(await self.redis.zcard(key))

    async def unpersisted(self) -> int:
        """Finished jobs still waiting to be written to the database."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in PERSIST_SETS:
                pipe.zcard(key)
            return sum(await pipe.execute())

    async def wait_for_key(self, key: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.redis.exists(key):
                return True
            await asyncio.sleep(0.1)
        return False

    async def workers_seen(self, within_s: float = 30.0) -> int:
        """Worker processes whose heartbeat (`sy:workers`, ms) is this recent (a stopped one
        takes its own out)."""
        return int(await self.redis.zcount(WORKERS_KEY, int((time.time() - within_s) * 1000), "+inf"))

    async def commands_processed(self) -> int:
        """`total_commands_processed` from INFO stats (which counts this INFO only afterwards)."""
        info = await self.redis.info("stats")
        return int(info["total_commands_processed"])

    async def job_states(self, priority: str, limit: int = 200_000) -> Counter[str]:
        """How many job state hashes of that priority are in each status."""
        counts: Counter[str] = Counter()
        seen: set[bytes] = set()  # SCAN may return a key twice
        async for batch in _scan_batches(self.redis, STATE_PREFIX + "*", 2000):
            keys = [k for k in batch if k not in seen]
            seen.update(keys)
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, "status", "priority")
                rows = await pipe.execute()
            for status, prio in rows:
                if prio is not None and prio.decode() == priority:
                    counts[status.decode() if status else "?"] += 1
            if len(seen) >= limit:
                break
        return counts


async def _scan_batches(redis: Redis, match: str, count: int):  # type: ignore[no-untyped-def]
    cursor = 0
    for _ in range(1_000_000):
        cursor, keys = await redis.scan(cursor, match=match, count=count)
        if keys:
            yield keys
        if cursor == 0:
            return
