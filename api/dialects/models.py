"""Model listings of the keyed dialects: `native` (api-reference 000, AI Models: `/api/v1/models`
and its `/{type}`, `/{company}`, `/thinking` and `/{id}/info` forms) and `cloudgpt` (001, List
Models: `/api/models/chat|image|video`). Served from the catalog in Redis, never a provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Request, Response, Router, get

from api.errors import CLOUDGPT, NATIVE, handlers_for
from api.model_views import (
    Query,
    allowed_for,
    cloudgpt_model,
    fresh_entries,
    native_model,
    run_refresh,
)
from api.openapi import any_of, docs
from api.responses import json_response
from api.schemas import cloudgpt as cg
from api.schemas import native
from api.state import services
from api.submit import wait_bound
from jobs.catalog import ModelEntry
from storage import usage
from switchyard.errors import ModelNotFound, NotFound
from switchyard.providers import MODEL_TYPES


def _native_list(entries: list[ModelEntry]) -> list[dict[str, Any]]:
    return [native_model(e) for e in entries]


@get(
    "/api/v1/models",
    opt=docs(
        answers=native.ModelsAnswer,
        query={"sync": "true: refresh the catalog first", "include_stats": "true: each model's use"},
    ),
)
async def list_models(request: Request) -> Response[bytes]:
    """Every model the key may use, grouped by type; `sync=true` refreshes the catalog first,
    `include_stats=true` adds the key's usage of each model over the last 30 days."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    query = Query(request, ("sync", "include_stats"))
    sync, include_stats = query.flag("sync"), query.flag("include_stats")
    data: dict[str, Any] = {}
    if sync:
        outcome = await run_refresh(svc, None, wait_bound(request, svc.settings.sync_timeout_s))
        data["sync"] = _sync_view(outcome)
    entries = allowed_for(principal, await fresh_entries(svc))
    grouped: dict[str, list[dict[str, Any]]] = {t: [] for t in MODEL_TYPES}
    for e in entries:
        grouped.setdefault(e.type, []).append(native_model(e))
    counts: dict[str, int] = {p.name: 0 for p in svc.catalog.config.providers}
    for e in entries:
        counts[e.provider] += 1
    data = {"models": grouped, "total": len(entries), "counts": {**counts, "total": len(entries)}, **data}
    if include_stats:
        since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)
        rows = dict(await usage.per_model(svc.db, None if principal.is_admin else principal.key_id, since))
        for views in grouped.values():
            for view in views:
                t = rows.get(view["id"], usage.Totals())
                view["stats"] = {
                    "requests": t.requests,
                    "successful_requests": t.successful,
                    "failed_requests": t.failed,
                    "total_tokens": t.total_tokens,
                    "avg_latency_ms": t.avg_latency_ms,
                }
        data["stats_days"] = 30
    return json_response({"success": True, "data": data})


def _sync_view(outcome: dict[str, Any] | None) -> dict[str, Any]:
    if outcome is None:
        return {"status": "pending", "message": "no worker finished the refresh in time; it still runs"}
    keep = ("status", "message", "models_discovered", "providers_updated", "providers_failed", "timestamp")
    return {k: outcome.get(k) for k in keep}


@get(
    "/api/v1/models/{selector:path}",
    opt=docs(answers=any_of(native.ModelInfoAnswer, native.ModelGroupAnswer)),
)
async def models_by(request: Request, selector: str) -> Response[bytes]:
    """`/{type}`, `/thinking`, `/{company}`, or `/{id}/info` (model ids contain slashes)."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    Query(request, ())
    selector = selector.strip("/")
    entries = allowed_for(principal, await fresh_entries(svc))
    if selector.endswith("/info") or ("/" in selector and selector not in MODEL_TYPES):
        model_id = selector.removesuffix("/info")
        entry = next((e for e in entries if e.id == model_id), None)
        if entry is None:
            raise ModelNotFound(
                model_id, suggestions=svc.catalog.close_matches(model_id, [e.id for e in entries])
            )
        return json_response({"success": True, "data": await _info(request, entry)})
    if selector == "thinking":
        chosen = [e for e in entries if e.supports_thinking]
        return json_response(
            {"success": True, "data": {"models": _native_list(chosen), "total": len(chosen)}}
        )
    if selector in MODEL_TYPES:
        chosen = [e for e in entries if e.type == selector]
        body = {"type": selector, "models": _native_list(chosen), "total": len(chosen)}
        return json_response({"success": True, "data": body})
    wanted = selector.lower()
    chosen = [e for e in entries if e.company.lower() == wanted or e.provider.lower() == wanted]
    if not chosen:
        companies = sorted({e.company for e in entries})
        raise NotFound(
            f"No models of type or company '{selector}'; types: {', '.join(MODEL_TYPES)}, thinking; "
            f"companies: {', '.join(companies)}",
            details=[{"field": "company", "message": "unknown type or company", "value": selector}],
        )
    body = {"company": chosen[0].company, "models": _native_list(chosen), "total": len(chosen)}
    return json_response({"success": True, "data": body})


async def _info(request: Request, e: ModelEntry) -> dict[str, Any]:
    svc = services(request)
    statuses = await svc.catalog.statuses()
    view = native_model(e)
    view.update(
        {
            "providers": [
                {"name": name, "status": (statuses.get(name) or {}).get("status", "unknown")}
                for name in e.providers
            ],
            "pricing": {"input_per_1k": e.input_cost, "output_per_1k": e.output_cost, "currency": "USD"},
            "max_duration_s": e.meta.max_duration_s,
        }
    )
    return view


native_router = Router(
    path="/", route_handlers=[list_models, models_by], exception_handlers=handlers_for(NATIVE)
)


def _cloudgpt_route(kind: str) -> Any:
    @get(f"/api/models/{kind}", name=f"cloudgpt-models-{kind}", opt=docs(answers=cg.ModelList))
    async def handler(request: Request) -> Response[bytes]:
        """One modality's models (api-reference 001, List Models); open to the anonymous tier."""
        svc = services(request)
        principal = await svc.keys.authenticate(request, anonymous=True)
        Query(request, ())
        entries = allowed_for(principal, await fresh_entries(svc))
        return json_response(
            {"object": "list", "data": [cloudgpt_model(e) for e in entries if e.type == kind]}
        )

    return handler


cloudgpt_router = Router(
    path="/",
    route_handlers=[_cloudgpt_route(kind) for kind in ("chat", "image", "video")],
    exception_handlers=handlers_for(CLOUDGPT),
)
