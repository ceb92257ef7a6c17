"""Stored files in API responses: their URL, their bytes as a base64 `buffer`, and the raw file
itself (streamed, with ranges, ETag and Content-Disposition).

The conventions (api-reference 000, README "Files"): a route that returns a file answers JSON
with `url` (always) and a base64 `buffer` (files up to `SWITCHYARD_FILE_BUFFER_MAX_BYTES`); it
answers the raw file instead when the request says `direct: true` or its `Accept` header names
the file's type (`audio/mpeg`, `video/*`, ... but not `*/*`).
"""

from __future__ import annotations

import asyncio
import base64
import re
import unicodedata
from typing import Any, cast
from urllib.parse import quote

from litestar import Request, Response
from litestar.response import Stream
from litestar.response.base import ASGIResponse

from jobs.records import dt_ms, iso
from storage.files import Files
from storage.models import StoredFile
from switchyard.errors import SwitchyardError
from switchyard.settings import Settings

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


class FileStream(Stream):
    """A `Stream` whose own media type wins: Litestar's `Stream` lets the handler's media type
    override it (a handler that may answer JSON or a file would send the file as JSON)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        kwargs["media_type"] = self.media_type or kwargs.get("media_type")
        return super().to_asgi_response(*args, **kwargs)


# --- links and buffers ---------------------------------------------------------------------------
def file_path(file_id: str) -> str:
    return f"/api/v1/files/{file_id}"


def file_url(source: Request | Settings, file_id: str) -> str:
    """The file's URL under `Settings.public_base_url` (`SWITCHYARD_PUBLIC_URL`, else the
    listening address); never under the request's `Host`, which the caller chooses."""
    settings = source.app.state.services.settings if isinstance(source, Request) else source
    return settings.public_base_url + file_path(file_id)


async def file_buffer(files: Files, file: StoredFile, max_bytes: int) -> str | None:
    """The file as base64 for a JSON `buffer` field; None when it is larger than `max_bytes`
    (`SWITCHYARD_FILE_BUFFER_MAX_BYTES`): such a file is offered by `url` only."""
    if file.size > max_bytes:
        return None
    data = await files.read(file)
    if len(data) < 64 * 1024:
        return base64.b64encode(data).decode()
    return await asyncio.to_thread(lambda: base64.b64encode(data).decode())


async def file_fields(request: Request, file: StoredFile, *, buffer: bool = True) -> dict[str, Any]:
    """What a JSON response says about a stored file: `url`, `file_id`, `filename`, `mime_type`,
    `size`, `expires_at`, and `buffer` (base64, or None for a file too large to inline)."""
    svc = request.app.state.services
    fields: dict[str, Any] = {
        "file_id": file.id,
        "url": file_url(request, file.id),
        "filename": file.filename,
        "mime_type": file.mime_type,
        "size": file.size,
        "expires_at": iso(dt_ms(file.expires_at)),  # Switchyard's own form, as the jobs API's
    }
    if buffer:
        fields["buffer"] = await file_buffer(svc.files, file, svc.settings.file_buffer_max_bytes)
    return fields


def wants_raw(request: Request, mime_type: str, direct: bool | None = None) -> bool:
    """True when the client asked for the file itself: `direct: true`, or an `Accept` header
    naming its type or `type/*` (`*/*`, which every client sends, does not count)."""
    if direct:
        return True
    accept = request.headers.get("accept")
    if not accept:
        return False
    major = mime_type.split("/", 1)[0].lower()
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if any(p.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        media = media.lower()
        if media == mime_type.lower() or media == f"{major}/*":
            return True
    return False


# --- the raw file --------------------------------------------------------------------------------
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


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def file_headers(file: StoredFile, *, download: bool = False) -> dict[str, str]:
    inline = not download and bool(_INLINE_TYPES.match(file.mime_type))
    return {
        "ETag": f'"{file.blob_key}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=3600",
        "Content-Disposition": content_disposition(file.filename, "inline" if inline else "attachment"),
        "X-Content-Type-Options": "nosniff",
    }


def _plan(request: Request, file: StoredFile, download: bool) -> tuple[int, dict[str, str], int, int]:
    """The status (200, 206 or 304), headers and byte span `start..end` of the answer."""
    headers = file_headers(file, download=download)
    etag = headers["ETag"]
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return 304, headers, 0, 0
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
    return status, headers, start, end


async def serve_file(
    request: Request, files: Files, file: StoredFile, *, download: bool = False, presigned: bool = False
) -> Response[bytes] | Stream:
    """The file as the response, streamed from the blob store: a single `Range` gives a 206
    (416 when outside the file), `If-None-Match` with its ETag a 304, `If-Range` is honoured.
    `download=True` asks for `Content-Disposition: attachment`. `presigned=True` (a download
    route) answers a redirect to the object store instead when `SWITCHYARD_FILE_URLS=presigned`:
    the client fetches the bytes there (ranges too), the web process never carries them."""
    status, headers, start, end = _plan(request, file, download)
    if status == 304:
        return Response(content=b"", status_code=304, headers=headers)
    settings: Settings = request.app.state.services.settings
    if presigned and settings.file_urls == "presigned":
        url = await files.presigned_url(file, settings.file_url_ttl_s)
        if url is not None:
            return Response(
                content=b"",
                status_code=307,
                headers={"Location": url, "Cache-Control": "private, no-store", "ETag": headers["ETag"]},
            )
    return FileStream(
        content=await files.stream(file, start, end),
        status_code=status,
        media_type=file.mime_type,
        headers=headers,
    )


def file_head(request: Request, file: StoredFile, *, download: bool = False) -> Response[None]:
    """What `serve_file` would answer, without the body (HEAD)."""
    status, headers, _, _ = _plan(request, file, download)
    media_type = file.mime_type if status != 304 else None
    # Litestar wants HEAD handlers typed as bodiless; an empty body keeps our Content-Length.
    response = Response(content=b"", status_code=status, media_type=media_type, headers=headers)
    return cast("Response[None]", response)
