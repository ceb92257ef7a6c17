"""Custom persona models (api-reference 000, "Custom Models"): the request schemas and their
checks, the system-prompt template, the suggestions, and how a chat call's `@org/name` becomes
its base model with the persona's system prompt and defaults.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType
from sqlalchemy.exc import SQLAlchemyError

from api.validation import ChatRequest, Temperature, UnitInterval
from storage.custom import CustomModelRecord, find_custom
from storage.db import Database
from switchyard.errors import InvalidRequest, ModelNotFound, ServiceUnavailable

if TYPE_CHECKING:
    from api.auth import Principal
    from api.state import Services

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
NAME_MIN, NAME_MAX = 2, 50
PERSONALITY_MIN, PERSONALITY_MAX = 10, 2000
PROMPT_MAX = 8000
MAX_TOKENS_MAX = 32768  # the native chat route's own ceiling

DisplayName = Annotated[str, Meta(max_length=100)]
Description = Annotated[str, Meta(max_length=500)]
Personality = Annotated[str, Meta(min_length=PERSONALITY_MIN, max_length=PERSONALITY_MAX)]
BaseModel = Annotated[str, Meta(min_length=1, max_length=200)]
SystemPrompt = Annotated[str, Meta(min_length=1, max_length=PROMPT_MAX)]
MaxTokens = Annotated[int, Meta(ge=1, le=MAX_TOKENS_MAX)]


class CustomCreate(msgspec.Struct, forbid_unknown_fields=True):
    """000's fields, plus an own `system_prompt` (instead of the template's) and sampling
    defaults used by calls that do not set their own."""

    name: str
    personality_summary: Personality
    display_name: DisplayName | None = None
    description: Description | None = None
    base_model: BaseModel | None = None
    system_prompt: SystemPrompt | None = None
    temperature: Temperature | None = None
    top_p: UnitInterval | None = None
    max_tokens: MaxTokens | None = None
    regenerate_prompt: bool | None = (
        None  # accepted for symmetry with PUT: a new model's prompt is made anyway
    )


class CustomUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Only what is sent changes. `null` resets display_name/description to their defaults and
    removes a sampling default."""

    name: str | UnsetType = UNSET
    display_name: DisplayName | None | UnsetType = UNSET
    description: Description | None | UnsetType = UNSET
    personality_summary: Personality | UnsetType = UNSET
    base_model: BaseModel | UnsetType = UNSET
    system_prompt: SystemPrompt | UnsetType = UNSET
    temperature: Temperature | None | UnsetType = UNSET
    top_p: UnitInterval | None | UnsetType = UNSET
    max_tokens: MaxTokens | None | UnsetType = UNSET
    regenerate_prompt: bool = False


class PromptPreview(msgspec.Struct, forbid_unknown_fields=False):
    personality_summary: Personality
    display_name: DisplayName | None = None
    description: Description | None = None
    name: str | None = None


def check_name(name: str) -> str:
    if not NAME_MIN <= len(name) <= NAME_MAX:
        raise InvalidRequest.field("name", f"must be {NAME_MIN}-{NAME_MAX} characters long", name)
    if not NAME_RE.match(name):
        raise InvalidRequest.field("name", "may contain only letters, digits, '-' and '_'", name)
    return name


def check_personality(text: str) -> str:
    """Surrounding spaces do not count towards the minimum."""
    text = text.strip()
    if len(text) < PERSONALITY_MIN:
        raise InvalidRequest.field(
            "personality_summary",
            f"must be {PERSONALITY_MIN}-{PERSONALITY_MAX} characters, not counting surrounding spaces",
            text,
        )
    return text


def check_system_prompt(text: str) -> str:
    text = text.strip()
    if not text:
        raise InvalidRequest.field("system_prompt", "must not be blank", text)
    return text


def title_of(name: str) -> str:
    """The display name a persona gets when none is given: `coding-mentor` -> `Coding Mentor`."""
    words = re.split(r"[-_]+", name)
    return " ".join(w[:1].upper() + w[1:] for w in words if w) or name


def render_prompt(*, display_name: str, personality_summary: str, description: str = "") -> str:
    """The system prompt made from a persona's fields: the same fields give the same text."""
    parts = [f"# Role: {display_name}", personality_summary.strip()]
    if description.strip():
        parts.append("## About you\n" + description.strip())
    parts.append(
        "## Guidelines\n"
        f"- Stay in the role of {display_name} for the whole conversation.\n"
        "- Reply in the language the user writes in.\n"
        "- Be accurate: when you are unsure or do not know, say so instead of inventing details.\n"
        "- Keep answers clear and focused on what the user asked."
    )
    return "\n\n".join(parts)


SUGGESTIONS: tuple[dict[str, str], ...] = (
    {
        "name": "coding-mentor",
        "display_name": "Coding Mentor",
        "category": "education",
        "description": "Explains programming concepts and reviews code",
        "personality_summary": (
            "You are an experienced programming mentor who explains code with patience and uses "
            "practical examples. You point out bugs and better approaches without making the learner "
            "feel judged, and you show small runnable snippets."
        ),
    },
    {
        "name": "travel-guide",
        "display_name": "Travel Guide AI",
        "category": "lifestyle",
        "description": "Plans trips and recommends destinations",
        "personality_summary": (
            "You are an enthusiastic travel guide with extensive knowledge of global destinations. "
            "You provide practical travel tips, realistic budgets and exciting recommendations."
        ),
    },
    {
        "name": "writing-coach",
        "display_name": "Writing Coach",
        "category": "creativity",
        "description": "Helps draft, edit and polish texts",
        "personality_summary": (
            "You are a supportive writing coach. You help people find a clear structure, tighten "
            "their sentences and keep their own voice, explaining each suggestion briefly."
        ),
    },
    {
        "name": "language-tutor",
        "display_name": "Language Tutor",
        "category": "education",
        "description": "Practises conversation and corrects mistakes",
        "personality_summary": (
            "You are a friendly language tutor. You converse at the learner's level, gently correct "
            "mistakes after each reply and explain the grammar behind the correction."
        ),
    },
    {
        "name": "data-analyst",
        "display_name": "Data Analyst",
        "category": "professional",
        "description": "Turns questions about data into analyses",
        "personality_summary": (
            "You are a careful data analyst. You ask what the data looks like, propose the simplest "
            "analysis that answers the question, and state the assumptions and caveats plainly."
        ),
    },
    {
        "name": "fitness-coach",
        "display_name": "Fitness Coach",
        "category": "health",
        "description": "Suggests workouts and healthy routines",
        "personality_summary": (
            "You are an encouraging fitness coach. You suggest safe, progressive workouts adapted to "
            "the person's level and remind them to consult a professional about injuries."
        ),
    },
)


def suggestions(category: str | None = None) -> list[dict[str, str]]:
    return [dict(s) for s in SUGGESTIONS if category is None or s["category"] == category]


# --- chat calls through "@org/name" -------------------------------------------------------------
class CustomModelCache:
    """Persona lookups by (key, name), kept for a few seconds so a chat call through a persona
    costs at most one indexed database read. Changes made through this process take effect at
    once; changes made in another web process, within `ttl_s`."""

    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str], tuple[float, CustomModelRecord | None]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[CustomModelRecord | None]] = {}

    def forget(self, owner_key_id: str, *names: str) -> None:
        for name in names:
            self._entries.pop((owner_key_id, name), None)

    async def find(self, owner_key_id: str, name: str) -> CustomModelRecord | None:
        key = (owner_key_id, name)
        hit = self._entries.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = asyncio.ensure_future(self._load(key))
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _load(self, key: tuple[str, str]) -> CustomModelRecord | None:
        try:
            record = await find_custom(self.db, *key)
        except (SQLAlchemyError, OSError) as exc:
            raise ServiceUnavailable("database unavailable: cannot look up the custom model") from exc
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl_s, record)
        return record


def full_name(org: str, name: str) -> str:
    return f"@{org}/{name}"


def with_system_prompt(prompt: str, messages: list[Any]) -> list[Any]:
    """The persona's prompt first. A caller's own leading system message is kept, joined after
    the persona's in the same message: some models take only one system message, at the top."""
    if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
        first, rest = messages[0], messages[1:]
        content = first.get("content")
        if isinstance(content, list):
            merged: Any = [{"type": "text", "text": prompt}, *content]
        elif content:
            merged = f"{prompt}\n\n{content}"
        else:
            merged = prompt
        return [{**first, "content": merged}, *rest]
    return [{"role": "system", "content": prompt}, *messages]


async def resolve_custom_model(
    svc: Services, principal: Principal, req: ChatRequest, upstream: dict[str, Any]
) -> tuple[ChatRequest, str]:
    """For `"model": "@org/name"`: the request on the persona's base model, with its system prompt
    first and its defaults where the caller set none (`upstream` is rewritten in place), and the
    name the job is recorded under. Any other model passes through untouched.

    Another key's persona, or one that does not exist, is an unknown model (404).
    """
    model = req.model
    if not model.startswith("@"):
        return req, model
    org, _, name = model[1:].partition("/")
    record = None
    if org == svc.settings.custom_org and name:
        record = await svc.custom_models.find(principal.key_id, name)
    if record is None:
        raise ModelNotFound(model)
    try:
        await svc.catalog.require(record.base_model, "chat", "completion")
    except ModelNotFound as exc:
        exc.message = f"custom model '{model}' runs on '{record.base_model}', which no provider serves now"
        raise
    upstream["model"] = record.base_model
    upstream["messages"] = with_system_prompt(record.system_prompt, upstream["messages"])
    if record.temperature is not None and upstream.get("temperature") is None:
        upstream["temperature"] = record.temperature
    if record.top_p is not None and upstream.get("top_p") is None:
        upstream["top_p"] = record.top_p
    max_tokens = req.max_tokens
    if record.max_tokens is not None and req.max_tokens is None and req.max_completion_tokens is None:
        # Like a dialect's default, the persona's stays within the key's per-request cap.
        cap = principal.record.limits.max_tokens_per_request if principal.record is not None else None
        max_tokens = record.max_tokens if cap is None else min(record.max_tokens, cap)
        upstream["max_tokens"] = max_tokens
    return msgspec.structs.replace(req, model=record.base_model, max_tokens=max_tokens), model
