"""The blob store and stored files: content-addressed blobs (on disk, and in S3 on moto's server),
`StoredFile` rows, and `GET /api/v1/files/{id}` (ownership, ranges, ETag, Content-Disposition,
expiry, streaming). Every test that stores runs on both stores."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from alembic.script import ScriptDirectory
from litestar import Request, post

from api.app import create_app
from api.files import file_buffer, file_fields, file_url, serve_file, wants_raw
from api.state import services
from storage.blobs import CHUNK_SIZE, BlobNotFound, BlobStore, LocalBlobStore, open_blob_store
from storage.db import Database
from storage.files import Files, is_file_id
from storage.keys import utcnow
from storage.migrate import alembic_config
from storage.models import StoredFile
from switchyard.settings import Settings
from tests.conftest import Gateway, admin_headers, app_lifespan, both_blob_stores, eventually, make_settings
from workers.files import SWEEP_LOCK, sweep_expired_files


@pytest.fixture(params=["file", "s3"])
def blob_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Every test of this module on both stores."""
    return both_blob_stores(request)


@pytest.fixture
def store(blob_env: dict[str, str], tmp_path: Path) -> BlobStore:
    """A blob store of its own: under the test's directory, or in the test's bucket."""
    return open_blob_store(make_settings({"SWITCHYARD_DATA_DIR": str(tmp_path)} | blob_env))


def is_local(files: Files) -> bool:
    return isinstance(files.blobs, LocalBlobStore)


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.fixture
async def files(gw: Gateway) -> AsyncIterator[Files]:
    """The same Files a worker gets in its ctx: same database, same blob directory as the app."""
    db = Database(gw.settings.database_url_or_default)
    yield Files.from_settings(gw.settings, db)
    await db.dispose()


async def new_key(gw: Gateway, name: str) -> tuple[str, str]:
    """A key's secret and its id."""
    response = await gw.client.post("/api/keys", json={"name": name}, headers=admin_headers())
    assert response.status_code == 201, response.text
    body = response.json()
    return body["key"], body["id"]


def blob_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp"]


# --- the blob store ------------------------------------------------------------------------------
async def test_blob_store_is_content_addressed_whatever_the_source(tmp_path: Path, store: BlobStore) -> None:
    data = os.urandom(700_000)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "source.bin"
    source.write_bytes(data)

    from_bytes = await store.put(data)
    from_path = await store.put(source)
    from_chunks = await store.put(chunks_of(data, 70_001))
    assert from_bytes.key == from_path.key == from_chunks.key == digest
    assert from_bytes.size == from_chunks.size == len(data)
    assert source.exists()  # copied, not moved
    if isinstance(store, LocalBlobStore):
        assert blob_files(store.root) == [store.root / digest[:2] / digest[2:4] / digest]
        assert list((store.root / "tmp").iterdir()) == []  # no temporary left behind
    else:
        assert await store.sweep_temporaries(older_than_s=-10) == 0  # no temporary left behind

    assert await store.exists(digest) and await store.size(digest) == len(data)
    assert await store.read(digest) == data
    assert await store.read(digest, 1000, 1010) == data[1000:1010]
    assert await store.read(digest, len(data) - 5) == data[-5:]
    chunks = [c async for c in store.open(digest, chunk_size=CHUNK_SIZE)]
    assert len(chunks) == 3 and all(len(c) <= CHUNK_SIZE for c in chunks)

    moved = tmp_path / "moved.bin"
    moved.write_bytes(b"move me in")
    blob = await store.put(moved, move=True)
    assert not moved.exists() and await store.read(blob.key) == b"move me in"

    assert await store.delete(digest) is True
    assert await store.delete(digest) is False
    assert not await store.exists(digest)
    if isinstance(store, LocalBlobStore):
        assert not (store.root / digest[:2] / digest[2:4]).exists()  # emptied fan-out dirs removed
    with pytest.raises(BlobNotFound):
        await store.size(digest)
    with pytest.raises(BlobNotFound):
        await store.read(digest)
    with pytest.raises(ValueError):
        await store.exists("../../etc/passwd")
    assert await store.read((await store.put(b"")).key) == b""


async def test_a_blob_stored_again_is_kept_by_a_sweep_that_started_before(store: BlobStore) -> None:
    blob = await store.put(b"shared")
    if isinstance(store, LocalBlobStore):
        old = time.time() - 120
        os.utime(store.path(blob.key), (old, old))
        sweep_started = time.time() - 60
    else:  # an object's time cannot be set back: the sweep started just after the first write
        await asyncio.sleep(2.1)  # S3 keeps the time to the second
        sweep_started = time.time()
        assert await store.delete(blob.key, written_before=sweep_started - 2.05) is False
    await store.put(b"shared")  # a concurrent store of the same content refreshes it
    assert await store.delete(blob.key, written_before=sweep_started) is False
    assert await store.exists(blob.key)
    assert await store.delete(blob.key, written_before=time.time() + 2) is True


async def test_a_failed_chunked_write_leaves_nothing(store: BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 300_000
        raise OSError("upstream went away")

    with pytest.raises(OSError, match="went away"):
        await store.put(broken())
    if isinstance(store, LocalBlobStore):
        assert blob_files(store.root) == []
        assert list((store.root / "tmp").iterdir()) == []
    else:
        assert await store.sweep_temporaries(older_than_s=-10) == 0
        assert not await store.exists(hashlib.sha256(b"x" * 300_000).hexdigest())


# --- the route -----------------------------------------------------------------------------------
async def test_owner_reads_others_get_404_admin_reads_all(gw: Gateway, files: Files) -> None:
    alice, alice_id = await new_key(gw, "alice")
    bob, _ = await new_key(gw, "bob")
    data = b"hello, file\n" * 100
    stored = await files.store(
        data, mime="text/plain", filename="hello.txt", owner_key_id=alice_id, job_id="j1", kind="media"
    )
    assert is_file_id(stored.id) and stored.size == len(data)
    assert stored.blob_key == hashlib.sha256(data).hexdigest()
    assert stored.expires_at is not None
    ttl = stored.expires_at - stored.created_at
    assert ttl == timedelta(seconds=gw.settings.file_ttl_s)

    url = f"/api/v1/files/{stored.id}"
    response = await gw.client.get(url, headers={"X-API-Key": alice})
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == f'"{stored.blob_key}"'
    assert response.headers["content-disposition"] == 'inline; filename="hello.txt"'
    assert response.headers["x-content-type-options"] == "nosniff"

    bearer = await gw.client.get(url, headers={"Authorization": f"Bearer {alice}"})
    assert bearer.status_code == 200 and bearer.content == data

    other = await gw.client.get(url, headers={"X-API-Key": bob})
    assert other.status_code == 404
    assert other.json()["success"] is False
    missing = await gw.client.get("/api/v1/files/file_" + "A" * 24, headers={"X-API-Key": bob})
    assert missing.status_code == 404
    assert other.json()["message"].replace(stored.id, "ID") == missing.json()["message"].replace(
        "file_" + "A" * 24, "ID"
    )  # nothing tells another key's file from a missing one

    admin = await gw.client.get(url, headers=admin_headers())
    assert admin.status_code == 200 and admin.content == data
    assert (await gw.client.get(url)).status_code == 401
    assert (await gw.client.get(url, headers={"X-API-Key": "ck_" + "0" * 32})).status_code == 401

    download = await gw.client.get(url, params={"download": "1"}, headers={"X-API-Key": alice})
    assert download.headers["content-disposition"] == 'attachment; filename="hello.txt"'

    # An admin-owned file (no owner key): only the admin reads it.
    own = await files.store(b"admin only", mime="application/octet-stream", filename="a.bin")
    assert (await gw.client.get(f"/api/v1/files/{own.id}", headers={"X-API-Key": alice})).status_code == 404
    assert (await gw.client.get(f"/api/v1/files/{own.id}", headers=admin_headers())).content == b"admin only"


@pytest.mark.parametrize(
    "file_id", ["nope", "file_short", "file_" + "A" * 25, "file_" + "A" * 23 + "!", "FILE_" + "A" * 24]
)
async def test_ids_of_the_wrong_shape_are_not_found(gw: Gateway, key: str, file_id: str) -> None:
    response = await gw.client.get(f"/api/v1/files/{file_id}", headers={"X-API-Key": key})
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False and body["error"] == "Not Found"


async def test_ranges(gw: Gateway, files: Files) -> None:
    secret, key_id = await new_key(gw, "ranges")
    data = bytes(range(256)) * 40  # 10,240 bytes
    stored = await files.store(data, mime="audio/mpeg", filename="a.mp3", owner_key_id=key_id)
    url = f"/api/v1/files/{stored.id}"
    size = len(data)

    async def get(range_header: str | None, **extra: str) -> Any:
        headers = {"X-API-Key": secret, **extra}
        if range_header is not None:
            headers["Range"] = range_header
        return await gw.client.get(url, headers=headers)

    for header, (start, end) in {
        "bytes=10-19": (10, 20),
        "bytes=0-0": (0, 1),
        "bytes=10000-": (10000, size),
        "bytes=-100": (size - 100, size),
        "bytes=-99999": (0, size),  # a suffix longer than the file: all of it
        "bytes=10200-99999": (10200, size),  # a last byte past the end is clamped
    }.items():
        response = await get(header)
        assert response.status_code == 206, (header, response.text)
        assert response.content == data[start:end], header
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        assert response.headers["content-length"] == str(end - start)
        assert response.headers["content-type"] == "audio/mpeg"

    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        response = await get(header)
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}"
        assert response.json()["success"] is False

    # Malformed, another unit, several ranges, reversed: ignored, the whole file (RFC 9110).
    for header in ("bytes=abc", "items=0-5", "bytes=0-1,5-6", "bytes=20-10", "bytes=-", "garbage"):
        response = await get(header)
        assert response.status_code == 200, header
        assert response.content == data
        assert "content-range" not in response.headers

    # If-Range: the range only while the file is the one the client has.
    etag = f'"{stored.blob_key}"'
    assert (await get("bytes=0-9", **{"If-Range": etag})).status_code == 206
    stale = await get("bytes=0-9", **{"If-Range": '"something-else"'})
    assert stale.status_code == 200 and stale.content == data

    # If-None-Match: 304 with no body.
    not_modified = await get(None, **{"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    changed = await get(None, **{"If-None-Match": '"other"'})
    assert changed.status_code == 200 and changed.content == data


async def test_content_disposition_names_non_ascii_files_and_never_inlines_html(
    gw: Gateway, files: Files
) -> None:
    secret, key_id = await new_key(gw, "names")
    music = await files.store(
        b"ID3...", mime="audio/mpeg", filename='Canção ☕ "live".mp3', owner_key_id=key_id
    )
    response = await gw.client.get(f"/api/v1/files/{music.id}", headers={"X-API-Key": secret})
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        'inline; filename="Cancao _ _live_.mp3"; '
        "filename*=UTF-8''Can%C3%A7%C3%A3o%20%E2%98%95%20%22live%22.mp3"
    )
    page = await files.store(
        b"<script>alert(1)</script>", mime="text/html", filename="x.html", owner_key_id=key_id
    )
    response = await gw.client.get(f"/api/v1/files/{page.id}", headers={"X-API-Key": secret})
    assert response.headers["content-disposition"] == 'attachment; filename="x.html"'

    sneaky = await files.store(b"..", mime="text/plain", filename="../../etc/\x00passwd", owner_key_id=key_id)
    assert "/" not in sneaky.filename and "\x00" not in sneaky.filename


async def test_a_large_file_is_streamed_in_chunks(gw: Gateway, files: Files) -> None:
    secret, key_id = await new_key(gw, "large")
    data = os.urandom(5 * 1024 * 1024 + 123)
    stored = await files.store(
        chunks_of(data, 64 * 1024), mime="video/mp4", filename="big.mp4", owner_key_id=key_id
    )
    assert stored.size == len(data)

    # The app itself, with its ASGI body messages recorded: httpx's ASGI transport joins them.
    app = create_app(gw.settings)
    sizes: list[int] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def record(message: Any) -> None:
            if message["type"] == "http.response.body":
                sizes.append(len(message.get("body", b"")))
            await send(message)

        await app(scope, receive, record)

    async with (
        app_lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=recording), base_url="http://t") as client,
    ):
        response = await client.get(f"/api/v1/files/{stored.id}", headers={"X-API-Key": secret})
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(data))
    assert hashlib.sha256(response.content).hexdigest() == stored.blob_key == hashlib.sha256(data).hexdigest()
    assert len(sizes) >= 20 and max(sizes) <= CHUNK_SIZE  # sent in chunks, never as one body

    tail = await gw.client.get(
        f"/api/v1/files/{stored.id}", headers={"X-API-Key": secret, "Range": "bytes=5000000-"}
    )
    assert tail.status_code == 206 and tail.content == data[5_000_000:]


async def test_expired_files_are_gone_and_the_sweep_keeps_shared_blobs(gw: Gateway, files: Files) -> None:
    secret, key_id = await new_key(gw, "expiry")
    files.blob_grace_s = 0 if is_local(files) else -2.0  # this test's blobs are all fresh (S3: to the second)
    shared = b"the same bytes twice"
    short = await files.store(
        shared, mime="text/plain", filename="a.txt", owner_key_id=key_id, expires_in_s=60
    )
    keeps = await files.store(
        shared, mime="text/plain", filename="b.txt", owner_key_id=key_id, expires_in_s=None
    )
    alone = await files.store(
        b"only mine", mime="text/plain", filename="c.txt", owner_key_id=key_id, expires_in_s=60
    )
    assert short.blob_key == keeps.blob_key != alone.blob_key
    assert keeps.expires_at is None

    assert await files.delete_expired() == 0
    later = utcnow() + timedelta(seconds=61)
    assert await files.delete_expired(later) == 2
    assert await files.delete_expired(later) == 0
    assert await files.get(short.id, include_expired=True) is None
    assert await files.get(alone.id, include_expired=True) is None
    assert await files.get(keeps.id) is not None
    assert await files.blobs.exists(keeps.blob_key)  # still referenced by b.txt
    assert not await files.blobs.exists(alone.blob_key)
    response = await gw.client.get(f"/api/v1/files/{keeps.id}", headers={"X-API-Key": secret})
    assert response.status_code == 200 and response.content == shared

    # Expired but not yet swept: already not served.
    soon = await files.store(
        b"brief", mime="text/plain", filename="d.txt", owner_key_id=key_id, expires_in_s=0.05
    )
    await asyncio.sleep(0.1)
    response = await gw.client.get(f"/api/v1/files/{soon.id}", headers={"X-API-Key": secret})
    assert response.status_code == 404
    assert "expired" in response.json()["message"]
    assert await files.get(soon.id) is None

    assert await files.delete(keeps.id) is True
    assert not await files.blobs.exists(keeps.blob_key)
    assert await files.count() == 1  # only the expired, unswept d.txt


async def test_a_missing_blob_is_a_404_not_a_broken_stream(gw: Gateway, files: Files) -> None:
    secret, key_id = await new_key(gw, "lost")
    stored = await files.store(b"soon lost", mime="text/plain", filename="l.txt", owner_key_id=key_id)
    await files.blobs.delete(stored.blob_key)
    response = await gw.client.get(f"/api/v1/files/{stored.id}", headers={"X-API-Key": secret})
    assert response.status_code == 404
    assert "no longer available" in response.json()["message"]


async def test_stored_file_rows_round_trip(gw: Gateway, files: Files) -> None:
    stored = await files.store(
        b"img", mime="image/png", filename="i.png", owner_key_id="key_x", job_id="job-1", kind="image"
    )
    got = await files.get(stored.id)
    assert isinstance(got, StoredFile)
    assert (got.mime_type, got.size, got.filename, got.owner_key_id, got.job_id, got.kind) == (
        "image/png", 3, "i.png", "key_x", "job-1", "image"
    )  # fmt: skip
    assert got.created_at == stored.created_at and got.expires_at == stored.expires_at


def test_migrations_have_a_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///:memory:"))
    assert len(script.get_heads()) == 1


async def test_head_answers_the_headers_without_the_body(gw: Gateway, files: Files) -> None:
    secret, key_id = await new_key(gw, "head")
    stored = await files.store(b"0123456789", mime="video/mp4", filename="v.mp4", owner_key_id=key_id)
    url = f"/api/v1/files/{stored.id}"
    response = await gw.client.head(url, headers={"X-API-Key": secret})
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == "10"
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    part = await gw.client.head(url, headers={"X-API-Key": secret, "Range": "bytes=2-4"})
    assert part.status_code == 206 and part.headers["content-range"] == "bytes 2-4/10"
    assert part.headers["content-length"] == "3"
    other, _ = await new_key(gw, "other")
    assert (await gw.client.head(url, headers={"X-API-Key": other})).status_code == 404


# --- the expiry sweep ----------------------------------------------------------------------------
def age_blob(files: Files, blob_key: str, seconds: float = 3600) -> None:
    """As if the blob had been written a while ago (the sweep keeps blobs written just now).
    An object's time cannot be set back: in S3, this Files' sweep takes "now" for "long ago"."""
    if not isinstance(files.blobs, LocalBlobStore):
        files.blob_grace_s = -2.0  # S3 keeps the time to the second; the sweep gives a second
        return
    then = time.time() - seconds
    os.utime(files.blobs.path(blob_key), (then, then))


async def test_one_process_sweeps_per_period(gw: Gateway, files: Files) -> None:
    expired = await files.store(b"old news", mime="text/plain", filename="o.txt", expires_in_s=0.01)
    age_blob(files, expired.blob_key)
    await asyncio.sleep(0.05)
    redis = aioredis.Redis.from_url(gw.settings.redis_url or "")
    try:
        ctx: dict[str, Any] = {"settings": gw.settings, "files": files, "redis": redis}
        other: dict[str, Any] = {**ctx}  # another worker process
        assert await sweep_expired_files(ctx) == 1
        assert await sweep_expired_files(other) is None  # this period is taken
        assert await sweep_expired_files(ctx) is None
        ttl = await redis.pttl(SWEEP_LOCK)
        assert 0 < ttl <= gw.settings.file_cleanup_interval_s * 1000
    finally:
        await redis.aclose()
    assert await files.get(expired.id, include_expired=True) is None
    assert not await files.blobs.exists(expired.blob_key)


@pytest.mark.settings(SWITCHYARD_FILE_CLEANUP_INTERVAL_S="0.2")
async def test_workers_remove_expired_files_periodically(gw: Gateway, files: Files) -> None:
    gw.start_worker()
    gw.start_worker("batch")
    kept = await files.store(b"kept", mime="text/plain", filename="k.txt", expires_in_s=None)
    for round_ in range(2):  # the sweep runs again each period, not just once at startup
        expired = await files.store(
            f"gone {round_}".encode(), mime="text/plain", filename="g.txt", expires_in_s=0.01
        )
        age_blob(files, expired.blob_key)

        async def swept(file: StoredFile = expired) -> bool:
            return await files.get(file.id, include_expired=True) is None

        await eventually(swept, timeout=10, what="the expired file to be swept")
        if not is_local(files):  # the workers' sweep keeps blobs written within a minute
            continue
        await eventually(
            lambda file=expired: _gone(files, file.blob_key), timeout=5, what="its blob to be removed"
        )
    assert await files.get(kept.id) is not None


async def _gone(files: Files, blob_key: str) -> bool:
    return not await files.blobs.exists(blob_key)


# --- files in API responses ----------------------------------------------------------------------
@post("/test/media", status_code=200)
async def media_like_route(request: Request) -> Any:
    """What a route that returns a file does (media, images): JSON with url and buffer, or the
    file itself."""
    data = await request.json()
    svc = services(request)
    file = await svc.files.get_for(data["file_id"], None, is_admin=True)
    if wants_raw(request, file.mime_type, data.get("direct")):
        return await serve_file(request, svc.files, file)
    return {"success": True, "data": await file_fields(request, file)}


@contextlib.asynccontextmanager
async def probe_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    app.register(media_like_route)
    async with (
        app_lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test:8080/"
        ) as client,
    ):
        yield client


async def test_file_fields_give_url_and_buffer_or_the_raw_file(gw: Gateway, files: Files) -> None:
    data = b"\xff\xfb" + os.urandom(5000)
    stored = await files.store(data, mime="audio/mpeg", filename="song.mp3")

    async with probe_app(gw.settings) as client:
        body = (await client.post("/test/media", json={"file_id": stored.id})).json()["data"]
        # The settings' listening address, not the Host the client sent (gateway.test:8080).
        assert body["url"] == f"http://127.0.0.1:8000/api/v1/files/{stored.id}"
        assert base64.b64decode(body["buffer"]) == data
        assert (body["file_id"], body["filename"], body["mime_type"], body["size"]) == (
            stored.id, "song.mp3", "audio/mpeg", len(data)
        )  # fmt: skip
        assert body["expires_at"].endswith("Z")

        for ask in (
            {"json": {"direct": True}},
            {"headers": {"Accept": "audio/mpeg"}},
            {"headers": {"Accept": "audio/*"}},
        ):
            extra = ask.get("json", {})
            response = await client.post(
                "/test/media", json={"file_id": stored.id, **extra}, headers=ask.get("headers", {})
            )
            assert response.status_code == 200, ask
            assert response.content == data, ask
            assert response.headers["content-type"] == "audio/mpeg"
            assert response.headers["content-disposition"] == 'inline; filename="song.mp3"'

        for accept in ("*/*", "application/json", "audio/mpeg;q=0, application/json", "video/mp4"):
            response = await client.post(
                "/test/media", json={"file_id": stored.id}, headers={"Accept": accept}
            )
            assert response.headers["content-type"].startswith("application/json"), accept

    public = gw.settings.model_copy(
        update={"public_url": "https://files.example.com/sy/", "file_buffer_max_bytes": 100}
    )
    async with probe_app(public) as client:
        body = (await client.post("/test/media", json={"file_id": stored.id})).json()["data"]
        assert body["url"] == f"https://files.example.com/sy/api/v1/files/{stored.id}"
        assert body["buffer"] is None  # larger than the bound: by url only
    assert file_url(public, stored.id) == f"https://files.example.com/sy/api/v1/files/{stored.id}"
    assert file_url(gw.settings, stored.id) == f"http://127.0.0.1:8000/api/v1/files/{stored.id}"
    assert await file_buffer(files, stored, len(data)) == base64.b64encode(data).decode()
    assert await file_buffer(files, stored, len(data) - 1) is None
