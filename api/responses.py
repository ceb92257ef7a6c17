"""Fast JSON responses: bodies are encoded once with orjson and handed to Litestar as bytes."""

from __future__ import annotations

from typing import Any

import orjson
from litestar import Response

JSON = "application/json"


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(content=orjson.dumps(body), status_code=status_code, media_type=JSON, headers=headers)
