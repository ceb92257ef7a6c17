"""The S3 blob store on a real S3 HTTP server (moto's, on loopback): large files stream in and
out without being held whole, presigned downloads, a store that is down, and the bug of issue 16:
a web process with a data directory of its own serving a file another machine's worker wrote."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage.blobs import BlobStoreUnavailable, open_blob_store
from storage.db import Database
from storage.files import Files
from storage.s3blobs import PART_SIZE, UPLOAD_CONCURRENCY, S3BlobStore
from switchyard.standin import StandIn
from switchyard.standin_images import ImageStandIn
from tests.conftest import (
    Gateway,
    admin_headers,
    both_blob_stores,
    make_settings,
    process_env,
    write_providers,
)

MB = 1024 * 1024


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """About the blob store, not the database kind: SQLite only."""
    return sqlite_url


@pytest.fixture
def blob_env(request: pytest.FixtureRequest, s3_env: dict[str, str]) -> dict[str, str]:
    """S3, unless the test is parametrized over both stores."""
    return both_blob_stores(request) if hasattr(request, "param") else s3_env


@pytest.fixture
def store(s3_env: dict[str, str], tmp_path: Path) -> S3BlobStore:
    s = open_blob_store(make_settings({"SWITCHYARD_DATA_DIR": str(tmp_path)} | s3_env))
    assert isinstance(s, S3BlobStore)
    return s


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The highest resident size of this process while the block runs, sampled every ms."""

    def __init__(self) -> None:
        self.start = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.start = self.peak = _rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


async def random_chunks(total: int, digest: Any, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        chunk = os.urandom(min(size, total - sent))
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


async def test_a_20_mb_file_streams_in_and_out_without_being_held_whole(store: S3BlobStore) -> None:
    total = 20 * MB
    await store.put(b"warm up the client")  # its pool and runtime are not the upload's cost
    sent = hashlib.sha256()
    with PeakRss() as upload:
        blob = await store.put(random_chunks(total, sent))
    assert blob.key == sent.hexdigest() and blob.size == total
    # Parts in flight, not the file: 20 MB held whole would grow the process by 20 MB or more.
    assert upload.growth < PART_SIZE * (UPLOAD_CONCURRENCY + 1), upload.growth

    received = hashlib.sha256()
    chunks = 0
    with PeakRss() as download:
        async for chunk in store.open(blob.key):
            received.update(chunk)
            chunks += 1
    assert received.hexdigest() == blob.key
    print(f"20 MB: peak RSS growth {upload.growth / MB:.1f} MB up, {download.growth / MB:.1f} MB down")
    assert chunks >= total // (256 * 1024)
    assert download.growth < 8 * MB, download.growth

    tail = await store.read(blob.key, total - 1000)  # a ranged GET, not the file
    assert len(tail) == 1000
    assert await store.read(blob.key, 5, 15) == (await store.read(blob.key))[5:15]


async def test_an_upload_cut_short_leaves_no_object(store: S3BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(6 * MB)  # a part is uploaded before the source fails
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        await store.put(broken())
    assert await store.sweep_temporaries(older_than_s=-10) == 0


@pytest.mark.settings(SWITCHYARD_FILE_URLS="presigned")
async def test_presigned_mode_redirects_downloads_to_the_object_store(gw: Gateway, key: str) -> None:
    key_id = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"][0]["id"]
    db = Database(gw.settings.database_url_or_default)
    try:
        files = Files.from_settings(gw.settings, db)
        data = os.urandom(300_000)
        stored = await files.store(data, mime="audio/mpeg", filename="a.mp3", owner_key_id=key_id)
    finally:
        await db.dispose()
    url = f"/api/v1/files/{stored.id}"
    response = await gw.client.get(url, headers={"X-API-Key": key})
    assert response.status_code == 307, response.text
    location = response.headers["location"]
    assert location.startswith(gw.settings.s3_endpoint_url or "") and "X-Amz-Signature=" in location
    async with httpx.AsyncClient() as outside:  # the client, straight to the object store
        whole = await outside.get(location)
        assert whole.status_code == 200 and whole.content == data
        part = await outside.get(location, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
    # Still the gateway's to refuse: another key gets a 404, not a URL.
    other = await gw.create_key("other")
    assert (await gw.client.get(url, headers={"X-API-Key": other})).status_code == 404


async def test_a_blob_store_that_is_down_is_a_503_in_time(gw: Gateway, key: str, tmp_path: Path) -> None:
    key_id = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"][0]["id"]
    db = Database(gw.settings.database_url_or_default)
    try:
        files = Files.from_settings(gw.settings, db)
        stored = await files.store(b"here", mime="text/plain", filename="h.txt", owner_key_id=key_id)
        files.blobs = open_blob_store(
            gw.settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9"})
        )
        with pytest.raises(BlobStoreUnavailable):
            await files.read(stored)
    finally:
        await db.dispose()
    svc = gw.client._transport.app.state.services  # type: ignore[attr-defined]
    svc.files.blobs = files.blobs  # the web's store is out of reach now
    started = asyncio.get_running_loop().time()
    response = await gw.client.get(f"/api/v1/files/{stored.id}", headers={"X-API-Key": key})
    assert response.status_code == 503, response.text
    assert "blob store" in response.json()["message"]
    assert asyncio.get_running_loop().time() - started < 10


# --- two machines ----------------------------------------------------------------------------------
@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn, pics: ImageStandIn) -> Path:
    return write_providers(
        tmp_path / "providers.toml",
        [
            {"name": "standin", "kind": "openai", "base_url": standin.base_url, "models": standin.models},
            {"name": "pics", "kind": "pollinations-image", "base_url": pics.base_url, "models": ["flux"]},
        ],
    )


@pytest.fixture
def worker_machine(env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """A worker process on "another machine": its own data directory (and working directory),
    the same Redis, database, providers and blob store settings as the web."""
    home = tmp_path / "machine-b"
    home.mkdir()
    worker_env = process_env(env) | {
        "SWITCHYARD_DATA_DIR": str(home / "data"),
        "SWITCHYARD_LOG_LEVEL": "WARNING",
    }
    log = open(home / "worker.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchyard.cli", "worker", "--queue", "interactive"],
        env=worker_env,
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield worker_env
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.mark.parametrize("blob_env", ["file", "s3"], indirect=True)
async def test_a_web_with_its_own_data_dir_serves_what_another_machine_s_worker_stored(
    gw: Gateway, key: str, worker_machine: dict[str, str], blob_env: dict[str, str]
) -> None:
    """Issue 16: with the file store, each machine's files are on its own disk, and the web
    answers 404 for a file the other machine's worker wrote; with S3 both see one store."""
    assert gw.settings.data_dir != Path(worker_machine["SWITCHYARD_DATA_DIR"])
    response = await gw.client.post(
        "/v1/images/generations",
        json={"model": "flux", "prompt": "a red square", "size": "256x256"},
        headers={"Authorization": f"Bearer {key}", "Prefer": "wait=30"},
    )
    assert response.status_code == 200, response.text
    path = httpx.URL(response.json()["data"][0]["url"]).path
    got = await gw.client.get(path, headers={"X-API-Key": key})
    if blob_env:
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "image/png" and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert got.status_code == 404  # the bug this store leaves in place
        assert "no longer available" in got.json()["message"]
