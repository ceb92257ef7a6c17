"""The webhook deliverer: drains the delivery queue (`jobs.webhooks`) on its own.

Runs in its own process (`switchyard webhooks`, a Procfile line), never in a job worker, so a
slow or dead receiver delays no job. Each attempt is a signed POST (Standard Webhooks:
`webhook-id`, `webhook-timestamp`, `webhook-signature`, the owner key's `whsec_` secret)
bounded by `webhook_timeout_s`; a 2xx delivers, a 410 stops, anything else (another status, a
refused address, a timeout, a connection error) is retried on the schedule
(`webhook_retry_delays_s`) until it runs out. No receiver and no record stops the loop: a
delivery whose record cannot be read or rendered is logged with its id and marked failed.

The payload is rendered by the function the process is given (`render`: the edge's job view,
so a webhook carries the same job object `GET /api/v1/jobs/{id}` returns); this module does not
import the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from standardwebhooks import Webhook

from jobs import webhooks
from jobs.records import iso, now_ms
from switchyard.metrics import WEBHOOKS_KEY
from switchyard.urls import check_url_async

log = logging.getLogger("switchyard.webhooks")

Render = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]  # a delivery's hash -> payload
Secret = Callable[[str], Awaitable[str]]  # owner key id -> its whsec_ secret


class Deliverer:
    def __init__(
        self,
        redis: Redis,
        http: httpx.AsyncClient,
        *,
        render: Render,
        secret: Secret,
        delays_s: list[float],
        timeout_s: float = 10.0,
        allow_private: bool = False,
        concurrency: int = 32,
        idle_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.http = http
        self.render = render
        self.secret = secret
        self.delays_s = delays_s
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.concurrency = concurrency
        self.idle_s = idle_s
        # a lease outlasts an attempt (and the wait for room to make it), so only a deliverer
        # that died gives its delivery back
        self.lease_ms = int((2 * timeout_s + 5) * 1000)
        self._take = redis.register_script(webhooks.TAKE)
        self._busy: set[asyncio.Task[None]] = set()
        self._room = asyncio.Semaphore(concurrency)

    async def run(self) -> None:
        """Deliver until cancelled. Deliveries run side by side (up to `concurrency`); the loop
        looks for due ones when one is added (a short sleep when none is due)."""
        while True:
            try:
                taken = await self.take_due()
            except (RedisError, OSError) as exc:
                log.warning("webhook queue unavailable (%s); will retry", exc.__class__.__name__)
                await asyncio.sleep(1.0)
                continue
            if not taken:
                await asyncio.sleep(self.idle_s)
                continue
            for did in taken:
                await self._room.acquire()
                task = asyncio.create_task(self._deliver_released(did))
                self._busy.add(task)
                task.add_done_callback(self._busy.discard)

    async def close(self) -> None:
        for task in list(self._busy):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._busy, return_exceptions=True)

    async def take_due(self) -> list[str]:
        ids = await self._take(args=[now_ms(), self.lease_ms, self.concurrency])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def _deliver_released(self, did: str) -> None:
        try:
            await self.deliver(did)
        except Exception:  # noqa: BLE001 (no delivery may stop the loop)
            log.exception("webhook delivery %s failed unexpectedly; it is retried after its lease", did)
        finally:
            self._room.release()

    async def deliver(self, did: str) -> None:
        """One attempt of one delivery, and what follows from it."""
        dkey = webhooks.DELIVERY_KEY + did
        h = await self.redis.hgetall(dkey)  # type: ignore[misc]
        if not h or h.get(b"state", b"").decode() != webhooks.PENDING:
            await self.redis.zrem(webhooks.DUE_KEY, did)
            return
        record = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in h.items()}
        url, owner = record.get("url", ""), record.get("owner", "")
        try:
            payload = await self.render(record)
            body = orjson.dumps({"type": _event_type(record), "timestamp": _iso_now(), "data": payload})
            secret = await self.secret(owner)
        except Exception as exc:  # noqa: BLE001 (an unreadable record is set aside, not retried)
            log.exception("webhook delivery %s cannot be rendered; marked failed", did)
            await self._record(did, record, None, f"cannot render: {exc.__class__.__name__}", 0.0, final=True)
            return
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            await check_url_async(url, allow_private=self.allow_private, field="webhook")
            stamp = datetime.now(UTC)
            signature = Webhook(secret).sign(did, stamp, body.decode())
            headers = {
                "content-type": "application/json",
                "user-agent": "Switchyard-Webhooks/1",
                "webhook-id": did,
                "webhook-timestamp": str(int(stamp.timestamp())),
                "webhook-signature": signature,
            }
            async with asyncio.timeout(self.timeout_s):
                response = await self.http.post(url, content=body, headers=headers)
            status = response.status_code
        except TimeoutError:
            error = f"timed out after {self.timeout_s:g}s"
        except httpx.HTTPError as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:300]
        except Exception as exc:  # noqa: BLE001 (a refused URL, a bad secret: retried, then failed)
            error = getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"[:300]
        took = time.monotonic() - started
        await self._record(did, record, status, error, took, final=False)

    async def _record(
        self,
        did: str,
        record: dict[str, str],
        status: int | None,
        error: str | None,
        took_s: float,
        *,
        final: bool,
    ) -> None:
        try:
            attempts = orjson.loads(record.get("attempts") or "[]")
        except orjson.JSONDecodeError:
            attempts = []
        now = now_ms()
        attempts.append(
            {
                "at": iso(now),
                "status_code": status,
                "error": error,
                "duration_ms": round(took_s * 1000, 1),
            }
        )
        if status is not None and 200 <= status < 300:
            state, outcome = webhooks.DELIVERED, "delivered"
        elif status == 410:
            state, outcome = webhooks.GONE, "gone"
        elif final or len(attempts) > len(self.delays_s):
            state, outcome = webhooks.FAILED, "failed"
        else:
            state, outcome = webhooks.PENDING, "retrying"
        dkey = webhooks.DELIVERY_KEY + did
        fields: dict[str, Any] = {"attempts": orjson.dumps(attempts).decode(), "state": state}
        async with self.redis.pipeline(transaction=True) as pipe:
            if state == webhooks.PENDING:
                due = now + int(self.delays_s[len(attempts) - 1] * 1000)
                fields["next"] = due
                pipe.zadd(webhooks.DUE_KEY, {did: due})
            else:
                fields["finished"] = now
                pipe.zrem(webhooks.DUE_KEY, did)
            pipe.hset(dkey, mapping=fields)
            pipe.hincrby(WEBHOOKS_KEY, outcome, 1)
            await pipe.execute()
        log.info(
            "webhook %s to %s: %s (%s) after %d attempt(s)",
            did,
            record.get("url"),
            outcome,
            status if status is not None else error,
            len(attempts),
        )


def _event_type(record: dict[str, str]) -> str:
    return f"{record.get('subject', 'job')}.{record.get('event', 'completed')}"


def _iso_now() -> str:
    return iso(now_ms()) or ""
