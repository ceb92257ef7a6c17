"""Model discovery: ask every provider's `GET /models`, store the listings and each provider's
status in Redis, and announce what changed.

It runs in the worker: once per `SWITCHYARD_DISCOVERY_INTERVAL_S` (the first worker to claim a
period runs it) and whenever the API asks (`POST /api/models/refresh` pushes a request that a
worker pops). Runs never overlap across workers. A provider whose listing fails keeps its old
listing; only its status says what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import orjson
from redis.exceptions import RedisError

from jobs.catalog import STATUS_KEY, Catalog
from jobs.discovery import (
    DUE_KEY,
    EVENTS_CHANNEL,
    LAST_RUN_KEY,
    REPLY_CHANNEL_PREFIX,
    REQUESTS_KEY,
    RUN_LOCK_KEY,
    catalog_events,
)
from jobs.records import iso_s, now_ms
from switchyard.providers import CONTENT_KINDS, ProviderConfig
from workers.context import WorkerCtx
from workers.http import Upstream
from workers.providers import ProviderError
from workers.providers import openai as openai_provider

log = logging.getLogger("switchyard.discovery")

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


async def _probe(
    http: Upstream, provider: ProviderConfig, timeout: float
) -> tuple[list[dict[str, Any]] | None, str | None, int]:
    started = time.perf_counter()
    try:
        models = await openai_provider.list_models(http, provider, timeout)
        error = None
    except ProviderError as exc:
        models, error = None, str(exc)
    except Exception as exc:  # noqa: BLE001 (one provider's surprise must not stop the others)
        models, error = None, f"model listing failed: {exc.__class__.__name__}: {exc}"
    return models, error, int((time.perf_counter() - started) * 1000)


async def discover(ctx: WorkerCtx, only: list[str] | None = None) -> dict[str, Any]:
    """One discovery run over every provider (or those named), under the cross-worker lock."""
    redis, settings, catalog = ctx["redis"], ctx["settings"], ctx["catalog"]
    timeout = settings.discovery_timeout_s
    token = secrets.token_hex(8)
    lock_ms = int((timeout * 2 + 10) * 1000)
    deadline = time.monotonic() + timeout * 2 + 10
    # Runs are short and rare: waiting for another worker's run is a short sleep loop.
    while not await redis.set(RUN_LOCK_KEY, token, nx=True, px=lock_ms):
        if time.monotonic() > deadline:
            return {"status": "error", "message": "another discovery run holds the lock"}
        await asyncio.sleep(0.05)
    try:
        return await _run(ctx, catalog, only, timeout)
    finally:
        await redis.eval(_RELEASE, 1, RUN_LOCK_KEY, token)  # type: ignore[misc]


async def _run(ctx: WorkerCtx, catalog: Catalog, only: list[str] | None, timeout: float) -> dict[str, Any]:
    redis = ctx["redis"]
    started, started_ms = time.perf_counter(), now_ms()
    await catalog.refresh(force=True)
    before = {e.id: e.summary() for e in catalog.entries()}
    targets = [
        p
        for p in catalog.config.providers
        if (only is None or p.name in only) and p.kind not in CONTENT_KINDS  # no models to list
    ]
    probes = await asyncio.gather(*(_probe(ctx["http"], p, timeout) for p in targets))
    checked = now_ms()
    updated, failed = [], {}
    for i, (provider, (models, error, elapsed)) in enumerate(zip(targets, probes, strict=True)):
        if models is not None:
            try:
                await catalog.store_listing(provider.name, models, checked)
            except RedisError:
                raise
            except Exception as exc:  # noqa: BLE001 (one provider's listing must not stop the others)
                log.exception("model discovery for %s: its listing could not be stored", provider.name)
                models, error = None, f"its listing could not be stored: {exc.__class__.__name__}: {exc}"
                probes[i] = (None, error, elapsed)
        if models is None:
            failed[provider.name] = error
            log.warning("model discovery for %s failed: %s", provider.name, error)
        else:
            updated.append(provider.name)
    await catalog.refresh(force=True)
    entries = catalog.entries()
    after = {e.id: e.summary() for e in entries}
    statuses = {
        provider.name: orjson.dumps(
            {
                "status": "active" if error is None else "error",
                "last_check": checked,
                "models_count": len(catalog.models_of(provider)),
                "listed_count": None if models is None else len(models),
                "error": error,
                "response_time_ms": elapsed,
            }
        )
        for provider, (models, error, elapsed) in zip(targets, probes, strict=True)
    }
    outcome = {
        "status": "success" if not failed else ("partial" if updated else "error"),
        "message": "Models refreshed successfully"
        if not failed
        else "; ".join(f"{name}: {error}" for name, error in failed.items()),
        "models_discovered": len(entries),
        "providers_updated": updated,
        "providers_failed": failed,
        "duration_ms": int((time.perf_counter() - started) * 1000),
        "timestamp": iso_s(checked),
        "started_ms": started_ms,
        "finished_ms": now_ms(),
    }
    events = catalog_events(before, after, checked)
    outcome["changes"] = len(events)
    async with redis.pipeline(transaction=True) as pipe:
        if statuses:
            pipe.hset(STATUS_KEY, mapping=statuses)  # type: ignore[arg-type]
        pipe.set(LAST_RUN_KEY, orjson.dumps(outcome))
        if events:
            pipe.publish(EVENTS_CHANNEL, orjson.dumps(events))
        await pipe.execute()
    return outcome


async def _serve_requests(ctx: WorkerCtx, first: bytes) -> None:
    """Answer every waiting refresh request with one run (they all want the catalog fresh)."""
    redis = ctx["redis"]
    raw = [first, *(await redis.lpop(REQUESTS_KEY, 100) or [])]  # type: ignore[misc]
    ids: list[str] = []
    only: set[str] | None = set()
    forced = False
    asked: list[int | None] = []  # when each request was made
    for item in raw:
        try:
            request = orjson.loads(item)
        except orjson.JSONDecodeError as exc:
            await ctx["dead_letters"].add("discovery", f"a refresh request is not JSON ({exc})", message=item)
            continue
        if not isinstance(request, dict) or "id" not in request:
            await ctx["dead_letters"].add("discovery", "a refresh request without an id", message=item)
            continue
        ids.append(str(request["id"]))
        forced = forced or request.get("force") is True
        at = request.get("at")
        asked.append(at if isinstance(at, int) else None)
        wanted = request.get("providers")
        if only is not None:
            if isinstance(wanted, list) and wanted:
                only.update(str(p) for p in wanted)
            else:
                only = None
    if not ids:
        return
    latest = None if None in asked or not asked else max(a for a in asked if a is not None)
    outcome = None if forced else await _run_since(ctx, latest, only)
    if outcome is None:
        outcome = await discover(ctx, sorted(only) if only else None)
    async with redis.pipeline(transaction=False) as pipe:
        for request_id in ids:
            pipe.publish(REPLY_CHANNEL_PREFIX + request_id, orjson.dumps(outcome))
        await pipe.execute()


async def _run_since(ctx: WorkerCtx, asked_at: int | None, only: set[str] | None) -> dict[str, Any] | None:
    """The last run's outcome when it started after every request was made and covered the
    providers they name: those requests are answered without listing again (not `force`)."""
    if asked_at is None:
        return None
    raw = await ctx["redis"].get(LAST_RUN_KEY)
    try:
        last = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(last, dict) or int(last.get("started_ms") or 0) < asked_at:
        return None
    covered = set(last.get("providers_updated") or ()) | set(last.get("providers_failed") or ())
    wanted = only or {p.name for p in ctx["catalog"].config.providers if p.kind not in CONTENT_KINDS}
    return last if wanted <= covered else None


async def discovery_loop(ctx: WorkerCtx) -> None:
    """The worker's discovery duty: a scheduled run per period, refresh requests in between.

    Idle, it costs one blocking pop per period; the period's run goes to whichever worker
    claims it first.
    """
    redis, settings = ctx["redis"], ctx["settings"]
    interval = settings.discovery_interval_s
    loop = asyncio.get_running_loop()
    next_run = loop.time()
    backoff = 0.5
    while True:
        try:
            now = loop.time()
            if now >= next_run:
                next_run = now + interval
                if await redis.set(DUE_KEY, b"1", nx=True, px=max(1, int(interval * 900))):
                    await discover(ctx)
                continue
            popped = await redis.blpop([REQUESTS_KEY], timeout=max(0.01, round(next_run - now, 3)))  # type: ignore[misc, arg-type]
            if popped:
                await _serve_requests(ctx, popped[1])
            backoff = 0.5
        except (RedisError, OSError) as exc:
            log.warning("model discovery could not reach Redis (%s); retrying", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        except Exception:  # a run that failed costs that run, not the worker's discovery for good
            log.exception("model discovery failed")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
