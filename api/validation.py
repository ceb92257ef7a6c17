"""Request bodies decoded and checked with msgspec; every failure names the field and the reason."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from switchyard.errors import InvalidRequest

T = TypeVar("T")

Temperature = Annotated[float, Meta(ge=0, le=2)]
UnitInterval = Annotated[float, Meta(ge=0, le=1)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
NonEmpty = Annotated[str, Meta(min_length=1)]


class Message(msgspec.Struct, forbid_unknown_fields=False):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=False):
    include_usage: bool | None = None


class ChatRequest(msgspec.Struct, forbid_unknown_fields=False):
    """Every parameter api-reference 000 documents for chat completion, with its range."""

    model: NonEmpty
    messages: Annotated[list[Message], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Temperature | None = None
    top_p: UnitInterval | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    thinking_enabled: bool | None = None
    thinking_model: str | None = None
    top_k: Annotated[int, Meta(ge=1, le=100)] | None = None
    repetition_penalty: Annotated[float, Meta(ge=0.1, le=2)] | None = None
    min_tokens: Annotated[int, Meta(ge=0)] | None = None
    length_penalty: Penalty | None = None
    early_stopping: bool | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    n: Annotated[int, Meta(ge=1, le=10)] | None = None
    best_of: Annotated[int, Meta(ge=1, le=20)] | None = None
    user: str | None = None


_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _field_and_reason(message: str) -> tuple[str, str]:
    path = ""
    m = _PATH.search(message)
    if m:
        path = m.group("path").lstrip(".")
        message = message[: m.start()]
    missing = _MISSING.match(message)
    if missing:
        field = f"{path}.{missing.group('field')}" if path else missing.group("field")
        return field, "is required"
    unknown = _UNKNOWN.match(message)
    if unknown:
        field = f"{path}.{unknown.group('field')}" if path else unknown.group("field")
        return field, "is not a known field"
    reason = message.replace("Expected", "expected", 1)
    return path or "body", reason


def decode_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequest.field("body", "a JSON object is required")
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest.field("body", f"malformed JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidRequest.field("body", "must be a JSON object")
    return raw


def convert(raw: dict[str, Any], schema: type[T]) -> T:
    try:
        return msgspec.convert(raw, schema)
    except msgspec.ValidationError as exc:
        field, reason = _field_and_reason(str(exc))
        value = _lookup(raw, field)
        raise InvalidRequest(
            f"{field}: {reason}", details=[{"field": field, "message": reason, "value": value}]
        ) from None


def _lookup(raw: Any, field: str) -> Any:
    cur = raw
    for part in re.findall(r"[^.\[\]]+", field):
        try:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return cur if isinstance(cur, str | int | float | bool) or cur is None else None


def parse_chat(
    body: bytes, *, max_tokens_cap: int | None = None, default_model: str | None = None
) -> tuple[ChatRequest, dict[str, Any]]:
    """The validated request, and the body to send upstream (unknown OpenAI fields kept)."""
    raw = decode_object(body)
    if default_model is not None and raw.get("model") is None:
        raw["model"] = default_model
    req = convert(raw, ChatRequest)
    if max_tokens_cap is not None and req.max_tokens is not None and req.max_tokens > max_tokens_cap:
        raise InvalidRequest.field("max_tokens", f"must be at most {max_tokens_cap}", req.max_tokens)
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest.field("stream_options", "is only allowed when stream is true")
    ours = ("thinking_enabled", "thinking_model", "stream", "stream_options")
    upstream = {k: v for k, v in raw.items() if k not in ours}
    return req, upstream
