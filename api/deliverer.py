"""`switchyard webhooks`: the deliverer (`workers.webhooks`) given the edge's views to render."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import signal
import time
from typing import Any

import httpx
import msgspec
from redis.asyncio import Redis

from api.auth import ADMIN
from api.dialects.batches import batch_object
from api.submit import job_view
from jobs.records import JobRecord
from storage import bounds
from storage.batches import get_batch
from storage.db import Database
from storage.keys import webhook_secret
from switchyard import redis_client
from switchyard.settings import Settings
from workers.webhooks import Deliverer

log = logging.getLogger("switchyard.webhooks")


class Renderer:
    """A delivery's payload: a job as `GET /api/v1/jobs/{id}` shows it (from the state it
    finished with), a batch as `GET /v1/batches/{id}` does (read from the database)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def __call__(self, record: dict[str, str]) -> dict[str, Any]:
        if record.get("subject") == "batch":
            batch_id = record.get("batch_id", "")
            row = await get_batch(self.db, batch_id)
            if row is None:
                raise LookupError(f"batch {batch_id} is gone")
            return batch_object(row, None)
        snapshot = msgspec.json.decode(record["snapshot"])
        return job_view(JobRecord.from_hash(snapshot, job_id=record.get("job_id")))


class Secrets:
    """Each key's signing secret, read from the database and kept a minute (a rotated secret
    signs within that minute). The admin's jobs are signed with a secret made from the admin key."""

    def __init__(self, db: Database, settings: Settings, ttl_s: float = 60.0) -> None:
        self.db = db
        self.settings = settings
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str]] = {}

    async def get(self, key_id: str) -> str:
        hit = self._cache.get(key_id)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        if key_id == ADMIN:
            secret = admin_webhook_secret(self.settings)
        else:
            found = await webhook_secret(self.db, key_id)
            if not found:
                raise LookupError(f"key {key_id} has no webhook secret")
            secret = found
        self._cache[key_id] = (time.monotonic() + self.ttl_s, secret)
        return secret


def admin_webhook_secret(settings: Settings) -> str:
    digest = hmac.new((settings.admin_key or "").encode(), b"switchyard-webhooks", hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


def make_deliverer(settings: Settings, redis: Redis, db: Database, http: httpx.AsyncClient) -> Deliverer:
    return Deliverer(
        redis,
        http,
        render=Renderer(db),
        secret=Secrets(db, settings).get,
        delays_s=settings.webhook_retry_delays_s,
        timeout_s=settings.webhook_timeout_s,
        allow_private=settings.allow_private_urls,
        concurrency=settings.webhook_concurrency,
    )


async def run_deliverer(settings: Settings) -> None:
    """`switchyard webhooks`: deliver until SIGTERM or SIGINT."""
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set: `switchyard up` starts an embedded Redis and sets it")
    bounds.configure(settings.dependency_timeout_s)
    redis = redis_client.connect(settings.redis_url, socket_keepalive=True, health_check_interval=30)
    db = Database(settings.database_url_or_default, timeout_s=settings.dependency_timeout_s)
    # no redirects: a receiver must not steer a signed delivery to an address never checked
    http = httpx.AsyncClient(follow_redirects=False, timeout=settings.webhook_timeout_s)
    deliverer = make_deliverer(settings, redis, db, http)
    task = asyncio.create_task(deliverer.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    log.info("webhook deliverer started")
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await deliverer.close()
        await http.aclose()
        await redis.aclose()
        await db.dispose()
