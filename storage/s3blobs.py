"""Blobs in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph...), through `obstore`.

Objects are `<prefix>/<sha256>`; an upload from chunks goes first to `<prefix>/tmp/<random>`
(its name is known only once the last chunk is hashed), then is copied into place by the
server and the temporary removed. Bytes stream both ways: uploads are multipart (parts of
`PART_SIZE`, at most `UPLOAD_CONCURRENCY` in flight), reads are ranged GETs read as they arrive.
No call blocks the event loop: obstore runs its requests on its own threads.

An object's last-modified time is its last-written time: storing content that is already
there writes it again, which is what keeps it from a concurrent expiry sweep
(`delete(written_before=...)`). S3 gives that time to the second, so the sweep is given a
second of doubt in the blob's favour.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from storage.blobs import (
    CHUNK_SIZE,
    Blob,
    BlobNotFound,
    BlobSource,
    BlobStore,
    BlobStoreUnavailable,
    _check_key,
)

if TYPE_CHECKING:
    from switchyard.settings import Settings

PART_SIZE = 5 * 1024 * 1024  # S3's smallest part (but the last)
UPLOAD_CONCURRENCY = 2  # parts in flight per upload: what one upload holds in memory, about
HASH_IN_THREAD_BYTES = 1024 * 1024
TMP = "tmp/"
# What obstore raises when a call fails (a missing object is a FileNotFoundError, caught first).
_FAILED = (BaseError, OSError, RuntimeError, ValueError)


def _unavailable(exc: Exception) -> BlobStoreUnavailable:
    return BlobStoreUnavailable(f"the blob store failed: {exc.__class__.__name__}: {str(exc)[:300]}")


class S3BlobStore(BlobStore):
    def __init__(self, store: S3Store, *, bucket: str, prefix: str, endpoint: str | None) -> None:
        self.store = store
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint

    @classmethod
    def from_settings(cls, bucket: str, prefix: str, settings: Settings) -> S3BlobStore:
        config: dict[str, Any] = {"region": settings.s3_region}
        if settings.s3_endpoint_url:
            config["endpoint"] = settings.s3_endpoint_url
        if settings.s3_access_key_id:
            config["access_key_id"] = settings.s3_access_key_id
        if settings.s3_secret_access_key:
            config["secret_access_key"] = settings.s3_secret_access_key
        client: dict[str, Any] = {
            "allow_http": bool(settings.s3_endpoint_url and settings.s3_endpoint_url.startswith("http://")),
            "connect_timeout": timedelta(seconds=min(5.0, settings.dependency_timeout_s)),
            "read_timeout": timedelta(seconds=60),  # a stalled connection, not a slow reader
            "timeout": timedelta(hours=6),  # a whole request: a large file to a slow client
        }
        retry: dict[str, Any] = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}
        store = S3Store(
            bucket,
            prefix=prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=client,  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
        )
        return cls(store, bucket=bucket, prefix=prefix, endpoint=settings.s3_endpoint_url)

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    # --- writing ---------------------------------------------------------------------------------
    async def _upload(self, path: str, source: Any) -> None:
        try:
            await obstore.put_async(
                self.store, path, source, chunk_size=PART_SIZE, max_concurrency=UPLOAD_CONCURRENCY
            )
        except _FAILED as exc:
            raise _unavailable(exc) from exc

    async def put(self, source: BlobSource, *, move: bool = False) -> Blob:
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            if len(data) > HASH_IN_THREAD_BYTES:
                key = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
            else:
                key = hashlib.sha256(data).hexdigest()
            await self._upload(key, data)
            return Blob(key, len(data))
        if isinstance(source, Path):
            key, size = await asyncio.to_thread(_hash_file, source)
            await self._upload(key, source)
            if move:
                await asyncio.to_thread(source.unlink, True)
            return Blob(key, size)
        return await self._put_chunks(source)

    async def _put_chunks(self, chunks: AsyncIterable[bytes]) -> Blob:
        digest = hashlib.sha256()
        size = 0
        source_failed: list[BaseException] = []

        async def hashed() -> AsyncIterator[bytes]:
            nonlocal size
            try:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk
            except BaseException as exc:
                source_failed.append(exc)
                raise

        tmp = f"{TMP}{secrets.token_hex(8)}.part"
        try:
            try:
                await self._upload(tmp, hashed())
            except BlobStoreUnavailable:
                if source_failed:  # the source's own failure, not the store's
                    raise source_failed[0] from None
                raise
            key = digest.hexdigest()
            try:
                await obstore.copy_async(self.store, tmp, key)
            except _FAILED as exc:
                raise _unavailable(exc) from exc
        finally:
            await asyncio.shield(self._delete_quietly(tmp))
        return Blob(key, size)

    async def _delete_quietly(self, path: str) -> None:
        try:
            await obstore.delete_async(self.store, path)
        except Exception:  # noqa: BLE001 (a leftover temporary is swept later)
            pass

    # --- reading ---------------------------------------------------------------------------------
    async def _head(self, key: str) -> Any:
        _check_key(key)
        try:
            return await obstore.head_async(self.store, key)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except _FAILED as exc:
            raise _unavailable(exc) from exc

    async def open(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}..{end}")
        _check_key(key)
        if end == start:  # nothing to read, but a missing blob is still missing
            await self._head(key)
            return
        if start:
            size = (await self._head(key))["size"]
            if start >= size:
                return
        options: dict[str, Any] = {"range": (start, end) if end is not None else {"offset": start}}
        if not start and end is None:
            options = {}
        try:
            result = await obstore.get_async(self.store, key, options=options)  # type: ignore[arg-type]
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except _FAILED as exc:
            raise _unavailable(exc) from exc
        pending = bytearray()  # what arrived, cut into chunks of exactly `chunk_size`
        try:
            async for piece in result.stream(min_chunk_size=min(chunk_size, 64 * 1024)):
                pending += memoryview(piece)
                while len(pending) >= chunk_size:
                    yield bytes(pending[:chunk_size])
                    del pending[:chunk_size]
        except _FAILED as exc:
            raise _unavailable(exc) from exc
        if pending:
            yield bytes(pending)

    async def size(self, key: str) -> int:
        return int((await self._head(key))["size"])

    async def exists(self, key: str) -> bool:
        try:
            await self._head(key)
        except BlobNotFound:
            return False
        return True

    async def delete(self, key: str, *, written_before: float | None = None) -> bool:
        try:
            meta = await self._head(key)
        except BlobNotFound:
            return False
        # Last-modified is to the second: a blob written within the second before the cut is kept.
        if written_before is not None and meta["last_modified"].timestamp() + 1 >= written_before:
            return False
        try:
            await obstore.delete_async(self.store, key)
        except _FAILED as exc:
            raise _unavailable(exc) from exc
        return True

    async def presigned_url(self, key: str, expires_in_s: float) -> str | None:
        _check_key(key)
        try:
            return await obstore.sign_async(self.store, "GET", key, timedelta(seconds=expires_in_s))
        except _FAILED as exc:
            raise _unavailable(exc) from exc

    async def sweep_temporaries(self, older_than_s: float = 3600.0) -> int:
        cutoff = time.time() - older_than_s
        stale: list[str] = []
        try:
            async for batch in obstore.list(self.store, TMP, chunk_size=1000):
                stale += [m["path"] for m in batch if m["last_modified"].timestamp() < cutoff]
        except _FAILED as exc:
            raise _unavailable(exc) from exc
        for path in stale:
            await self._delete_quietly(path)
        return len(stale)


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
