"""A job's `metadata`: the caller's own labels, bounded as OpenAI and Stripe bound theirs.

A map of text to text, at most 16 keys, a key 1-64 characters, a value at most 512. It comes
in the JSON body's `metadata` field on every job route that takes a JSON body (every dialect's
bodies allow fields of their own; it is kept by Switchyard, never sent to the provider), or as
the `X-Metadata` header holding the same JSON object on any job route (the movie routes are
GETs, the only ones without a body). Both at once is a 400. `GET /api/v1/jobs?metadata[k]=v`
lists the jobs that carry every given pair.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request

from switchyard.errors import InvalidRequest

MAX_KEYS = 16
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512
HEADER = "X-Metadata"
_FIELD = b'"metadata"'


def check_metadata(value: Any, field: str = "metadata") -> dict[str, str]:
    """`value` as job metadata, or a 400 naming `field` (or the offending key) and the reason."""
    if not isinstance(value, dict):
        raise InvalidRequest.field(field, "must be an object mapping keys to string values")
    if len(value) > MAX_KEYS:
        raise InvalidRequest.field(field, f"must have at most {MAX_KEYS} keys", len(value))
    for name, item in value.items():
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_KEY_CHARS:
            raise InvalidRequest.field(field, f"keys must be 1 to {MAX_KEY_CHARS} characters", str(name)[:80])
        where = f"{field}.{name}"
        if not isinstance(item, str):
            raise InvalidRequest.field(where, "must be a string")
        if len(item) > MAX_VALUE_CHARS:
            raise InvalidRequest.field(where, f"must be at most {MAX_VALUE_CHARS} characters", len(item))
        if "\x00" in name or "\x00" in item:
            raise InvalidRequest.field(where, "must not contain the NUL character (U+0000)")
    return value


async def request_metadata(request: Request) -> dict[str, str] | None:
    """The metadata a job-creating request carries (body `metadata` or `X-Metadata`), if any.

    The route has already decoded and validated its body; this decodes it again only when the
    bytes hold `"metadata"` at all, so a request without metadata costs one substring search."""
    header = request.headers.get("x-metadata")
    body = await request.body() if request.method != "GET" else b""
    in_body = None
    if _FIELD in body:
        try:
            raw = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raw = None  # not JSON: the route's own validation has said what it needs
        if isinstance(raw, dict) and raw.get("metadata") is not None:
            in_body = check_metadata(raw["metadata"])
    if header is None:
        return in_body or None
    if in_body is not None:
        raise InvalidRequest.field(HEADER, "send metadata in the body or in this header, not both")
    try:
        value = msgspec.json.decode(header)
    except (msgspec.DecodeError, RecursionError):
        raise InvalidRequest.field(HEADER, "must be a JSON object mapping keys to string values") from None
    return check_metadata(value, HEADER) or None


def metadata_filter(request: Request) -> dict[str, str] | None:
    """`metadata[k]=v` query parameters (AND-ed), bounded like metadata itself; a 400 names
    the parameter."""
    wanted: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name == "metadata":
            raise InvalidRequest.field(name, "filter on metadata as metadata[key]=value")
        if not name.startswith("metadata["):
            continue
        if not name.endswith("]"):
            raise InvalidRequest.field(name[:80], "filter on metadata as metadata[key]=value")
        key = name[len("metadata[") : -1]
        if not 1 <= len(key) <= MAX_KEY_CHARS:
            raise InvalidRequest.field(name[:80], f"the key must be 1 to {MAX_KEY_CHARS} characters")
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidRequest.field(name, f"must be at most {MAX_VALUE_CHARS} characters", len(value))
        if key in wanted and wanted[key] != value:
            raise InvalidRequest.field(name, "is given twice with different values")
        wanted[key] = value
        if len(wanted) > MAX_KEYS:
            raise InvalidRequest.field("metadata", f"at most {MAX_KEYS} metadata filters")
    return wanted or None
