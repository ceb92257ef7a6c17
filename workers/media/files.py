"""Where a media job's file goes: the file store (`storage.files`), behind one narrow seam."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from switchyard.errors import ServiceUnavailable
from workers.context import WorkerCtx


def file_url(file_id: str) -> str:
    return f"/api/v1/files/{file_id}"


async def save_file(
    ctx: WorkerCtx, path: Path, mime: str, filename: str, owner: str | None, job_id: str
) -> dict[str, Any]:
    """Move the finished file into the store; what the job's result says of it."""
    files = ctx.get("files")  # type: ignore[misc]
    if files is None:
        raise ServiceUnavailable("this worker has no file store")
    stored = await files.store(
        path, mime=mime, filename=filename, owner_key_id=owner, job_id=job_id, kind="media", move=True
    )
    return {"file_id": stored.id, "url": file_url(stored.id), "size": stored.size, "mime_type": mime}


async def reuse_file(
    ctx: WorkerCtx, cached: dict[str, Any], owner: str | None, job_id: str
) -> dict[str, Any] | None:
    """A cached result for this caller: its file still there (else None: download again), and
    the caller's own when another key's job made it."""
    file_id = cached.get("file_id")
    if not file_id:
        return cached
    files = ctx.get("files")  # type: ignore[misc]
    if files is None:
        return None
    stored = await files.get(file_id)
    if stored is None:
        return None
    if stored.owner_key_id != owner:
        stored = await files.share(stored, owner_key_id=owner, job_id=job_id)
    return {**cached, "file_id": stored.id, "url": file_url(stored.id)}
