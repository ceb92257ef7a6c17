"""Content-addressed blob storage: the bytes of files (images, audio, video), named by their SHA-256.

`BlobStore` is the interface; `LocalBlobStore` keeps blobs on the filesystem under
`<data dir>/blobs/ab/cd/<sha256>`, `storage.s3blobs.S3BlobStore` in an S3-compatible bucket.
`open_blob_store` picks one by `SWITCHYARD_BLOB_URL`; nothing outside `storage/` knows which.
Metadata (owner, mime type, expiry) is not here: see `storage.files`.

Blobs are written to a temporary file and renamed into place, so a reader never sees a partial
blob. File I/O runs in threads, in chunks: a large file never sits in memory and never blocks
the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit

from switchyard.errors import ConfigError, ServiceUnavailable

if TYPE_CHECKING:
    from switchyard.settings import Settings

CHUNK_SIZE = 256 * 1024
_KEY = re.compile(r"^[0-9a-f]{64}$")

BlobSource = bytes | bytearray | memoryview | Path | AsyncIterable[bytes]


class BlobNotFound(LookupError):
    """No blob under this key (never stored, or deleted)."""


class BlobStoreUnavailable(ServiceUnavailable):
    """The blob store did not answer, or answered with an error (not a missing blob)."""

    error_type = "blob_store_unavailable"


@dataclass(frozen=True, slots=True)
class Blob:
    key: str  # the SHA-256 of the content, hex
    size: int


def is_blob_key(key: str) -> bool:
    return bool(_KEY.match(key))


def _check_key(key: str) -> str:
    if not is_blob_key(key):
        raise ValueError(f"not a blob key (64 lowercase hex digits): {key!r}")
    return key


class BlobStore(ABC):
    """Where file contents live, by content: the same bytes stored twice are one blob."""

    @abstractmethod
    async def put(self, source: BlobSource, *, move: bool = False) -> Blob:
        """Store bytes, a file (`Path`; with `move=True` the file is moved in when it can be,
        instead of copied), or an async iterable of chunks. Returns the blob's key and size.
        Storing content that is already there only refreshes its last-written time."""

    @abstractmethod
    def open(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """The bytes `start..end` (end exclusive, None: to the end) as chunks of at most
        `chunk_size`. Raises `BlobNotFound` on first iteration when the blob is missing."""

    @abstractmethod
    async def size(self, key: str) -> int:
        """The blob's size in bytes; `BlobNotFound` when missing."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def delete(self, key: str, *, written_before: float | None = None) -> bool:
        """Remove the blob; True when it was there. With `written_before` (a Unix time) a blob
        written or re-stored since then is kept: a concurrent `put` of the same content may be
        about to reference it."""

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """The bytes in memory: for small blobs only."""
        return b"".join([chunk async for chunk in self.open(key, start, end)])

    async def presigned_url(self, key: str, expires_in_s: float) -> str | None:
        """A URL that serves the blob to whoever holds it, for a while; None when this store
        has no such URLs (files on a local disk)."""
        return None

    async def sweep_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Remove what writes cut short by a killed process left behind; the number removed."""
        return 0

    def describe(self) -> str:
        """Where the blobs are, for an operator (no secrets)."""
        return self.__class__.__name__


def open_blob_store(settings: Settings) -> BlobStore:
    """The store `SWITCHYARD_BLOB_URL` names: `file:///path`, `s3://bucket/prefix`, or (unset)
    the local directory `SWITCHYARD_BLOB_DIR` / `<data dir>/blobs`."""
    url = settings.blob_url
    if not url or url == "file://":
        return LocalBlobStore(settings.blob_dir_or_default)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalBlobStore(Path(unquote(parts.netloc + parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"SWITCHYARD_BLOB_URL ({url}) names no bucket: s3://bucket/prefix")
        from storage.s3blobs import S3BlobStore

        return S3BlobStore.from_settings(parts.netloc, unquote(parts.path).strip("/"), settings)
    raise ConfigError(f"SWITCHYARD_BLOB_URL ({url}) must be file:///path or s3://bucket/prefix")


class LocalBlobStore(BlobStore):
    """Blobs as files under `root`, fanned out as `ab/cd/<sha256>`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"

    def path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key[:2] / key[2:4] / key

    # --- writing ---------------------------------------------------------------------------------
    def _temp_file(self) -> tuple[Path, BinaryIO]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        path = self._tmp / f"{secrets.token_hex(8)}.part"
        return path, open(path, "xb")  # noqa: SIM115  (closed by the caller)

    def _refresh(self, dest: Path) -> bool:
        """True when the blob is already there; its last-written time is refreshed so that a
        concurrent expiry sweep (`delete(written_before=...)`) keeps it."""
        try:
            os.utime(dest)
            return True
        except FileNotFoundError:
            return False

    def _place(self, src: Path, dest: Path) -> None:
        """Rename into place; an expiry sweep may remove an emptied fan-out directory meanwhile."""
        for _ in range(5):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(src, dest)
                return
            except FileNotFoundError:
                if not src.exists():
                    raise
        os.replace(src, dest)

    def _commit(self, tmp: Path, key: str) -> None:
        """Move a finished temporary file into place (or drop it: the content is already there)."""
        dest = self.path(key)
        if self._refresh(dest):
            tmp.unlink(missing_ok=True)
            return
        self._place(tmp, dest)

    def _put_bytes(self, data: bytes | bytearray | memoryview) -> Blob:
        key = hashlib.sha256(data).hexdigest()
        if self._refresh(self.path(key)):
            return Blob(key, len(data))
        tmp, f = self._temp_file()
        try:
            with f:
                f.write(data)
            self._commit(tmp, key)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Blob(key, len(data))

    def _put_file(self, source: Path, move: bool) -> Blob:
        digest = hashlib.sha256()
        size = 0
        tmp, out = self._temp_file()
        try:
            with out, open(source, "rb") as f:
                # Hash and copy in one pass; when moving, the copy is dropped if a rename works.
                while chunk := f.read(CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
                    if not move:
                        out.write(chunk)
            key = digest.hexdigest()
            if move:
                tmp.unlink()
                dest = self.path(key)
                if self._refresh(dest):
                    source.unlink(missing_ok=True)
                    return Blob(key, size)
                try:
                    self._place(source, dest)  # same filesystem: no copy at all
                    os.utime(dest)
                    return Blob(key, size)
                except OSError as exc:
                    if isinstance(exc, FileNotFoundError):
                        raise
                    # Another filesystem (EXDEV): copy to a temporary file, then rename.
                    tmp, out = self._temp_file()
                    with out, open(source, "rb") as f:
                        shutil.copyfileobj(f, out, CHUNK_SIZE)
                    self._commit(tmp, key)
                    source.unlink(missing_ok=True)
                    return Blob(key, size)
            self._commit(tmp, key)
            return Blob(key, size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def _put_chunks(self, chunks: AsyncIterable[bytes]) -> Blob:
        digest = hashlib.sha256()
        size = 0
        tmp, out = await asyncio.to_thread(self._temp_file)
        try:
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= CHUNK_SIZE:  # one thread hop per ~chunk, not per tiny piece
                    await asyncio.to_thread(out.write, b"".join(pending))
                    pending, pending_size = [], 0
            if pending:
                await asyncio.to_thread(out.write, b"".join(pending))
            await asyncio.to_thread(out.close)
            key = digest.hexdigest()
            await asyncio.to_thread(self._commit, tmp, key)
            return Blob(key, size)
        except BaseException:
            out.close()
            tmp.unlink(missing_ok=True)
            raise

    async def put(self, source: BlobSource, *, move: bool = False) -> Blob:
        if isinstance(source, bytes | bytearray | memoryview):
            return await asyncio.to_thread(self._put_bytes, source)
        if isinstance(source, Path):
            return await asyncio.to_thread(self._put_file, source, move)
        return await self._put_chunks(source)

    # --- reading ---------------------------------------------------------------------------------
    def _open(self, key: str, start: int) -> BinaryIO:
        try:
            f = open(self.path(key), "rb")  # noqa: SIM115  (closed by open()'s generator)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        if start:
            f.seek(start)
        return f

    async def open(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}..{end}")
        f = await asyncio.to_thread(self._open, key, start)
        try:
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = await asyncio.to_thread(f.read, want)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.shield(asyncio.to_thread(f.close))

    async def size(self, key: str) -> int:
        try:
            return (await asyncio.to_thread(os.stat, self.path(key))).st_size
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).exists)

    def _delete(self, key: str, written_before: float | None) -> bool:
        path = self.path(key)
        try:
            if written_before is not None and path.stat().st_mtime >= written_before:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        for parent in (path.parent, path.parent.parent):  # tidy empty fan-out directories
            with contextlib.suppress(OSError):
                parent.rmdir()
        return True

    async def delete(self, key: str, *, written_before: float | None = None) -> bool:
        return await asyncio.to_thread(self._delete, key, written_before)

    async def sweep_temporaries(self, older_than_s: float = 3600.0) -> int:
        return await asyncio.to_thread(self.remove_stale_temporaries, older_than_s)

    def describe(self) -> str:
        return f"file://{self.root.resolve()}"

    def remove_stale_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Temporary files left by a process killed mid-write. Blocking: call in a thread."""
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self._tmp.glob("*.part") if self._tmp.exists() else ():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
