"""The expiry sweep of stored files: a background task in every worker process, run by one of
them per period (a Redis lock taken with SET NX PX for the period and left to expire)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from jobs.deadletters import DeadLetters
from storage.files import Files
from switchyard.settings import Settings

log = logging.getLogger("switchyard.worker")

SWEEP_LOCK = "sy:files:sweep"
FIRST_SWEEP_MAX_DELAY_S = 5.0  # processes started together do not all reach for the lock at once


async def sweep_expired_files(ctx: dict[str, Any]) -> int | None:
    """One sweep, when no other process has swept within the period: the number of expired
    files removed, or None when another process holds this period."""
    settings: Settings = ctx["settings"]
    files: Files = ctx["files"]
    period_ms = max(1, int(settings.file_cleanup_interval_s * 1000))
    token = f"{os.getpid()}:{secrets.token_hex(4)}"
    if not await ctx["redis"].set(SWEEP_LOCK, token, nx=True, px=period_ms):
        return None
    dead_letters: DeadLetters = ctx.get("dead_letters") or DeadLetters(ctx["redis"])

    async def set_aside(
        blob_key: str, exc: Exception
    ) -> None:  # its row is gone: only a dead letter knows it
        reason = f"blob {blob_key} could not be removed: {exc.__class__.__name__}: {exc}"
        await dead_letters.add("file-sweeper", reason, message=blob_key.encode())

    removed = await files.delete_expired(on_blob_error=set_aside)
    await files.blobs.sweep_temporaries()  # writes cut short by a killed process
    return removed


async def run_file_sweeper(ctx: dict[str, Any]) -> None:
    """Sweep every `SWITCHYARD_FILE_CLEANUP_INTERVAL_S` until cancelled; an unreachable Redis or
    database costs one period, never the worker."""
    interval = ctx["settings"].file_cleanup_interval_s
    await asyncio.sleep(min(interval, FIRST_SWEEP_MAX_DELAY_S) * secrets.randbelow(1000) / 1000)
    while True:
        try:
            removed = await sweep_expired_files(ctx)
            if removed:
                log.info("removed %d expired files", removed)
        except (RedisError, SQLAlchemyError, OSError) as exc:
            log.warning("file expiry sweep failed: %s", exc)
        except Exception:  # a bug here must not end the sweeps for good
            log.exception("file expiry sweep failed")
        await asyncio.sleep(interval)
