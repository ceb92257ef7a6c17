"""The catalog as each dialect shows it, and the query parameters of the model routes.

Views take the merged `ModelEntry` of `jobs.catalog`; filtering and pagination are shared by
the discovery routes (api-reference 003), the native ones (000) and cloudgpt's (001).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import orjson
from litestar import Request
from redis.exceptions import RedisError

from api.auth import Principal
from api.state import Services
from api.validation import INT_MAX, bounded_int
from jobs.catalog import ModelEntry
from jobs.client import redis_call
from jobs.discovery import request_refresh
from jobs.records import iso_s
from switchyard.errors import InvalidRequest, ServiceUnavailable

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class Query:
    """A route's query parameters, each parsed once, with a 400 naming a bad or unknown one."""

    def __init__(self, request: Request, known: Iterable[str]) -> None:
        self.params = request.query_params
        known = tuple(known)
        allowed = {*known, "api_key"}
        for name in self.params:
            if name not in allowed:
                raise InvalidRequest.field(
                    name, f"is not a known parameter; known: {', '.join(sorted(known))}"
                )
        self.applied: dict[str, Any] = {}

    def _raw(self, name: str) -> str | None:
        value = self.params.get(name)
        return None if value is None else value.strip()

    def flag(self, name: str) -> bool | None:
        raw = self._raw(name)
        if raw is None:
            return None
        if raw.lower() in _TRUE:
            value = True
        elif raw.lower() in _FALSE:
            value = False
        else:
            raise InvalidRequest.field(name, "must be true or false", raw)
        self.applied[name] = value
        return value

    def integer(self, name: str, low: int, high: int | None = None) -> int | None:
        raw = self._raw(name)
        if raw is None:
            return None
        value = bounded_int(raw, name, low, INT_MAX if high is None else high)
        self.applied[name] = value
        return value

    def number(self, name: str) -> float | None:
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise InvalidRequest.field(name, "must be a number", raw) from None
        if not value >= 0 or value == float("inf"):
            raise InvalidRequest.field(name, "must be a finite number of at least 0", raw)
        self.applied[name] = value
        return value

    def text(self, name: str, max_length: int = 200) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return None
        if not raw:
            raise InvalidRequest.field(name, "must not be empty", raw)
        if len(raw) > max_length:
            raise InvalidRequest.field(name, f"must be at most {max_length} characters", raw[:50])
        self.applied[name] = raw
        return raw

    def choice(self, name: str, choices: Iterable[str]) -> str | None:
        raw = self.text(name)
        options = list(choices)
        if raw is not None and raw not in options:
            raise InvalidRequest.field(name, f"must be one of: {', '.join(options)}", raw)
        return raw

    def words(self, name: str) -> list[str] | None:
        """A list given as repeated parameters, comma-separated, or a JSON array of strings."""
        values = self.params.getall(name, [])
        if not values:
            return None
        out: list[str] = []
        for raw in values:
            raw = raw.strip()
            if raw.startswith("["):
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise InvalidRequest.field(name, "is not a valid JSON array", raw) from None
                if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
                    raise InvalidRequest.field(name, "must be an array of strings", raw)
                out += [v.strip() for v in parsed if v.strip()]
            else:
                out += [v.strip() for v in raw.split(",") if v.strip()]
        if not out:
            raise InvalidRequest.field(name, "must name at least one value", values)
        self.applied[name] = out
        return out


# --- filters -------------------------------------------------------------------------------------
def allowed_for(principal: Principal | None, entries: list[ModelEntry]) -> list[ModelEntry]:
    """A key restricted to some models sees only those."""
    allowed = principal.record.models if principal is not None and principal.record is not None else None
    return entries if allowed is None else [e for e in entries if e.id in allowed]


def supports_chat(e: ModelEntry) -> bool:
    return e.type == "chat"


def supports_completion(e: ModelEntry) -> bool:
    return e.type in ("chat", "completion")


def filter_models(entries: list[ModelEntry], query: Query, provider_names: list[str]) -> list[ModelEntry]:
    """The filters of `GET /api/models` and `/api/models/search` (whichever the route allows)."""
    provider = query.text("provider")
    if provider is not None and provider not in provider_names:
        raise InvalidRequest.field(
            "provider", f"unknown provider; providers: {', '.join(provider_names)}", provider
        )
    model_type = query.choice("type", ("chat", "completion", "embedding", "image", "video"))
    chat = query.flag("supports_chat")
    completion = query.flag("supports_completion")
    thinking = query.flag("supports_thinking")
    min_context = query.integer("min_context", 0)
    max_cost = query.number("max_cost")
    max_input = query.number("max_input_cost")
    max_output = query.number("max_output_cost")
    capabilities = query.words("capabilities") or query.words("capability")
    company = query.text("company")
    out = []
    for e in entries:
        if provider is not None and provider not in e.providers:
            continue
        if model_type is not None and e.type != model_type:
            continue
        if chat is not None and supports_chat(e) != chat:
            continue
        if completion is not None and supports_completion(e) != completion:
            continue
        if thinking is not None and e.supports_thinking != thinking:
            continue
        if min_context is not None and (e.context_length or 0) < min_context:
            continue
        if max_cost is not None and not _within(max_cost, e.input_cost, e.output_cost):
            continue
        if max_input is not None and not _within(max_input, e.input_cost):
            continue
        if max_output is not None and not _within(max_output, e.output_cost):
            continue
        if capabilities and not set(capabilities) <= set(e.capabilities):
            continue
        if company is not None and e.company.lower() != company.lower():
            continue
        out.append(e)
    return out


def _within(limit: float, *costs: float | None) -> bool:
    """A model whose price is unknown does not pass a price filter."""
    return all(c is not None and c <= limit for c in costs)


def search_rank(e: ModelEntry, q: str) -> int | None:
    """How well a model matches a search (lower is better); None: it does not. Every word of
    the query must appear in the id, the name or the description."""
    q = q.lower()
    ident, name, description = e.id.lower(), e.name.lower(), (e.description or "").lower()
    if q in (ident, name):
        return 0
    if ident.startswith(q) or name.startswith(q) or ident.split("/")[-1].startswith(q):
        return 1
    if q in ident or q in name:
        return 2
    haystack = f"{ident} {name} {description}"
    if all(word in haystack for word in q.split()):
        return 3
    return None


# --- pagination ----------------------------------------------------------------------------------
def paginate(entries: list[ModelEntry], query: Query) -> tuple[list[ModelEntry], dict[str, Any]]:
    """`limit`/`offset`, or `limit`/`cursor` (opaque: the last id seen and its position)."""
    limit = query.integer("limit", 1, 1000) or 50
    offset = query.integer("offset", 0)
    cursor = query.text("cursor", 500)
    if cursor is not None and offset is not None:
        raise InvalidRequest.field("cursor", "give either offset or cursor, not both", cursor)
    start = offset or 0
    if cursor is not None:
        start = _cursor_start(entries, cursor)
    page = entries[start : start + limit]
    has_next = start + len(page) < len(entries)
    return page, {
        "limit": limit,
        "offset": start,
        "total": len(entries),
        "has_next": has_next,
        "next_offset": start + len(page) if has_next else None,
        "next_cursor": _cursor(page[-1].id, start + len(page)) if has_next and page else None,
    }


def _cursor(last_id: str, position: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"id": last_id, "offset": position})).decode()


def _cursor_start(entries: list[ModelEntry], cursor: str) -> int:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
        last_id, position = str(data["id"]), int(data["offset"])
    except (binascii.Error, ValueError, orjson.JSONDecodeError, KeyError, TypeError):
        raise InvalidRequest.field("cursor", "is not a cursor this API returned", cursor) from None
    for index, e in enumerate(entries):
        if e.id == last_id:
            return index + 1
    return max(0, min(position, len(entries)))  # the last model seen is gone: keep the position


# --- views ---------------------------------------------------------------------------------------
def discovery_model(e: ModelEntry, *, detail: bool = False) -> dict[str, Any]:
    """A model in api-reference 003's shape (plus its type, company and every provider)."""
    view: dict[str, Any] = {
        "id": e.id,
        "name": e.name,
        "provider": e.provider,
        "providers": list(e.providers),
        "type": e.type,
        "company": e.company,
        "context_length": e.context_length,
        "max_tokens": e.meta.max_tokens,
        "supports_chat": supports_chat(e),
        "supports_completion": supports_completion(e),
        "supports_thinking": e.supports_thinking,
        "input_cost": e.input_cost,
        "output_cost": e.output_cost,
        "description": e.description,
        "capabilities": e.capabilities,
        "created_at": iso_s(e.created_ms),
        "updated_at": iso_s(e.updated_ms),
    }
    if e.meta.max_duration_s is not None:
        view["max_duration_s"] = e.meta.max_duration_s
    if detail:
        view["training_data"] = None
        view["knowledge_cutoff"] = None
    return view


def native_model(e: ModelEntry) -> dict[str, Any]:
    """A model in api-reference 000's shape (`nvidia_model_id`, `empresa`), with the id itself
    as `id`: our models have no numeric row id."""
    return {
        "id": e.id,
        "nvidia_model_id": e.id,
        "name": e.name,
        "type": e.type,
        "description": e.description,
        "max_tokens": e.meta.max_tokens or e.context_length,
        "context_length": e.context_length,
        "supports_thinking": e.supports_thinking,
        "empresa": e.company,
        "provider": e.provider,
        "capabilities": e.capabilities,
    }


def cloudgpt_model(e: ModelEntry) -> dict[str, Any]:
    """A model in api-reference 001's list shape."""
    view: dict[str, Any] = {
        "id": e.id,
        "name": e.name,
        "provider": e.provider,
        "description": e.description or f"{e.name} via {e.provider}",
    }
    if e.context_length is not None:
        view["context_window"] = e.context_length
    if e.type == "video":
        view["maxDuration"] = e.meta.max_duration_s
    return view


# --- catalog reads and refreshes -----------------------------------------------------------------
async def fresh_entries(svc: Services) -> list[ModelEntry]:
    """The catalog as Redis holds it now (one GET when it has not changed since the last read)."""
    await redis_call(lambda: svc.catalog.refresh(force=True))
    return svc.catalog.entries()


async def run_refresh(
    svc: Services, providers: list[str] | None, timeout: float, *, force: bool = False
) -> dict[str, Any] | None:
    """Have a worker run discovery now and wait for it (None: no outcome within `timeout`)."""
    try:
        outcome = await request_refresh(svc.redis, providers, timeout, force=force)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(
            f"queue unavailable: Redis cannot be reached ({exc.__class__.__name__})"
        ) from exc
    await redis_call(lambda: svc.catalog.refresh(force=True))
    return outcome
