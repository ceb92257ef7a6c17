"""`GET /api/v1/files/{id}` (and HEAD): a stored file, streamed to its owner (or the admin) with
its type, length, filename, ETag and single-range support (RFC 9110). Another key's file is a
404 like a missing one, so ids cannot be probed."""

from __future__ import annotations

from litestar import Request, Response, Router, get, head
from litestar.response import Stream

from api.errors import NATIVE, handlers_for
from api.files import file_head, serve_file
from api.openapi import docs
from api.state import services
from storage.models import StoredFile


async def _readable(request: Request, file_id: str) -> StoredFile:
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    return await svc.files.get_for(file_id, principal.key_id, is_admin=principal.is_admin)


def _download(request: Request) -> bool:
    return request.query_params.get("download", "").lower() in ("1", "true", "yes")


@get(
    "/api/v1/files/{file_id:str}",
    opt=docs(media_type="*/*", query={"download": "1: `Content-Disposition: attachment`"}),
)
async def get_file(request: Request, file_id: str) -> Response[bytes] | Stream:
    """The file's bytes. `Range: bytes=a-b` gives a 206 with that part; `If-None-Match` with
    the ETag a 304; `?download=1` asks for `Content-Disposition: attachment`."""
    file = await _readable(request, file_id)
    return await serve_file(
        request, services(request).files, file, download=_download(request), presigned=True
    )


@head("/api/v1/files/{file_id:str}")
async def head_file(request: Request, file_id: str) -> Response[None]:
    """GET's status and headers, without the body."""
    return file_head(request, await _readable(request, file_id), download=_download(request))


router = Router(path="/", route_handlers=[get_file, head_file], exception_handlers=handlers_for(NATIVE))
