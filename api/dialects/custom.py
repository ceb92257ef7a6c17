"""Custom persona models (api-reference 000, "Custom Models"), in the native shape.

A persona belongs to the key that made it: another key's id is a 404 here, and its
`@org/name` is an unknown model in the chat routes (api/personas.py).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Request, Response, Router, delete, get, post, put
from msgspec import UNSET

from api.auth import Principal
from api.errors import NATIVE, handlers_for
from api.openapi import docs
from api.personas import (
    CustomCreate,
    CustomUpdate,
    PromptPreview,
    check_name,
    check_personality,
    check_system_prompt,
    full_name,
    render_prompt,
    suggestions,
    title_of,
)
from api.responses import json_response
from api.schemas import custom as cs
from api.state import Services, services
from api.validation import INT_MAX, bounded_int, convert, decode_object, query_int
from jobs.records import dt_ms, iso_s
from storage.custom import (
    CustomModelRecord,
    CustomUsage,
    create_custom,
    custom_usage,
    delete_custom,
    get_custom,
    list_custom,
    update_custom,
)
from switchyard.errors import InvalidRequest, ModelNotFound, NotFound

MAX_PAGE = 100
MAX_ID = 2**31 - 1  # the id column is a 32-bit integer


def _iso(dt: datetime | None) -> str | None:
    return iso_s(dt_ms(dt))  # 000's form: whole seconds


def _model_id(raw: str) -> int:
    return bounded_int(raw, "id", 1, INT_MAX)


def _not_found(model_id: int | str) -> NotFound:
    return NotFound(f"Custom model '{model_id}' not found")


def _view(svc: Services, r: CustomModelRecord, usage: CustomUsage | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "name": r.name,
        "display_name": r.display_name,
        "full_name": full_name(svc.settings.custom_org, r.name),
        "description": r.description,
        "personality_summary": r.personality_summary,
        "system_prompt": r.system_prompt,
        "base_model": r.base_model,
        "temperature": r.temperature,
        "top_p": r.top_p,
        "max_tokens": r.max_tokens,
        "usage_count": usage.requests if usage is not None else 0,
        "created_at": _iso(r.created_at),
        "updated_at": _iso(r.updated_at),
    }
    return out


def _summary(svc: Services, r: CustomModelRecord, usage: CustomUsage | None) -> dict[str, Any]:
    """A list entry: 000's fields (no prompt text)."""
    view = _view(svc, r, usage)
    for field in ("personality_summary", "system_prompt", "temperature", "top_p", "max_tokens"):
        view.pop(field)
    return view


async def _require_base(svc: Services, principal: Principal, model: str) -> str:
    """A base model a provider serves now, of a chat type, that this key may use."""
    try:
        await svc.catalog.require(model, "chat", "completion", field="base_model")
    except ModelNotFound as exc:
        detail: dict[str, Any] = {
            "field": "base_model",
            "message": "no provider serves this model",
            "value": model,
        }
        hint = ""
        if exc.suggestions:
            detail["suggestions"] = exc.suggestions
            hint = f"; did you mean {', '.join(repr(s) for s in exc.suggestions)}?"
        raise InvalidRequest(f"base_model: no provider serves '{model}'{hint}", details=[detail]) from None
    svc.accounts.check_request(principal, model=model, max_tokens=None)
    return model


async def _default_base(svc: Services, principal: Principal) -> str:
    """SWITCHYARD_CUSTOM_BASE_MODEL when it is served, else the first chat model this key may use."""
    allowed = principal.record.models if principal.record is not None else None
    preferred = svc.settings.custom_base_model
    candidates = [preferred, *[m for m in await svc.catalog.all_models() if m != preferred]]
    for model in candidates:
        if svc.catalog.model_type(model) == "chat" and (allowed is None or model in allowed):
            return model
    raise InvalidRequest.field("base_model", "is required: this gateway serves no chat model to default to")


@post("/api/v1/custom", status_code=201, opt=docs(body=CustomCreate, answers=cs.PersonaAnswer))
async def create(request: Request) -> Response[bytes]:
    """Make a persona; its system prompt comes from the template unless one is given."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    body = convert(decode_object(await request.body(), stored=True), CustomCreate)
    name = check_name(body.name)
    personality = check_personality(body.personality_summary)
    if body.base_model is not None:
        base_model = await _require_base(svc, principal, body.base_model)
    else:
        base_model = await _default_base(svc, principal)
    display_name = (body.display_name or "").strip() or title_of(name)
    description = (body.description or "").strip()
    if body.system_prompt is not None:
        prompt = check_system_prompt(body.system_prompt)
    else:
        prompt = render_prompt(
            display_name=display_name, personality_summary=personality, description=description
        )
    record = await create_custom(
        svc.db,
        principal.key_id,
        {
            "name": name,
            "display_name": display_name,
            "description": description,
            "personality_summary": personality,
            "system_prompt": prompt,
            "base_model": base_model,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "max_tokens": body.max_tokens,
        },
    )
    svc.custom_models.forget(principal.key_id, name)
    return json_response(
        {"success": True, "message": "Custom model created", "data": _view(svc, record)}, 201
    )


@get("/api/v1/custom", opt=docs(answers=cs.PersonasAnswer, query={"page": "from 1", "limit": "per page"}))
async def list_models(request: Request) -> Response[bytes]:
    """The key's personas, oldest first, `page`/`limit` paginated, each with its use count."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    page = query_int(request, "page", 1, 1, 1_000_000)
    limit = query_int(request, "limit", 20, 1, MAX_PAGE)
    records, total = await list_custom(svc.db, principal.key_id, offset=(page - 1) * limit, limit=limit)
    prefix = full_name(svc.settings.custom_org, "")
    usage = await custom_usage(svc.db, principal.key_id, prefix, model_ids=[r.id for r in records])
    data = {
        "models": [_summary(svc, r, usage.get(r.id)) for r in records],
        "pagination": {"page": page, "limit": limit, "total": total, "pages": math.ceil(total / limit)},
    }
    return json_response({"success": True, "data": data})


@get(
    "/api/v1/custom/suggestions",
    opt=docs(answers=cs.SuggestionsAnswer, query={"category": "a category of suggestions"}),
)
async def get_suggestions(request: Request) -> Response[bytes]:
    """Example personalities to start from; `category` narrows them."""
    svc = services(request)
    await svc.keys.authenticate(request)
    category = request.query_params.get("category") or None
    found = suggestions(category)
    categories = sorted({s["category"] for s in suggestions()})
    if category is not None and category not in categories:
        raise InvalidRequest.field("category", f"must be one of {', '.join(categories)}", category)
    return json_response(
        {"success": True, "data": {"suggestions": found, "total": len(found), "categories": categories}}
    )


@post(
    "/api/v1/custom/preview-prompt", status_code=200, opt=docs(body=PromptPreview, answers=cs.PreviewAnswer)
)
async def preview_prompt(request: Request) -> Response[bytes]:
    """The system prompt a persona with these fields would get; nothing is stored."""
    svc = services(request)
    await svc.keys.authenticate(request)
    body = convert(decode_object(await request.body()), PromptPreview)
    personality = check_personality(body.personality_summary)
    name = check_name(body.name) if body.name is not None else None
    display_name = (body.display_name or "").strip() or (title_of(name) if name else "Assistant")
    prompt = render_prompt(
        display_name=display_name,
        personality_summary=personality,
        description=(body.description or "").strip(),
    )
    data = {"system_prompt": prompt, "display_name": display_name, "length": len(prompt)}
    return json_response({"success": True, "data": data})


@get("/api/v1/custom/stats", opt=docs(answers=cs.StatsAnswer, query={"days": "1 to 365 (30)"}))
async def stats(request: Request) -> Response[bytes]:
    """Use of each of the key's personas over the last `days` days (default 30), from the usage
    recorded for the jobs called through `@org/name`, most used first."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    days = query_int(request, "days", 30, 1, 365)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = midnight - timedelta(days=days - 1)
    records, total = await list_custom(svc.db, principal.key_id, offset=0, limit=10_000)
    prefix = full_name(svc.settings.custom_org, "")
    usage = await custom_usage(svc.db, principal.key_id, prefix, since=since)
    models: list[dict[str, Any]] = []
    for r in records:
        u = usage.get(r.id, CustomUsage())
        models.append(
            {
                "id": r.id,
                "name": r.name,
                "full_name": prefix + r.name,
                "base_model": r.base_model,
                "requests": u.requests,
                "successful_requests": u.successful,
                "failed_requests": u.failed,
                "success_rate": u.success_rate,
                "total_tokens": u.total_tokens,
                "estimated_cost": round(u.estimated_cost, 6),
                "avg_latency_ms": u.avg_latency_ms,
                "last_used_at": _iso(u.last_used_at),
            }
        )
    models.sort(key=lambda m: (-m["requests"], m["id"]))
    data = {
        "days": days,
        "since": _iso(since),
        "total_models": total,
        "total_requests": sum(m["requests"] for m in models),
        "most_used": models[0]["full_name"] if models and models[0]["requests"] else None,
        "models": models,
    }
    return json_response({"success": True, "data": data})


@get("/api/v1/custom/{model_id:str}", opt=docs(answers=cs.PersonaAnswer))
async def get_model(request: Request, model_id: str) -> Response[bytes]:
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    mid = _model_id(model_id)
    record = await get_custom(svc.db, principal.key_id, mid) if mid <= MAX_ID else None
    if record is None:
        raise _not_found(model_id)
    prefix = full_name(svc.settings.custom_org, "")
    usage = await custom_usage(svc.db, principal.key_id, prefix, model_ids=[record.id])
    return json_response({"success": True, "data": _view(svc, record, usage.get(record.id))})


@put("/api/v1/custom/{model_id:str}", status_code=200, opt=docs(body=CustomUpdate, answers=cs.PersonaAnswer))
async def update_model(request: Request, model_id: str) -> Response[bytes]:
    """Change what is sent. The system prompt is made again from the (new) fields only with
    `regenerate_prompt: true`; otherwise the stored one, generated or the caller's, is kept
    (or replaced by a `system_prompt` sent here)."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    mid = _model_id(model_id)
    body = convert(decode_object(await request.body(), stored=True), CustomUpdate)
    sent = {f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not UNSET}
    if not sent or sent == {"regenerate_prompt": False}:
        raise InvalidRequest.field("body", "send at least one field to change, or regenerate_prompt: true")
    if body.regenerate_prompt and body.system_prompt is not UNSET:
        raise InvalidRequest.field(
            "regenerate_prompt", "cannot be true when a system_prompt is sent: choose one", True
        )
    existing = await get_custom(svc.db, principal.key_id, mid) if mid <= MAX_ID else None
    if existing is None:
        raise _not_found(model_id)
    changes: dict[str, Any] = {}
    if body.name is not UNSET:
        changes["name"] = check_name(body.name)
    if body.personality_summary is not UNSET:
        changes["personality_summary"] = check_personality(body.personality_summary)
    if body.base_model is not UNSET:
        changes["base_model"] = await _require_base(svc, principal, body.base_model)
    if body.display_name is not UNSET:
        new_name = changes.get("name", existing.name)
        changes["display_name"] = (body.display_name or "").strip() or title_of(new_name)
    if body.description is not UNSET:
        changes["description"] = (body.description or "").strip()
    if body.system_prompt is not UNSET:
        changes["system_prompt"] = check_system_prompt(body.system_prompt)
    for field in ("temperature", "top_p", "max_tokens"):
        value = getattr(body, field)
        if value is not UNSET:
            changes[field] = value
    if body.regenerate_prompt:
        changes["system_prompt"] = render_prompt(
            display_name=changes.get("display_name", existing.display_name),
            personality_summary=changes.get("personality_summary", existing.personality_summary),
            description=changes.get("description", existing.description),
        )
    record = await update_custom(svc.db, principal.key_id, mid, changes)
    svc.custom_models.forget(principal.key_id, existing.name, changes.get("name", existing.name))
    if record is None:  # deleted meanwhile
        raise _not_found(model_id)
    prefix = full_name(svc.settings.custom_org, "")
    usage = await custom_usage(svc.db, principal.key_id, prefix, model_ids=[record.id])
    return json_response(
        {"success": True, "message": "Custom model updated", "data": _view(svc, record, usage.get(record.id))}
    )


@delete("/api/v1/custom/{model_id:str}", status_code=200, opt=docs(answers=cs.DeletedAnswer))
async def delete_model(request: Request, model_id: str) -> Response[bytes]:
    """Remove a persona: its `@org/name` is an unknown model from then on."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    mid = _model_id(model_id)
    record = await delete_custom(svc.db, principal.key_id, mid) if mid <= MAX_ID else None
    if record is None:
        raise _not_found(model_id)
    svc.custom_models.forget(principal.key_id, record.name)
    data = {
        "id": record.id,
        "name": record.name,
        "full_name": full_name(svc.settings.custom_org, record.name),
        "deleted": True,
    }
    return json_response({"success": True, "message": "Custom model deleted", "data": data})


router = Router(
    path="/",
    route_handlers=[
        create,
        list_models,
        get_suggestions,
        preview_prompt,
        stats,
        get_model,
        update_model,
        delete_model,
    ],
    exception_handlers=handlers_for(NATIVE),
)
