"""`discovery` (api-reference 003): the model catalog across providers — list, search, filter
and paginate models, refresh, provider status, cache statistics, `/health`, and the
`/ws/models` socket of catalog changes. Reads need no key; a refresh and the socket need a key,
and clearing the cache the admin key. Served from Redis: the workers call the providers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import orjson
from litestar import Litestar, Request, Response, Router, WebSocket, delete, get, post, websocket
from litestar.exceptions import WebSocketDisconnect

from api.errors import DISCOVERY, handlers_for
from api.model_events import ModelEvents
from api.model_views import (
    Query,
    discovery_model,
    filter_models,
    fresh_entries,
    paginate,
    run_refresh,
    search_rank,
)
from api.openapi import docs
from api.responses import json_response
from api.schemas import discovery as dv
from api.state import Services, services
from api.submit import wait_bound, wants_batch
from api.validation import decode_object
from jobs import durability
from jobs.catalog import CATALOG_KEY, CATALOG_VERSION_KEY, ModelEntry
from jobs.client import redis_call
from jobs.discovery import (
    CACHE_STATS_KEY,
    COOLDOWN_KEY,
    EVENTS_CHANNEL,
    LAST_RUN_KEY,
    REQUESTS_KEY,
    catalog_events,
)
from jobs.records import iso_s, now_ms
from storage.bounds import bounded
from switchyard.errors import InvalidRequest, ModelNotFound, NotFound, SwitchyardError
from switchyard.providers import CONTENT_KINDS

STARTED = time.monotonic()
FILTERS = (
    "provider", "type", "company", "supports_chat", "supports_completion", "supports_thinking",
    "min_context", "max_cost", "max_input_cost", "max_output_cost", "capabilities", "capability",
)  # fmt: skip
PAGING = ("limit", "offset", "cursor")


# --- shared reads --------------------------------------------------------------------------------
async def provider_states(svc: Services) -> dict[str, dict[str, Any]]:
    """Every provider's status in 003's shape: its last check, and `error` while it cools down."""
    names = [p.name for p in svc.catalog.config.providers]
    statuses = await redis_call(svc.catalog.statuses)

    async def cooldowns() -> list[int]:
        async with svc.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.pttl(COOLDOWN_KEY + name)
            return await pipe.execute()  # type: ignore[no-any-return]

    ttls = await redis_call(cooldowns)
    out: dict[str, dict[str, Any]] = {}
    for provider, ttl in zip(svc.catalog.config.providers, ttls, strict=True):
        checked = statuses.get(provider.name) or {}
        state = {
            "status": checked.get("status", "unknown"),
            "last_check": iso_s(checked.get("last_check")),
            "models_count": len(svc.catalog.models_of(provider)),
            "error": checked.get("error"),
            "response_time_ms": checked.get("response_time_ms"),
            "cooldown_until": None,
        }
        if ttl and ttl > 0:
            state["status"] = "error"
            state["cooldown_until"] = iso_s(now_ms() + ttl)
            state["error"] = f"cooling down after repeated failures, until {state['cooldown_until']}"
        out[provider.name] = state
    return out


async def count_reads(svc: Services, providers: list[str], refreshed: bool) -> bool:
    """Count a catalog read as a hit (served from what discovery stored) or a miss (a refresh
    was needed, or a provider has no stored listing); returns whether it was a hit."""
    # Content services (lrclib, tmdb) list no models: nothing of theirs is stored or missed.
    listed = [n for n in providers if (p := svc.catalog.provider(n)) is None or p.kind not in CONTENT_KINDS]
    hits = {name: not refreshed and name in svc.catalog.listings for name in listed}
    hit = not refreshed and all(hits.values())

    async def count() -> None:
        async with svc.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(CACHE_STATS_KEY, "hits" if hit else "misses", 1)
            for name, provider_hit in hits.items():
                pipe.hincrby(CACHE_STATS_KEY, f"{name}:{'hits' if provider_hit else 'misses'}", 1)
            await pipe.execute()

    await redis_call(count)
    return hit


async def last_run(svc: Services) -> dict[str, Any] | None:
    raw = await redis_call(lambda: svc.redis.get(LAST_RUN_KEY))
    return orjson.loads(raw) if raw else None  # type: ignore[no-any-return]


async def _maybe_refresh(request: Request, svc: Services, query: Query, providers: list[str] | None) -> bool:
    """`?refresh=true`: have a worker refresh the catalog first (a key is needed for that)."""
    if not query.flag("refresh"):
        return False
    await svc.keys.authenticate(request)
    await run_refresh(svc, providers, wait_bound(request, svc.settings.sync_timeout_s), force=True)
    return True


def _sorted(entries: list[ModelEntry]) -> list[ModelEntry]:
    return sorted(entries, key=lambda e: e.id)


# --- models --------------------------------------------------------------------------------------
@get("/api/models", opt=docs(answers=dv.ModelList))
async def list_models(request: Request) -> Response[bytes]:
    """All models, filtered (provider, capability, context, cost...) and paginated."""
    svc = services(request)
    query = Query(request, (*FILTERS, *PAGING, "refresh"))
    refreshed = await _maybe_refresh(request, svc, query, None)
    entries = await fresh_entries(svc)
    names = [p.name for p in svc.catalog.config.providers]
    chosen = filter_models(_sorted(entries), query, names)
    page, pagination = paginate(chosen, query)
    states = await provider_states(svc)
    run = await last_run(svc)
    hit = await count_reads(svc, names, refreshed)
    body = {
        "models": [discovery_model(e) for e in page],
        "count": len(chosen),  # 003: the total; `pagination` says which page this is
        "providers": [name for name, state in states.items() if state["status"] == "active"],
        "timestamp": (run or {}).get("timestamp") or iso_s(now_ms()),
        "cache_hit": hit,
        "pagination": pagination,
    }
    return json_response(body)


@get("/api/models/search", opt=docs(answers=dv.SearchResults))
async def search_models(request: Request) -> Response[bytes]:
    """Models whose id, name or description match `q`, best matches first, with the filters."""
    svc = services(request)
    query = Query(request, ("q", *FILTERS, *PAGING))
    q = query.text("q")
    entries = await fresh_entries(svc)
    names = [p.name for p in svc.catalog.config.providers]
    chosen = filter_models(entries, query, names)
    if q is not None:
        ranked = [(rank, e) for e in chosen if (rank := search_rank(e, q)) is not None]
        chosen = [e for _, e in sorted(ranked, key=lambda item: (item[0], item[1].id))]
    else:
        chosen = _sorted(chosen)
    page, pagination = paginate(chosen, query)
    await count_reads(svc, names, False)
    applied = {k: v for k, v in query.applied.items() if k not in ("q", *PAGING)}
    body = {
        "models": [discovery_model(e) for e in page],
        "count": len(chosen),
        "query": q,
        "filters_applied": applied,
        "pagination": pagination,
    }
    return json_response(body)


@post(
    "/api/models/refresh",
    status_code=200,
    opt=docs(answers=dv.Refreshed, work=True, accepted=dv.RefreshQueued),
)
async def refresh_models(request: Request) -> Response[bytes]:
    """Have a worker list every provider's models now (or those named) and wait for it;
    202 when no worker finished within the wait (the refresh still happens)."""
    svc = services(request)
    await svc.keys.authenticate(request)
    raw = await request.body()
    body = decode_object(raw) if raw.strip() else {}
    for name in body:
        if name not in ("providers", "force"):
            raise InvalidRequest.field(name, "is not a known field; known: providers, force")
    providers = body.get("providers")
    names = [p.name for p in svc.catalog.config.providers]
    if providers is not None:
        if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers) or not providers:
            raise InvalidRequest.field("providers", "must be a non-empty array of provider names", providers)
        unknown = [p for p in providers if p not in names]
        if unknown:
            raise InvalidRequest.field(
                "providers",
                f"unknown provider(s) {', '.join(unknown)}; providers: {', '.join(names)}",
                unknown,
            )
    if "force" in body and not isinstance(body["force"], bool):
        raise InvalidRequest.field("force", "must be true or false", body["force"])
    batch = wants_batch(request)  # ?batch=1: queued now, answered 202 without waiting
    timeout = 0.0 if batch else wait_bound(request, svc.settings.sync_timeout_s)
    outcome = await run_refresh(svc, providers, timeout, force=body.get("force") is True)
    if outcome is None:
        message = (
            "the refresh is queued; GET /api/providers/status shows each provider's new check"
            if batch
            else f"no worker finished the refresh within {timeout:g}s; it still runs"
        )
        return json_response({"status": "queued", "message": message, "timestamp": iso_s(now_ms())}, 202)
    keep = ("status", "message", "models_discovered", "providers_updated", "providers_failed", "duration_ms",
            "timestamp", "changes")  # fmt: skip
    return json_response({k: outcome.get(k) for k in keep})


@get("/api/models/{model_id:path}", opt=docs(answers=dv.OneModel))
async def get_model(request: Request, model_id: str) -> Response[bytes]:
    """One model (ids contain slashes) with the status of the provider that serves it first."""
    svc = services(request)
    Query(request, ())
    model_id = model_id.strip("/")
    entries = await fresh_entries(svc)
    entry = next((e for e in entries if e.id == model_id), None)
    if entry is None:
        raise ModelNotFound(model_id, suggestions=svc.catalog.close_matches(model_id))
    states = await provider_states(svc)
    await count_reads(svc, entry.providers, False)
    first = states[entry.provider]
    body = {
        "model": discovery_model(entry, detail=True),
        "provider_info": {
            "name": entry.provider,
            "status": first["status"],
            "last_check": first["last_check"],
        },
    }
    return json_response(body)


# --- providers -----------------------------------------------------------------------------------
@get("/api/providers/status", opt=docs(answers=dv.ProvidersStatus))
async def providers_status(request: Request) -> Response[bytes]:
    """Each provider's last check (and cooldown), and a summary."""
    svc = services(request)
    Query(request, ())
    await fresh_entries(svc)
    states = await provider_states(svc)
    checks = [s["last_check"] for s in states.values() if s["last_check"]]
    body = {
        "providers": states,
        "summary": {
            "total_providers": len(states),
            "active_providers": sum(1 for s in states.values() if s["status"] == "active"),
            "total_models": len(svc.catalog.entries()),
            "last_update": max(checks) if checks else None,
        },
    }
    return json_response(body)


@get("/api/providers/{name:str}/models", opt=docs(answers=dv.ProviderModels))
async def provider_models(request: Request, name: str) -> Response[bytes]:
    """The models one provider serves; `refresh=true` lists them from the provider first."""
    svc = services(request)
    provider = svc.catalog.provider(name)
    if provider is None:
        names = [p.name for p in svc.catalog.config.providers]
        raise NotFound(
            f"Provider '{name}' not found; providers: {', '.join(names)}",
            details=[{"field": "provider_name", "message": "unknown provider", "value": name}],
            code="PROVIDER_NOT_FOUND",
        )
    query = Query(request, ("refresh", *PAGING))
    refreshed = await _maybe_refresh(request, svc, query, [name])
    entries = await fresh_entries(svc)
    served = set(svc.catalog.models_of(provider))
    chosen = [e for e in _sorted(entries) if e.id in served]
    page, pagination = paginate(chosen, query)
    hit = await count_reads(svc, [name], refreshed)
    listing = svc.catalog.listings.get(name)
    body = {
        "provider": name,
        "models": [discovery_model(e) for e in page],
        "count": len(chosen),
        "last_updated": iso_s(listing.updated_ms) if listing is not None else None,
        "cache_hit": hit,
        "pagination": pagination,
    }
    return json_response(body)


# --- cache ---------------------------------------------------------------------------------------
def _rate(hits: int, misses: int) -> float:
    return round(100.0 * hits / (hits + misses), 1) if hits + misses else 0.0


@get("/api/cache/stats", opt=docs(answers=dv.CacheStats))
async def cache_stats(request: Request) -> Response[bytes]:
    """Reads served from the stored catalog (hits) or needing discovery (misses), and its size."""
    svc = services(request)
    Query(request, ())
    entries = await fresh_entries(svc)

    async def read() -> list[Any]:
        async with svc.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(CACHE_STATS_KEY)
            pipe.memory_usage(CATALOG_KEY)
            return await pipe.execute()  # type: ignore[no-any-return]

    raw, memory = await redis_call(read)
    counters = {k.decode(): int(v) for k, v in raw.items()}
    hits, misses = counters.get("hits", 0), counters.get("misses", 0)
    updated = [listing.updated_ms for listing in svc.catalog.listings.values()]
    providers = {}
    for p in svc.catalog.config.providers:
        if p.kind in CONTENT_KINDS:
            continue
        p_hits, p_misses = counters.get(f"{p.name}:hits", 0), counters.get(f"{p.name}:misses", 0)
        providers[p.name] = {"hits": p_hits, "misses": p_misses, "hit_rate": _rate(p_hits, p_misses)}
    body = {
        "cache_stats": {
            "hits": hits,
            "misses": misses,
            "hit_rate": _rate(hits, misses),
            "total_entries": len(entries),
            "memory_usage_mb": round((memory or 0) / 1_048_576, 3),
            "oldest_entry": iso_s(min(updated)) if updated else None,
            "newest_entry": iso_s(max(updated)) if updated else None,
        },
        "provider_stats": providers,
    }
    return json_response(body)


@delete("/api/cache", status_code=200, opt=docs(answers=dv.CacheCleared))
async def clear_cache(request: Request) -> Response[bytes]:
    """Drop the stored listings (of one provider, or all) and their statistics, and have a
    worker list them again at once. Needs the admin key."""
    svc = services(request)
    await svc.keys.require_admin(request, "clear the model cache")
    query = Query(request, ("provider",))
    provider = query.text("provider")
    names = [p.name for p in svc.catalog.config.providers]
    if provider is not None and provider not in names:
        raise InvalidRequest.field("provider", f"unknown provider; providers: {', '.join(names)}", provider)
    targets = [provider] if provider else names
    before = {e.id: e.summary() for e in await fresh_entries(svc)}
    cleared = sum(len(svc.catalog.listings[n].models) for n in targets if n in svc.catalog.listings)

    async def clear() -> None:
        async with svc.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(CATALOG_KEY, *targets)
            pipe.incr(CATALOG_VERSION_KEY)
            if provider is None:
                pipe.delete(CACHE_STATS_KEY)
            else:
                pipe.hdel(CACHE_STATS_KEY, f"{provider}:hits", f"{provider}:misses")
            await pipe.execute()

    await redis_call(clear)
    after = {e.id: e.summary() for e in await fresh_entries(svc)}
    events = catalog_events(before, after, now_ms())
    request_id = f"cache-clear-{now_ms()}"
    message = orjson.dumps({"id": request_id, "providers": [provider] if provider else None})

    async def announce() -> None:
        async with svc.redis.pipeline(transaction=False) as pipe:
            if events:
                pipe.publish(EVENTS_CHANNEL, orjson.dumps(events))
            pipe.rpush(REQUESTS_KEY, message)  # list them again now, not at the next period
            await pipe.execute()

    await redis_call(announce)
    scope = f"provider: {provider}" if provider else "all providers"
    return json_response(
        {"status": "success", "message": f"Cache cleared for {scope}", "cleared_entries": cleared}
    )


# --- health --------------------------------------------------------------------------------------
def _memory_mb() -> float:
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1_048_576, 1)
    except (OSError, ValueError, IndexError, AttributeError):
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@get("/health", opt=docs(answers=dv.Health, public=True))
async def health(request: Request) -> Response[bytes]:
    """healthy, degraded (200: a warning, such as a Redis without persistence, a provider down
    or dead letters set aside) or unhealthy (503: Redis or the database out of reach, or no
    provider reachable), with each service's detail. Redis and the database are checked at
    once, each within the dependency bound: a stalled one answers in about that bound."""
    svc = services(request)
    queue, database = await asyncio.gather(_queue_health(svc), _database_health(svc))
    warnings: list[str] = list(queue.get("warnings", ()))
    providers: dict[str, str] = queue.get("providers", {})
    down = sorted(name for name, state in providers.items() if state == "error")
    reachable = [name for name, state in providers.items() if state == "ok"]
    problems = [f"redis: {queue['redis']}"] if queue["redis"] != "ok" else []
    if database != "ok":
        problems.append(f"database: {database}")
    if providers and down and not reachable and len(down) == len(providers):
        problems.append("no provider is reachable")
    elif down:
        warnings.append(f"providers down: {', '.join(down)}")
    dead = queue.get("dead_letters")
    if dead:
        warnings.append(f"{dead} dead letter(s) set aside: see /api/admin/dead-letters")
    status = "unhealthy" if problems else "degraded" if warnings else "healthy"
    body = {
        "status": status,
        "timestamp": iso_s(now_ms()),
        "services": {
            "discovery": queue.get("discovery", "unknown"),
            "cache": "ok" if queue["redis"] == "ok" else "unknown",
            "redis": queue["redis"],
            "database": database,
            "providers": providers,
            "redis_persistence": queue.get("persistence", "unknown"),
        },
        "problems": problems,
        "warnings": warnings,
        "dead_letters": dead,
        "metrics": {
            "uptime_seconds": int(time.monotonic() - STARTED),
            "memory_usage_mb": _memory_mb(),
            "cache_hit_rate": queue.get("cache_hit_rate", 0.0),
        },
    }
    return json_response(body, 503 if problems else 200)


_PROVIDER_STATES = {"active": "ok", "unknown": "unknown"}


async def _queue_health(svc: Services) -> dict[str, Any]:
    """Everything /health reads from Redis, within one bound; `redis` says why when it cannot."""
    try:
        async with bounded("queue (Redis)"):
            await redis_call(svc.redis.ping)
            await fresh_entries(svc)
            states = await provider_states(svc)
            run = await last_run(svc)
            raw = await redis_call(lambda: svc.redis.hmget(CACHE_STATS_KEY, ["hits", "misses"]))
            persistence = await redis_call(lambda: durability.check(svc.redis))
            dead = await redis_call(svc.dead_letters.count)
    except Exception as exc:  # noqa: BLE001 (any failure is "Redis is not answering" here)
        return {"redis": f"error: {getattr(exc, 'message', None) or exc.__class__.__name__}"}
    hits, misses = (int(v or 0) for v in raw)
    if run is None:
        discovery = "pending"
    else:
        age_s = (now_ms() - int(run.get("finished_ms") or 0)) / 1000
        fresh = age_s <= 2 * svc.settings.discovery_interval_s + svc.settings.discovery_timeout_s
        discovery = ("ok" if run.get("status") != "error" else "error") if fresh else "stale"
    return {
        "redis": "ok",
        "discovery": discovery,
        "providers": {name: _PROVIDER_STATES.get(s["status"], "error") for name, s in states.items()},
        "cache_hit_rate": _rate(hits, misses),
        "persistence": "aof" if persistence.appendonly == "yes" else
                       "unknown" if persistence.appendonly == "unknown" else
                       "snapshots" if persistence.save.strip() else "none",
        "warnings": persistence.warnings,
        "dead_letters": dead,
    }  # fmt: skip


async def _database_health(svc: Services) -> str:
    try:
        await svc.db.ping()
    except Exception as exc:  # noqa: BLE001 (any failure is "the database is not answering" here)
        return f"error: {getattr(exc, 'message', None) or exc.__class__.__name__}"
    return "ok"


# --- the socket of catalog changes -----------------------------------------------------------------
def _hub(app: Litestar) -> ModelEvents:
    hub: ModelEvents | None = app.state.get("model_events")
    if hub is None:
        svc = app.state.services
        hub = app.state["model_events"] = ModelEvents(svc.redis, svc.dead_letters)
    return hub


async def close_model_events(app: Litestar) -> None:
    hub: ModelEvents | None = app.state.get("model_events")
    if hub is not None:
        await hub.close()


async def _until_closed(socket: WebSocket[Any, Any, Any]) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await socket.receive_data(mode="text")


WS_TRY_AGAIN_LATER = 1013  # RFC 6455's "Try Again Later": this process has its fill of sockets
WS_POLICY_VIOLATION = 1008  # no key, or a key that may not connect


@websocket("/ws/models")
async def model_updates(socket: WebSocket[Any, Any, Any]) -> None:
    """`model_added`, `model_removed` and `model_updated` as refreshes change the catalog,
    after a first `connected` message (from then on, no change is missed).

    A socket needs a key (`?api_key=`, which a browser can send, or `X-API-Key` /
    `Authorization: Bearer`); each web process holds at most `SWITCHYARD_WS_MAX_SOCKETS`.
    """
    state = socket.app.state
    await socket.accept()
    if state.get("ws_open", 0) >= state.services.settings.ws_max_sockets:
        await socket.close(code=WS_TRY_AGAIN_LATER, reason="too many model-update sockets: try again later")
        return
    state.ws_open = state.get("ws_open", 0) + 1  # counted while it authenticates, too
    try:
        await _serve_model_updates(socket)
    finally:
        state.ws_open -= 1


async def _serve_model_updates(socket: WebSocket[Any, Any, Any]) -> None:
    try:
        await socket.app.state.services.keys.authenticate(socket)
    except SwitchyardError as exc:  # 401/403, or 503 when the key store cannot be read
        code = WS_POLICY_VIOLATION if exc.status_code in (401, 403) else 1011
        await socket.close(code=code, reason=exc.message[:120])
        return
    hub = _hub(socket.app)
    try:
        queue = await hub.subscribe()
    except TimeoutError:
        await socket.close(code=1011, reason="model updates are unavailable: Redis cannot be reached")
        return
    closed = asyncio.create_task(_until_closed(socket))
    try:
        count = len(await fresh_entries(socket.app.state.services))
        await socket.send_text(
            orjson.dumps({"type": "connected", "models": count, "timestamp": iso_s(now_ms())}).decode()
        )
        while True:
            next_event = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({next_event, closed}, return_when=asyncio.FIRST_COMPLETED)
            if closed in done:
                next_event.cancel()
                return
            await socket.send_text(orjson.dumps(next_event.result()).decode())
    except (WebSocketDisconnect, OSError, RuntimeError):
        return
    finally:
        hub.unsubscribe(queue)
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await closed


router = Router(
    path="/",
    route_handlers=[
        list_models,
        search_models,
        refresh_models,
        get_model,
        providers_status,
        provider_models,
        cache_stats,
        clear_cache,
        health,
        model_updates,
    ],
    exception_handlers=handlers_for(DISCOVERY),
)
