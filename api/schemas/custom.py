"""The custom-model (persona) routes' answers (api-reference 000's Custom Models, native
dialect): `{"success": true, "data": ...}`, a `message` on changes."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType


class Persona(msgspec.Struct):
    """A persona; the list leaves out its prompt and sampling fields."""

    id: int
    name: str
    display_name: str
    full_name: str  # "@org/name": the model to call it by
    description: str
    base_model: str
    usage_count: int
    created_at: str | None
    updated_at: str | None
    personality_summary: str | UnsetType = UNSET
    system_prompt: str | UnsetType = UNSET
    temperature: float | None | UnsetType = UNSET
    top_p: float | None | UnsetType = UNSET
    max_tokens: int | None | UnsetType = UNSET


class PersonaAnswer(msgspec.Struct):
    success: bool
    data: Persona
    message: str | UnsetType = UNSET


class Page(msgspec.Struct):
    page: int
    limit: int
    total: int
    pages: int


class Personas(msgspec.Struct):
    models: list[Persona]
    pagination: Page


class PersonasAnswer(msgspec.Struct):
    success: bool
    data: Personas


class Suggestion(msgspec.Struct):
    name: str
    display_name: str
    category: str
    description: str
    personality_summary: str


class Suggestions(msgspec.Struct):
    suggestions: list[Suggestion]
    total: int
    categories: list[str]


class SuggestionsAnswer(msgspec.Struct):
    success: bool
    data: Suggestions


class Preview(msgspec.Struct):
    system_prompt: str
    display_name: str
    length: int


class PreviewAnswer(msgspec.Struct):
    success: bool
    data: Preview


class PersonaUse(msgspec.Struct):
    id: int
    name: str
    full_name: str
    base_model: str
    requests: int
    successful_requests: int
    failed_requests: int
    success_rate: float
    total_tokens: int
    estimated_cost: float
    avg_latency_ms: float
    last_used_at: str | None


class Stats(msgspec.Struct):
    days: int
    since: str | None
    total_models: int
    total_requests: int
    most_used: str | None
    models: list[PersonaUse]


class StatsAnswer(msgspec.Struct):
    success: bool
    data: Stats


class Deleted(msgspec.Struct):
    id: int
    name: str
    full_name: str
    deleted: bool


class DeletedAnswer(msgspec.Struct):
    success: bool
    message: str
    data: Deleted
