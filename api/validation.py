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
    max_tokens: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
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


# Limits on input (README, "Limits on input"): what Redis, Lua, orjson and the databases can hold.
MAX_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_TOKENS = 10_000_000
_NO_NUL = "must not contain the NUL character (U+0000)"


def field_path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "body"


def _path_of(node: tuple[Any, str | int] | None) -> str:
    parts: list[str | int] = []
    while node is not None:
        node, part = node
        parts.append(part)
    return field_path(parts[::-1])


def check_bounds(raw: Any) -> None:
    """Every integer in `raw` fits signed 64 bits and nothing is nested deeper than `MAX_DEPTH`:
    beyond those Redis, Lua, orjson (255 levels) and the databases fail. 400 naming the field."""
    # (value, its depth, its path as a linked list of (parent, key)); only containers are pushed
    stack: list[tuple[Any, int, tuple[Any, str | int] | None]] = [(raw, 1, None)]
    while stack:
        value, depth, where = stack.pop()
        items = value.items() if type(value) is dict else enumerate(value)
        for k, v in items:
            t = type(v)
            if t is int:
                if not INT_MIN <= v <= INT_MAX:
                    name = _path_of((where, k))
                    raise InvalidRequest.field(
                        name, "is outside the signed 64-bit integer range", str(v)[:40]
                    )
            elif t is dict or t is list:
                if depth >= MAX_DEPTH:
                    raise InvalidRequest.field(_path_of((where, k)), f"nested deeper than {MAX_DEPTH} levels")
                stack.append((v, depth + 1, (where, k)))


def _deep_path(body: bytes) -> str:
    """Where a body that is too deep to decode first passes `MAX_DEPTH` (a scan of its
    brackets, keys and commas; only for bodies the decoder refused)."""
    stack: list[list[Any]] = []
    for m in _TOKENS.finditer(body):
        tok = m.group()
        if tok in (b"[", b"{"):
            if len(stack) >= MAX_DEPTH:
                return field_path([e[1] for e in stack if e[1] is not None])
            stack.append([tok, 0 if tok == b"[" else None])
        elif tok in (b"]", b"}"):
            if stack:
                stack.pop()
        elif tok == b",":
            if stack and stack[-1][0] == b"[":
                stack[-1][1] += 1
        elif m.group("key") is not None and stack:
            key = m.group("key").decode("utf-8", "replace")
            stack[-1][1] = key[:64]
    return "body"


_TOKENS = re.compile(rb'"(?P<key>(?:[^"\\]|\\.)*)"\s*:|"(?:[^"\\]|\\.)*"|[\[\]{},]')


def decode_object(body: bytes, *, stored: bool = False) -> dict[str, Any]:
    """The body's JSON object, bounded (`check_bounds`); `stored`: its text goes to the
    database, so it may hold no NUL."""
    if not body.strip():
        raise InvalidRequest.field("body", "a JSON object is required")
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest.field("body", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest.field(_deep_path(body), f"nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(raw, dict):
        raise InvalidRequest.field("body", "must be a JSON object")
    check_bounds(raw)
    if stored:
        refuse_nul(raw)
    return raw


def refuse_nul(raw: Any, where: list[str | int] | None = None) -> None:
    """Text bound for the database holds no NUL (PostgreSQL's text cannot): 400 naming the field."""
    path = where or []
    if isinstance(raw, str):
        if "\x00" in raw:
            raise InvalidRequest.field(field_path(path), _NO_NUL)
    elif isinstance(raw, dict):
        for k, v in raw.items():
            if isinstance(k, str) and "\x00" in k:
                raise InvalidRequest.field(field_path(path), _NO_NUL)
            refuse_nul(v, [*path, k])
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            refuse_nul(v, [*path, i])


async def refuse_nul_params(request: Any) -> None:
    """`before_request` of the app: no path or query parameter holds a NUL (they reach Redis
    keys, database queries and log lines). 400 naming the parameter. A coroutine: Litestar
    runs a plain function hook in a thread, a thread hop per request (a quarter of the web's
    CPU on `?batch=1` submissions)."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidRequest.field(name, _NO_NUL)
    for name, value in request.query_params.items():
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest.field(name.replace("\x00", "\ufffd"), _NO_NUL)


def query_int(request: Any, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter between `low` and `high` (both inclusive), else a 400 naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    return bounded_int(raw, name, low, high)


def bounded_int(raw: str, name: str, low: int, high: int) -> int:
    text = raw.strip()
    digits = text[1:] if text[:1] in ("-", "+") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise InvalidRequest.field(name, f"must be an integer from {low} to {high}", raw[:40])
    value = int(text)
    if not low <= value <= high:
        raise InvalidRequest.field(name, f"must be an integer from {low} to {high}", raw[:40])
    return value


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
    return preview(cur)


PREVIEW_ITEMS, PREVIEW_CHARS, PREVIEW_DEPTH = 5, 200, 3


def preview(value: Any, depth: int = 0) -> Any:
    """A bounded echo of a bad value for `details[].value`: the first items of an array or an
    object, strings cut short, nesting cut off; what is left out is said as a string."""
    if isinstance(value, str):
        return value if len(value) <= PREVIEW_CHARS else value[:PREVIEW_CHARS] + f"… ({len(value)} chars)"
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= PREVIEW_DEPTH:
        return "[…]" if isinstance(value, list) else "{…}"
    if isinstance(value, list):
        items = [preview(v, depth + 1) for v in value[:PREVIEW_ITEMS]]
        return items + ([f"… ({len(value) - PREVIEW_ITEMS} more)"] if len(value) > PREVIEW_ITEMS else [])
    if isinstance(value, dict):
        shown = dict(list(value.items())[:PREVIEW_ITEMS])
        out = {str(k): preview(v, depth + 1) for k, v in shown.items()}
        if len(value) > PREVIEW_ITEMS:
            out["…"] = f"{len(value) - PREVIEW_ITEMS} more keys"
        return out
    return str(value)[:PREVIEW_CHARS]


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
    # `metadata` and the webhook are the job's own (api/metadata.py, api/webhooks.py), never the provider's
    ours = (
        "thinking_enabled", "thinking_model", "stream", "stream_options", "metadata",
        "webhook", "webhook_events_filter",
    )  # fmt: skip
    upstream = {k: v for k, v in raw.items() if k not in ours}
    return req, upstream
