"""Stored files: a `StoredFile` row (owner, mime type, filename, expiry) over a content-addressed
blob. The same service is used by the web process (`Services.files`) and by workers
(`ctx["files"]`): a worker stores what a job made, the API serves it at `/api/v1/files/{id}`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import and_, delete, func, or_
from sqlmodel import col, select

from storage.blobs import Blob, BlobNotFound, BlobSource, BlobStore, open_blob_store
from storage.bounds import bounded, bounded_call
from storage.db import Database
from storage.keys import as_utc, utcnow
from storage.models import StoredFile
from switchyard.errors import NotFound
from switchyard.settings import Settings

log = logging.getLogger("switchyard.files")

FILE_ID_PREFIX = "file_"
_FILE_ID = re.compile(r"^file_[A-Za-z0-9_-]{24}$")
DEFAULT_TTL: Literal["default"] = "default"


@dataclass(frozen=True, slots=True)
class NewFile:
    """One file for `Files.store_many` (the arguments of `Files.store`)."""

    source: BlobSource
    mime: str
    filename: str
    owner_key_id: str | None = None
    kind: str = "file"
    job_id: str | None = None
    expires_in_s: float | None | Literal["default"] = DEFAULT_TTL


class FileNotFound(NotFound):
    error_type = "file_not_found"

    def __init__(self, file_id: str, reason: str = "not found") -> None:
        super().__init__(f"File '{file_id}' {reason}")


def new_file_id() -> str:
    return FILE_ID_PREFIX + secrets.token_urlsafe(18)  # 144 random bits, 24 characters


def is_file_id(value: str) -> bool:
    return bool(_FILE_ID.match(value))


def _normalized(file: StoredFile) -> StoredFile:
    """SQLite hands datetimes back naive; they were written as UTC."""
    file.created_at = as_utc(file.created_at)
    if file.expires_at is not None:
        file.expires_at = as_utc(file.expires_at)
    return file


def is_expired(file: StoredFile, now: datetime | None = None) -> bool:
    return file.expires_at is not None and as_utc(file.expires_at) <= (now or utcnow())


class Files:
    """Store, find and expire files. `blob_grace_s`: an unreferenced blob written more recently
    than this is kept by the expiry sweep (a concurrent `store` of the same content may be between
    writing the blob and inserting its row)."""

    def __init__(
        self, db: Database, blobs: BlobStore, *, ttl_s: float = 86_400, blob_grace_s: float = 60.0
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.ttl_s = ttl_s
        self.blob_grace_s = blob_grace_s

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> Files:
        return cls(db, open_blob_store(settings), ttl_s=settings.file_ttl_s)

    @bounded_call("database")
    async def store(
        self,
        source: BlobSource,
        *,
        mime: str,
        filename: str,
        owner_key_id: str | None = None,
        expires_in_s: float | None | Literal["default"] = DEFAULT_TTL,
        job_id: str | None = None,
        kind: str = "file",
        move: bool = False,
    ) -> StoredFile:
        """Store bytes, a file (`Path`; `move=True` moves it in rather than copying) or an async
        iterable of chunks. `expires_in_s`: the default is the configured TTL
        (`SWITCHYARD_FILE_TTL_S`); None keeps the file until it is deleted."""
        blob = await self.blobs.put(source, move=move)
        file = self._row(blob, mime, filename, owner_key_id, expires_in_s, job_id, kind)
        async with self.db.session() as session:
            session.add(file)
        return file

    @bounded_call("database")
    async def record(
        self,
        blob: Blob,
        *,
        mime: str,
        filename: str,
        owner_key_id: str | None = None,
        expires_in_s: float | None | Literal["default"] = DEFAULT_TTL,
        kind: str = "file",
    ) -> StoredFile:
        """The row of a blob already put in the blob store (an upload streamed there while its
        form was still being read)."""
        file = self._row(blob, mime, filename, owner_key_id, expires_in_s, None, kind)
        async with self.db.session() as session:
            session.add(file)
        return file

    @bounded_call("database")
    async def discard_blob(self, key: str) -> None:
        """Remove a blob no row was made for (an upload refused after its bytes were stored),
        unless another row shares it."""
        await self._drop_unreferenced({key})

    @bounded_call("database")
    async def store_many(self, items: list[NewFile]) -> list[StoredFile]:
        """Store several files (the blobs at once) in one database transaction: what one job
        made (an image and its thumbnail...) costs one commit, not one per file."""
        blobs = await asyncio.gather(*(self.blobs.put(item.source) for item in items))
        files = [
            self._row(blob, i.mime, i.filename, i.owner_key_id, i.expires_in_s, i.job_id, i.kind)
            for blob, i in zip(blobs, items, strict=True)
        ]
        async with self.db.session() as session:
            session.add_all(files)
        return files

    def _row(
        self,
        blob: Blob,
        mime: str,
        filename: str,
        owner_key_id: str | None,
        expires_in_s: float | None | Literal["default"],
        job_id: str | None,
        kind: str,
    ) -> StoredFile:
        now = utcnow()
        ttl = self.ttl_s if expires_in_s == DEFAULT_TTL else expires_in_s
        return StoredFile(
            id=new_file_id(),
            blob_key=blob.key,
            mime_type=mime[:200],
            size=blob.size,
            filename=_safe_filename(filename),
            owner_key_id=owner_key_id,
            kind=kind,
            job_id=job_id,
            created_at=now,
            expires_at=None if ttl is None else now + timedelta(seconds=float(ttl)),
        )

    @bounded_call("database")
    async def share(
        self, file: StoredFile, *, owner_key_id: str | None, job_id: str | None = None
    ) -> StoredFile:
        """The same content under a new row of another owner's (no bytes copied: blobs are
        content-addressed), with the default expiry from now. For results cached across keys."""
        now = utcnow()
        shared = StoredFile(
            id=new_file_id(),
            blob_key=file.blob_key,
            mime_type=file.mime_type,
            size=file.size,
            filename=file.filename,
            owner_key_id=owner_key_id,
            kind=file.kind,
            job_id=job_id,
            created_at=now,
            expires_at=now + timedelta(seconds=float(self.ttl_s)),
        )
        async with self.db.session() as session:
            session.add(shared)
        return shared

    @bounded_call("database")
    async def get(self, file_id: str, *, include_expired: bool = False) -> StoredFile | None:
        """The file, or None when there is none (or it has expired, unless `include_expired`)."""
        if not is_file_id(file_id):
            return None
        async with self.db.session() as session:
            file = await session.get(StoredFile, file_id)
        if file is None:
            return None
        file = _normalized(file)
        if is_expired(file) and not include_expired:
            return None
        return file

    async def get_for(self, file_id: str, key_id: str | None, *, is_admin: bool = False) -> StoredFile:
        """The file if this key may read it (its owner, or the admin). Another key's file is not
        found, exactly like a missing one, so ids cannot be probed."""
        file = await self.get(file_id, include_expired=True)
        if file is None or not (is_admin or (key_id is not None and file.owner_key_id == key_id)):
            raise FileNotFound(file_id)
        if is_expired(file):
            raise FileNotFound(file_id, "has expired")
        return file

    def open(self, file: StoredFile, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The file's bytes `start..end` (end exclusive) as chunks."""
        return self.blobs.open(file.blob_key, start, end)

    async def stream(self, file: StoredFile, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Like `open`, but the blob is opened (and its first chunk read) before this returns, so
        a missing blob is a `FileNotFound` here rather than an error halfway through a response."""
        chunks = self.open(file, start, end)
        try:
            async with bounded("blob store"):
                first = await anext(chunks)
        except StopAsyncIteration:
            return _chained(b"", chunks)
        except BlobNotFound:
            raise FileNotFound(file.id, "is no longer available") from None
        return _chained(first, chunks)

    async def presigned_url(self, file: StoredFile, expires_in_s: float) -> str | None:
        """A URL of the object store that serves the file's bytes for a while (None: the store
        has none, files on a local disk)."""
        async with bounded("blob store"):
            return await self.blobs.presigned_url(file.blob_key, expires_in_s)

    async def read(self, file: StoredFile) -> bytes:
        """The whole file in memory: for small files only."""
        return await self.blobs.read(file.blob_key)

    @bounded_call("database")
    async def delete(self, file_id: str) -> bool:
        """Remove the row, and the blob when no other row shares it."""
        async with self.db.session() as session:
            file = await session.get(StoredFile, file_id)
            if file is None:
                return False
            await session.delete(file)
        await self._drop_unreferenced({file.blob_key})
        return True

    async def delete_expired(
        self,
        now: datetime | None = None,
        *,
        batch: int = 500,
        on_blob_error: Callable[[str, Exception], Awaitable[None]] | None = None,
    ) -> int:
        """Remove every row expired at `now`, and the blobs no remaining row references.
        Returns the number of rows removed. A blob that cannot be removed is handed to
        `on_blob_error` (or logged) and the sweep goes on with the others."""
        now = now or utcnow()
        removed = 0
        while True:
            async with self.db.session() as session:
                rows = (
                    await session.exec(
                        select(StoredFile.id, StoredFile.blob_key)
                        .where(col(StoredFile.expires_at) <= now)
                        .limit(batch)
                    )
                ).all()
                if not rows:
                    return removed
                await session.exec(delete(StoredFile).where(col(StoredFile.id).in_([r[0] for r in rows])))  # type: ignore[call-overload]
            removed += len(rows)
            await self._drop_unreferenced({r[1] for r in rows}, on_blob_error)
            if len(rows) < batch:
                return removed

    async def _drop_unreferenced(
        self, keys: set[str], on_error: Callable[[str, Exception], Awaitable[None]] | None = None
    ) -> None:
        if not keys:
            return
        written_before = time.time() - self.blob_grace_s
        async with self.db.session() as session:
            still_used = set(
                (
                    await session.exec(
                        select(StoredFile.blob_key).where(col(StoredFile.blob_key).in_(keys)).distinct()
                    )
                ).all()
            )
        for key in keys - still_used:
            try:
                await self.blobs.delete(key, written_before=written_before)
            except Exception as exc:  # noqa: BLE001 (a bad key or a file we may not remove: the rest go on)
                if on_error is None:
                    log.error("blob %s could not be removed: %s", key, exc)
                else:
                    await on_error(key, exc)

    @bounded_call("database")
    async def list_for(
        self,
        key_id: str | None,
        *,
        kinds: tuple[str, ...],
        after: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[StoredFile]:
        """The key's unexpired files of these kinds (`key_id` None: every key's, for the admin),
        by creation time; `after`: the files past this one in that order."""
        query = select(StoredFile).where(col(StoredFile.kind).in_(kinds))
        if key_id is not None:
            query = query.where(StoredFile.owner_key_id == key_id)
        query = query.where(or_(col(StoredFile.expires_at).is_(None), col(StoredFile.expires_at) > utcnow()))
        created, ident = col(StoredFile.created_at), col(StoredFile.id)
        if after is not None:
            async with self.db.session() as session:
                anchor = await session.get(StoredFile, after)
            if anchor is not None:
                at = anchor.created_at
                if newest_first:
                    query = query.where(or_(created < at, and_(created == at, ident < after)))
                else:
                    query = query.where(or_(created > at, and_(created == at, ident > after)))
        order = (created.desc(), ident.desc()) if newest_first else (created.asc(), ident.asc())
        async with self.db.session() as session:
            rows = (await session.exec(query.order_by(*order).limit(limit))).all()
        return [_normalized(r) for r in rows]

    @bounded_call("database")
    async def count(self) -> int:
        async with self.db.session() as session:
            return int((await session.exec(select(func.count()).select_from(StoredFile))).one())


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]+")


def _safe_filename(name: str) -> str:
    """A filename to offer in Content-Disposition: no path, no control characters."""
    name = _UNSAFE.sub("_", name).strip().strip(".") or "file"
    return name[:255]
