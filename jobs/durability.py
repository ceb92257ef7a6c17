"""What a restart of the Redis in use would lose, read from its own configuration.

Accepted jobs, rate-limit windows and credit balances live in Redis first (DESIGN.md: a 202
means the job is durably in Redis, AOF on). `switchyard up`'s embedded Redis runs with AOF;
an external `REDIS_URL` may not. Each process checks at start (`CONFIG GET appendonly` and
`save`) and logs a WARNING when a restart would lose work; `/health` lists the same warning.
A Redis with `CONFIG` disabled (managed services often rename it) is "unknown", said as such.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from storage.bounds import bounded

log = logging.getLogger("switchyard.durability")

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Durability:
    appendonly: str  # "yes", "no" or "unknown"
    save: str  # the snapshot schedule ("" when none) or "unknown"

    @property
    def warnings(self) -> list[str]:
        if self.appendonly == "yes":
            return []
        if UNKNOWN in (self.appendonly, self.save):
            return [
                "Redis persistence is unknown (CONFIG is disabled): if it has neither AOF nor "
                "snapshots, a Redis restart loses every accepted job that is not finished, and "
                "resets rate-limit windows and credit balances held in Redis"
            ]
        if not self.save.strip():
            return [
                "Redis has no persistence (appendonly no, no save schedule): a Redis restart loses "
                "every accepted job that is not finished, and resets rate-limit windows and credit "
                "balances held in Redis; turn on appendonly"
            ]
        return [
            f"Redis persists by snapshots only (appendonly no, save '{self.save}'): a Redis restart "
            "loses the jobs accepted and the rate-limit and credit changes made since the last "
            "snapshot; turn on appendonly"
        ]


async def check(redis: Redis) -> Durability:
    """The Redis' persistence settings (within the process' dependency bound)."""
    try:
        async with bounded("queue (Redis)"):
            appendonly = await redis.config_get("appendonly")
            save = await redis.config_get("save")
    except ResponseError:  # CONFIG renamed or disabled
        return Durability(UNKNOWN, UNKNOWN)
    return Durability(_value(appendonly, "appendonly"), _value(save, "save"))


def _value(reply: dict[bytes | str, bytes | str], name: str) -> str:
    for key, value in reply.items():
        if (key.decode() if isinstance(key, bytes) else key) == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return UNKNOWN


async def warn_at_start(redis: Redis, process: str) -> Durability | None:
    """Check and log loudly; a Redis that cannot be asked now is left to the calls that follow."""
    try:
        durability = await check(redis)
    except Exception as exc:  # noqa: BLE001 (start goes on; Redis' state is reported elsewhere)
        log.warning("%s: could not check Redis persistence (%r)", process, exc)
        return None
    for warning in durability.warnings:
        log.warning("%s: %s", process, warning)
    return durability
