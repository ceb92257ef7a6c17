"""`GET /api/v1/files/{id}`: a stored file, streamed to its owner (or the admin) with its type,
length, filename, ETag and single-range support (RFC 9110). Another key's file is a 404 like a
missing one, so ids cannot be probed."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from litestar import Request, Response, Router, get
from litestar.response import Stream

from api.errors import NATIVE, handlers_for
from api.state import services
from storage.models import StoredFile
from switchyard.errors import SwitchyardError

# Types a browser may show in place; anything else (HTML, SVG, scripts...) is always an
# attachment, so a stored file can never run as a page of this origin.
_INLINE_TYPES = re.compile(
    r"^(image/(png|jpeg|gif|webp|avif|bmp)|audio/[\w.+-]+|video/[\w.+-]+|text/plain|application/pdf)\b"
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(SwitchyardError):
    status_code = 416
    error_type = "range_not_satisfiable"
    title = "Range Not Satisfiable"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range `(start, end)` (end exclusive) a `Range` header asks for; None to
    send the whole file (no header, or one this server ignores: malformed, another unit, several
    ranges). Raises `RangeNotSatisfiable` when no byte of the file is in the range."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # RFC 9110 14.2: an invalid or multi-range header may be ignored
    first, last = match.groups()
    if not first and not last:
        return None
    unsatisfiable = RangeNotSatisfiable(
        f"range {header.strip()!r} is outside the file's {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None  # last-pos before first-pos: invalid, ignored
    if start >= size:
        raise unsatisfiable
    end = size - 1 if not last else min(int(last), size - 1)
    return start, end + 1


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """RFC 6266: an ASCII `filename` for old clients and `filename*` (RFC 8187) for the rest."""
    fallback = "".join(
        ("_" if c in '"\\' else c) if c.isascii() else ("" if unicodedata.combining(c) else "_")
        for c in unicodedata.normalize("NFKD", filename)
    )  # "Canção ☕.mp3" -> "Cancao _.mp3"
    header = f'{disposition}; filename="{fallback}"'
    if fallback != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header


def _etag(file: StoredFile) -> str:
    return f'"{file.blob_key}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _wants_download(request: Request) -> bool:
    return request.query_params.get("download", "").lower() in ("1", "true", "yes")


@get("/api/v1/files/{file_id:str}")
async def get_file(request: Request, file_id: str) -> Response[bytes] | Stream:
    """The file's bytes. `Range: bytes=a-b` gives a 206 with that part; `If-None-Match` with
    the ETag a 304; `?download=1` asks for `Content-Disposition: attachment`."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    file = await svc.files.get_for(file_id, principal.key_id, is_admin=principal.is_admin)
    etag = _etag(file)
    inline = not _wants_download(request) and bool(_INLINE_TYPES.match(file.mime_type))
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=3600",
        "Content-Disposition": content_disposition(file.filename, "inline" if inline else "attachment"),
        "X-Content-Type-Options": "nosniff",
    }
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(content=b"", status_code=304, headers=headers)

    byte_range = None
    if_range = request.headers.get("if-range")
    if if_range is None or if_range.strip() == etag:  # a stale If-Range: the whole file
        byte_range = parse_range(request.headers.get("range"), file.size)
    if byte_range is None:
        start, end, status = 0, file.size, 200
    else:
        (start, end), status = byte_range, 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{file.size}"
    headers["Content-Length"] = str(end - start)
    return Stream(
        content=await svc.files.stream(file, start, end),
        status_code=status,
        media_type=file.mime_type,
        headers=headers,
    )


router = Router(path="/", route_handlers=[get_file], exception_handlers=handlers_for(NATIVE))
