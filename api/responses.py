"""Fast JSON responses: bodies are encoded once with orjson and handed to Litestar as bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from litestar import Response
from litestar.response import File

from switchyard.errors import NotFound

JSON = "application/json"


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(content=orjson.dumps(body), status_code=status_code, media_type=JSON, headers=headers)


def fixed_asset(
    directory: Path, media_types: dict[str, str], name: str, *, what: str, max_age_s: int
) -> File:
    """A static file served by name from a fixed list (`media_types`: name -> type), never a
    path from the request: a name not on the list is a 404 saying `what` it is not among."""
    media_type = media_types.get(name)
    if media_type is None:
        raise NotFound(f"no such file among {what}")
    return File(
        directory / name,
        media_type=media_type,
        content_disposition_type="inline",
        headers={"Cache-Control": f"public, max-age={max_age_s}"},
    )
