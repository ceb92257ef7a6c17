"""Media jobs end to end, offline: a short mp4 made with the bundled ffmpeg, served from loopback,
downloaded by the real yt-dlp pipeline (its generic extractor) on the media lane's worker."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import mutagen.mp3
import pytest
from redis import asyncio as redis

from jobs.media import MediaTarget, cache_key, media_target
from storage.result_cache import ResultCache
from switchyard.errors import InvalidRequest
from switchyard.media_standin import MediaServer
from tests.conftest import Gateway, admin_headers, eventually, get_job, wait_for_status
from workers.media.ytdlp import Limits, Progress, download, ffmpeg_exe, probe_duration

CLIP_SECONDS = 2.0


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """Media tests need a database only for job and file rows: SQLite is enough here."""
    return sqlite_url


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 2 s mp4 with H.264 video and AAC audio, made by the ffmpeg the imageio-ffmpeg wheel ships."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050",
            "-t", str(CLIP_SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "32k", "-shortest", "-movflags", "+faststart", str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture(scope="session")
def mute_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 1 s mp4 with video and no audio track."""
    path = tmp_path_factory.mktemp("clips") / "mute.mp4"
    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "1",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture
async def media(clip: bytes, mute_clip: bytes) -> AsyncIterator[MediaServer]:
    server = await MediaServer({"clip.mp4": clip, "mute.mp4": mute_clip}).start()
    yield server
    await server.stop()


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def fetch_file(gw: Gateway, key: str, url: str) -> httpx.Response:
    response = await gw.client.get(url, headers=h(key))
    assert response.status_code == 200, response.text
    return response


# --- downloads -----------------------------------------------------------------------------------
async def test_mp4_download_through_yt_dlp(gw: Gateway, key: str, media: MediaServer, tmp_path: Path) -> None:
    gw.start_worker("media", "media-batch")
    url = media.url("/media/clip.mp4")
    forged_host = {**h(key), "Host": "evil.example"}  # never the base of the file's URL
    response = await gw.client.post(
        "/api/v1/youtube/mp4", json={"url": url, "quality": "720p"}, headers=forged_host
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["cached"] is False
    assert body["timestamp"].endswith("Z")
    data = body["data"]
    assert data["title"] == "clip"
    assert data["duration"] == 2
    assert data["quality"] == "720p"
    assert data["filename"] == "clip-720p.mp4"
    assert data["source"] == "ytdlp"
    assert data["mime_type"] == "video/mp4"
    stored = await fetch_file(gw, key, data["url"])
    assert stored.headers["content-type"] == "video/mp4"
    assert stored.content[4:8] == b"ftyp"
    assert len(stored.content) == data["size"]
    out = tmp_path / "got.mp4"
    out.write_bytes(stored.content)
    assert probe_duration(out) == pytest.approx(CLIP_SECONDS, abs=0.2)

    assert base64.b64decode(data["buffer"]) == stored.content
    assert data["url"].startswith("http://127.0.0.1:8000/api/v1/files/file_")  # the listening address
    assert data["expires_at"].endswith("Z")

    # The polled job has the same result, with the file's link and without its bytes.
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["kind"] == "media_download" and job["status"] == "succeeded"
    polled = job["result"]["data"]
    assert "buffer" not in polled
    assert polled["url"] == f"/api/v1/files/{data['file_id']}"
    assert {k: v for k, v in polled.items() if k != "url"} == {
        k: v for k, v in data.items() if k not in ("url", "buffer", "expires_at")
    }
    # Nothing is left in the job's work directory.
    assert not any((gw.settings.data_dir / "tmp" / "media").glob("*/*"))


async def test_mp3_extraction_is_real_mp3_audio(gw: Gateway, key: str, media: MediaServer) -> None:
    gw.start_worker("media", "media-batch")
    response = await gw.client.post(
        "/api/v1/youtube/mp3", json={"url": media.url("/media/clip.mp4")}, headers=h(key)
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["filename"] == "clip.mp3" and data["quality"] == "mp3"  # 000's field, the default
    assert data["duration"] == 2
    stored = await fetch_file(gw, key, data["url"])
    assert stored.headers["content-type"] == "audio/mpeg"
    audio = mutagen.mp3.MP3(io.BytesIO(stored.content))
    assert audio.info.length == pytest.approx(CLIP_SECONDS, abs=0.15)
    assert audio.info.sample_rate in (22050, 44100, 48000)
    assert audio.info.bitrate > 0


async def test_mp3_of_a_video_without_sound_is_a_400_saying_so(
    gw: Gateway, key: str, media: MediaServer
) -> None:
    gw.start_worker("media", "media-batch")
    response = await gw.client.post(
        "/api/v1/youtube/mp3", json={"url": media.url("/media/mute.mp4")}, headers=h(key)
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert "no audio track" in body["message"]
    mp4 = await gw.client.post(
        "/api/v1/youtube/mp4", json={"url": media.url("/media/mute.mp4")}, headers=h(key)
    )
    assert mp4.status_code == 200, mp4.text  # the video itself is fine


async def test_direct_or_accept_answers_the_file_itself(gw: Gateway, key: str, media: MediaServer) -> None:
    gw.start_worker("media", "media-batch")
    url = media.url("/media/clip.mp4")
    direct = await gw.client.post("/api/v1/youtube/mp3", json={"url": url, "direct": True}, headers=h(key))
    assert direct.status_code == 200, direct.text
    assert direct.headers["content-type"] == "audio/mpeg"
    assert int(direct.headers["content-length"]) == len(direct.content)
    assert "clip.mp3" in direct.headers["content-disposition"]
    assert direct.headers["x-job-id"]
    assert mutagen.mp3.MP3(io.BytesIO(direct.content)).info.length == pytest.approx(CLIP_SECONDS, abs=0.15)

    accept = await gw.client.post(
        "/api/v1/youtube/mp4", json={"url": url}, headers={**h(key), "Accept": "video/mp4"}
    )
    assert accept.status_code == 200 and accept.headers["content-type"] == "video/mp4"
    assert accept.content[4:8] == b"ftyp"
    ranged = await gw.client.post(
        "/api/v1/youtube/mp4",
        json={"url": url},
        headers={**h(key), "Accept": "video/*", "Range": "bytes=0-7"},
    )
    assert ranged.status_code == 206 and ranged.content == accept.content[:8]
    # `*/*` is not a request for the file.
    json_answer = await gw.client.post(
        "/api/v1/youtube/mp4", json={"url": url}, headers={**h(key), "Accept": "*/*"}
    )
    assert json_answer.headers["content-type"].startswith("application/json")
    assert json_answer.json()["cached"] is True


@pytest.mark.settings(SWITCHYARD_FILE_BUFFER_MAX_BYTES=1000)
async def test_a_file_too_large_to_inline_is_offered_by_url(
    gw: Gateway, key: str, media: MediaServer
) -> None:
    gw.start_worker("media", "media-batch")
    response = await gw.client.post(
        "/api/v1/youtube/mp4", json={"url": media.url("/media/clip.mp4")}, headers=h(key)
    )
    data = response.json()["data"]
    assert data["buffer"] is None and data["size"] > 1000
    assert (await fetch_file(gw, key, data["url"])).content[4:8] == b"ftyp"


async def test_repeat_is_answered_from_the_cache_without_yt_dlp(
    gw: Gateway, key: str, media: MediaServer
) -> None:
    gw.start_worker("media", "media-batch")
    body = {"url": media.url("/media/clip.mp4"), "quality": "360p"}
    first = await gw.client.post("/api/v1/youtube/mp4", json=body, headers=h(key))
    assert first.status_code == 200, first.text
    fetched = media.hits["/media/clip.mp4"]
    assert fetched >= 1

    again = await gw.client.post("/api/v1/youtube/mp4", json=body, headers=h(key))
    assert again.status_code == 200, again.text
    assert again.json()["cached"] is True
    assert media.hits["/media/clip.mp4"] == fetched  # yt-dlp did not run again
    assert again.json()["data"]["file_id"] == first.json()["data"]["file_id"]

    # Another key gets the cached result as a file of its own (the first key's is not its).
    other = await gw.create_key("other")
    theirs = await gw.client.post("/api/v1/youtube/mp4", json=body, headers=h(other))
    assert theirs.status_code == 200 and theirs.json()["cached"] is True
    assert media.hits["/media/clip.mp4"] == fetched
    their_url = theirs.json()["data"]["url"]
    assert their_url != first.json()["data"]["url"]
    assert (await fetch_file(gw, other, their_url)).content == (
        await fetch_file(gw, key, first.json()["data"]["url"])
    ).content
    assert (await gw.client.get(first.json()["data"]["url"], headers=h(other))).status_code == 404

    # Another quality is another entry.
    other_quality = await gw.client.post(
        "/api/v1/youtube/mp4", json={**body, "quality": "1080p"}, headers=h(key)
    )
    assert other_quality.json()["cached"] is False

    stats = (await gw.client.get("/api/v1/youtube/cache/stats", headers=h(key))).json()["data"]
    assert stats["service"] == "youtube"
    assert (stats["hits"], stats["misses"], stats["entries"]) == (2, 2, 2)
    assert stats["hit_rate"] == 0.5
    assert stats["bytes"] > 2 * first.json()["data"]["size"]

    cleared = await gw.client.delete("/api/v1/youtube/cache", headers=admin_headers())
    assert cleared.status_code == 200 and cleared.json()["data"] == {"service": "youtube", "cleared": 2}
    stats = (await gw.client.get("/api/v1/youtube/cache/stats", headers=h(key))).json()["data"]
    assert (stats["entries"], stats["bytes"], stats["hits"]) == (0, 0, 0)
    fresh = await gw.client.post("/api/v1/youtube/mp4", json=body, headers=h(key))
    assert fresh.json()["cached"] is False
    assert media.hits["/media/clip.mp4"] > fetched


async def test_batch_download_reports_progress_while_it_runs(
    gw: Gateway, key: str, media: MediaServer
) -> None:
    gw.start_worker("media", "media-batch")
    url = media.url("/slow/clip.mp4?rate=20000")  # ~1.5 s for the clip
    submitted = await gw.client.post("/api/v1/youtube/mp4?batch=1", json={"url": url}, headers=h(key))
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["data"]["job_id"]

    async def downloading() -> dict[str, Any] | None:
        job = await get_job(gw.client, key, job_id)
        progress = job["progress"]
        return job if progress and progress["downloaded_bytes"] > 0 and job["status"] == "running" else None

    running = await eventually(downloading, timeout=15, what="download progress")
    progress = running["progress"]
    assert progress["stage"] == "downloading"
    assert progress["total_bytes"] == len(media.files["clip.mp4"])
    assert 0 < progress["percent"] < 100
    done = await wait_for_status(gw.client, key, job_id, "succeeded", timeout=20)
    assert done["priority"] == "batch"
    assert done["result"]["data"]["quality"] == "360p"
    assert done["result"]["cached"] is False


async def test_cancel_stops_the_download_and_removes_partial_files(
    gw: Gateway, key: str, media: MediaServer
) -> None:
    gw.start_worker("media", "media-batch")
    url = media.url("/slow/clip.mp4?rate=3000")  # ~10 s for the clip
    submitted = await gw.client.post("/api/v1/youtube/mp4?batch=1", json={"url": url}, headers=h(key))
    job_id = submitted.json()["data"]["job_id"]
    workdirs = gw.settings.data_dir / "tmp" / "media"

    async def partial() -> bool:
        job = await get_job(gw.client, key, job_id)
        return bool(job["progress"] and job["progress"]["downloaded_bytes"] > 0) and any(workdirs.glob("*/*"))

    await eventually(partial, timeout=15, what="a partial download")
    canceled = await gw.client.delete(f"/api/v1/jobs/{job_id}", headers=h(key))
    assert canceled.status_code == 200
    job = await wait_for_status(gw.client, key, job_id, "canceled", timeout=5)
    assert job["error"]["type"] == "canceled"

    async def cleaned() -> bool:
        return not any(workdirs.glob("*/*"))

    await eventually(cleaned, timeout=5, what="partial files removed")

    async def stopped() -> bool:
        return media.aborted >= 1

    await eventually(stopped, timeout=10, what="the server to see the transfer stop")
    assert await gw_files_count(gw) == 0


async def gw_files_count(gw: Gateway) -> int:
    from storage.db import Database
    from storage.files import Files

    db = Database(gw.settings.database_url_or_default)
    try:
        return await Files.from_settings(gw.settings, db).count()
    finally:
        await db.dispose()


@pytest.mark.settings(SWITCHYARD_MEDIA_MAX_BYTES=10_000)
async def test_size_limit_fails_the_job_with_the_reason(gw: Gateway, key: str, media: MediaServer) -> None:
    gw.start_worker("media", "media-batch")
    response = await gw.client.post(
        "/api/v1/youtube/mp4", json={"url": media.url("/media/clip.mp4")}, headers=h(key)
    )
    assert response.status_code == 400, response.text
    assert "10000 bytes" in response.json()["message"]
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "failed" and job["error"]["type"] == "media_too_large"
    assert await gw_files_count(gw) == 0


@pytest.mark.settings(SWITCHYARD_MEDIA_MAX_DURATION_S=1)
async def test_duration_limit_fails_the_job_with_the_reason(
    gw: Gateway, key: str, media: MediaServer
) -> None:
    gw.start_worker("media", "media-batch")
    response = await gw.client.post(
        "/api/v1/youtube/mp3", json={"url": media.url("/media/clip.mp4")}, headers=h(key)
    )
    assert response.status_code == 400, response.text
    assert "lasts 2s, more than the limit of 1s" in response.json()["message"]
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["error"]["type"] == "media_too_long"
    assert await gw_files_count(gw) == 0


async def test_missing_media_fails_the_job_with_the_reason(gw: Gateway, key: str, media: MediaServer) -> None:
    gw.start_worker("media", "media-batch")
    submitted = await gw.client.post(
        "/api/v1/youtube/mp4?batch=1", json={"url": media.url("/media/gone.mp4")}, headers=h(key)
    )
    job = await wait_for_status(gw.client, key, submitted.json()["data"]["job_id"], "failed", timeout=15)
    assert job["error"]["type"] == "media_not_found"
    assert "404" in job["error"]["message"]
    response = await gw.client.post(
        "/api/v1/youtube/mp3", json={"url": media.url("/media/gone.mp4")}, headers=h(key)
    )
    assert response.status_code == 404 and "404" in response.json()["message"]


@pytest.mark.settings(SWITCHYARD_ALLOW_PRIVATE_URLS="false")
async def test_private_addresses_are_refused_unless_allowed(
    gw: Gateway, key: str, media: MediaServer
) -> None:
    gw.start_worker("media", "media-batch")
    for route in ("/api/v1/youtube/mp4", "/api/v1/youtube/mp3", "/api/v1/tiktok/download"):
        response = await gw.client.post(route, json={"url": media.url("/media/clip.mp4")}, headers=h(key))
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["details"][0]["field"] == "url"
        assert "non-public address (127.0.0.1)" in body["message"]
    assert sum(media.hits.values()) == 0


async def test_a_redirect_is_checked_before_it_is_followed(media: MediaServer, tmp_path: Path) -> None:
    """The guard sees every hop: here a policy that refuses the redirect's target."""

    def refuse_media(url: str) -> str:
        if urlsplit(url).path.startswith("/media/"):
            raise InvalidRequest.field("url", "refused by policy", url)
        return url

    start = media.url("/redirect?to=" + media.url("/media/clip.mp4"))
    with pytest.raises(InvalidRequest) as refused:
        await asyncio.to_thread(
            functools.partial(
                download, start, "mp4", "360p", workdir=tmp_path / "w", extractors=["generic"],
                limits=Limits(10**9, 3600), allow_private=True, progress=Progress(), check=refuse_media,
            )
        )  # fmt: skip
    assert "redirect" in refused.value.message and "refused by policy" in refused.value.message
    assert media.hits["/redirect"] == 1
    assert media.hits["/media/clip.mp4"] == 0


async def test_media_jobs_run_on_their_own_lane(gw: Gateway, key: str, media: MediaServer) -> None:
    """A chat worker never takes media jobs (nor a media worker chat jobs): downloads cannot
    hold the slots chat runs in."""
    chat_worker = gw.start_worker("interactive", "batch")
    submitted = await gw.client.post(
        "/api/v1/youtube/mp4?batch=1", json={"url": media.url("/media/clip.mp4")}, headers=h(key)
    )
    job_id = submitted.json()["data"]["job_id"]
    chat = await gw.client.post(
        "/api/v1/chat",
        json={"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert chat.status_code == 200
    await asyncio.sleep(0.3)
    assert (await get_job(gw.client, key, job_id))["status"] == "queued"
    assert chat_worker.jobs_complete == 1
    media_worker = gw.start_worker("media", "media-batch")
    assert media_worker.max_jobs == gw.settings.media_max_jobs
    await wait_for_status(gw.client, key, job_id, "succeeded", timeout=15)
    # A queued media job is canceled from its own queue.
    await gw.stop_worker(media_worker)
    queued = await gw.client.post(
        "/api/v1/youtube/mp3?batch=1", json={"url": media.url("/media/clip.mp4")}, headers=h(key)
    )
    queued_id = queued.json()["data"]["job_id"]
    assert (await gw.client.delete(f"/api/v1/jobs/{queued_id}", headers=h(key))).status_code == 200
    assert (await get_job(gw.client, key, queued_id))["status"] == "canceled"


# --- routes: input, sites, 501 -------------------------------------------------------------------
DOWNLOAD_ROUTES = ("/api/v1/youtube/mp3", "/api/v1/youtube/mp4")
INFO_ROUTES = ("/api/v1/tiktok/download", "/api/v1/instagram/download", "/api/v1/pinterest/download")
SEARCH_ROUTES = ("/api/v1/youtube/search", "/api/v1/tiktok/search", "/api/v1/pinterest/search")


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        *[(r, {}, "url") for r in DOWNLOAD_ROUTES + INFO_ROUTES],
        *[(r, {"url": 42}, "url") for r in DOWNLOAD_ROUTES + INFO_ROUTES],
        *[(r, {"url": ""}, "url") for r in DOWNLOAD_ROUTES + INFO_ROUTES],
        *[(r, {"url": "ftp://example.com/a.mp4"}, "url") for r in DOWNLOAD_ROUTES + INFO_ROUTES],
        *[(r, {"url": "https://vimeo.com/12345"}, "url") for r in DOWNLOAD_ROUTES + INFO_ROUTES],
        *[(r, {"url": "https://example.com/page.html"}, "url") for r in DOWNLOAD_ROUTES + INFO_ROUTES],
        ("/api/v1/youtube/mp4", {"url": "https://youtu.be/dQw4w9WgXcQ", "quality": "4k"}, "quality"),
        ("/api/v1/youtube/mp4", {"url": "https://youtu.be/dQw4w9WgXcQ", "quality": 720}, "quality"),
        ("/api/v1/youtube/mp3", {"url": "https://youtu.be/dQw4w9WgXcQ", "quality": "999k"}, "quality"),
        ("/api/v1/youtube/mp3", {"url": "https://youtu.be/dQw4w9WgXcQ", "direct": "yes"}, "direct"),
        ("/api/v1/youtube/mp4", {"url": "https://www.youtube.com/watch?v=short"}, "url"),
        ("/api/v1/tiktok/download", {"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}, "url"),
        *[(r, {}, "query") for r in SEARCH_ROUTES],
        *[(r, {"query": ""}, "query") for r in SEARCH_ROUTES],
        *[(r, {"query": ["a"]}, "query") for r in SEARCH_ROUTES],
        ("/api/v1/youtube/search", {"query": "   "}, "query"),
        ("/api/v1/youtube/search", {"query": "cats", "limit": 0}, "limit"),
        ("/api/v1/youtube/search", {"query": "cats", "limit": 51}, "limit"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    gw: Gateway, key: str, route: str, body: dict[str, Any], field: str
) -> None:
    response = await gw.client.post(route, json=body, headers=h(key))
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["success"] is False and error["error"] == "Bad Request"
    assert error["details"][0]["field"] == field, error


@pytest.mark.parametrize("route", DOWNLOAD_ROUTES + INFO_ROUTES + SEARCH_ROUTES)
async def test_bodies_that_are_not_json_objects(gw: Gateway, key: str, route: str) -> None:
    for content in (b"", b"{not json", b"[1, 2]"):
        response = await gw.client.post(
            route, content=content, headers={**h(key), "content-type": "application/json"}
        )
        assert response.status_code == 400, (content, response.text)
        assert response.json()["details"][0]["field"] == "body"
    assert (await gw.client.post(route, json={"url": "x", "query": "x"})).status_code == 401


@pytest.mark.parametrize("site", ["tiktok", "pinterest"])
async def test_search_a_site_offers_only_to_accounts_says_why_in_the_documented_shape(
    gw: Gateway, key: str, site: str
) -> None:
    """000's search body (`query`, `results`, `count`), empty, with the reason it is."""
    response = await gw.client.post(
        f"/api/v1/{site}/search", json={"query": "minimalist  architecture"}, headers=h(key)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["cached"] is False and body["timestamp"].endswith("Z")
    data = body["data"]
    assert data["query"] == "minimalist architecture" and data["results"] == [] and data["count"] == 0
    assert data["available"] is False and "without a signed-in account" in data["reason"]
    blank = await gw.client.post(f"/api/v1/{site}/search", json={"query": "  "}, headers=h(key))
    assert blank.status_code == 400


@pytest.mark.parametrize("service", ["youtube", "tiktok", "instagram", "pinterest", "lyrics"])
async def test_cache_stats_and_clear_of_every_service(gw: Gateway, key: str, service: str) -> None:
    stats = await gw.client.get(f"/api/v1/{service}/cache/stats", headers=h(key))
    assert stats.status_code == 200
    assert stats.json()["data"] == {
        "service": service, "hits": 0, "misses": 0, "hit_rate": 0.0, "entries": 0, "bytes": 0,
        "ttl_seconds": gw.settings.media_cache_ttl_s,
    }  # fmt: skip
    cleared = await gw.client.delete(f"/api/v1/{service}/cache", headers=admin_headers())
    assert cleared.json() == {"success": True, "data": {"service": service, "cleared": 0}}
    assert (await gw.client.get(f"/api/v1/{service}/cache/stats")).status_code == 401


@pytest.mark.parametrize("service", ["youtube", "tiktok", "instagram", "pinterest", "lyrics"])
async def test_only_the_admin_key_may_empty_a_shared_cache(
    gw: Gateway, key: str, redis_url: str, service: str
) -> None:
    """Every key shares these caches: one key emptying them would cost every other key."""
    cache = ResultCache(redis.Redis.from_url(redis_url), service, 3600)
    try:
        await cache.put("entry", {"file_id": "f"})
        refused = await gw.client.delete(f"/api/v1/{service}/cache", headers=h(key))
        assert refused.status_code == 403, refused.text
        body = refused.json()
        assert body["success"] is False and body["error"] == "Forbidden"  # the native shape
        assert f"only the admin key may empty the shared {service} cache" in body["message"]
        assert (await gw.client.delete(f"/api/v1/{service}/cache")).status_code == 401
        stats = (await gw.client.get(f"/api/v1/{service}/cache/stats", headers=h(key))).json()["data"]
        assert stats["entries"] == 1  # still there
        cleared = await gw.client.delete(f"/api/v1/{service}/cache", headers=admin_headers())
        assert cleared.status_code == 200 and cleared.json()["data"]["cleared"] == 1
    finally:
        await cache.redis.aclose()


# --- site URLs: accepted forms and their canonical form ----------------------------------------
YT = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
TT = "https://www.tiktok.com/@user.name/video/7234567890123456789"
PIN = "https://www.pinterest.com/pin/123456789/"
IG_STORY = "https://www.instagram.com/stories/someone/3123456789/"


@pytest.mark.parametrize(
    ("service", "url", "canonical", "media_id"),
    [
        ("youtube", YT + "&t=42s&list=PL1", YT, "dQw4w9WgXcQ"),
        ("youtube", "https://youtu.be/dQw4w9WgXcQ?si=abc", YT, "dQw4w9WgXcQ"),
        ("youtube", "http://m.youtube.com/shorts/dQw4w9WgXcQ", YT, "dQw4w9WgXcQ"),
        ("youtube", "https://music.youtube.com/watch?v=dQw4w9WgXcQ&feature=share", YT, "dQw4w9WgXcQ"),
        ("youtube", "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ", YT, "dQw4w9WgXcQ"),
        ("youtube", "https://YOUTUBE.com/live/dQw4w9WgXcQ", YT, "dQw4w9WgXcQ"),
        ("tiktok", TT + "?is_from_webapp=1", TT, "7234567890123456789"),
        ("tiktok", "https://vm.tiktok.com/ZMabc123/", "https://vm.tiktok.com/ZMabc123/", None),
        (
            "instagram",
            "https://www.instagram.com/p/ABC123xyz/?igsh=x",
            "https://www.instagram.com/p/ABC123xyz/",
            "ABC123xyz",
        ),
        (
            "instagram",
            "https://instagram.com/reels/C0de_-1/",
            "https://www.instagram.com/reel/C0de_-1/",
            "C0de_-1",
        ),
        ("instagram", IG_STORY, IG_STORY, "3123456789"),
        ("pinterest", "https://br.pinterest.com/pin/123456789/", PIN, "123456789"),
        ("pinterest", "https://www.pinterest.co.uk/pin/modern-home--123456789/", PIN, "123456789"),
        ("pinterest", "https://pin.it/4xYz", "https://pin.it/4xYz", None),
    ],
)
def test_site_urls_are_normalized(service: str, url: str, canonical: str, media_id: str | None) -> None:
    target = media_target(service, url)
    assert target == MediaTarget(service, canonical, media_id, target.kind)
    assert cache_key(service, "x", target.canonical) == cache_key(
        service, "x", media_target(service, canonical).canonical
    )


def test_instagram_kinds_and_direct_links() -> None:
    assert media_target("instagram", "https://www.instagram.com/reel/X1/").kind == "reel"
    assert media_target("instagram", "https://www.instagram.com/tv/X1/").kind == "tv"
    direct = media_target("tiktok", "HTTPS://CDN.Example.com/v/a.MP4?sig=1#frag")
    assert direct.generic and direct.kind == "video"
    assert direct.canonical == "https://cdn.example.com/v/a.MP4?sig=1"
    with pytest.raises(InvalidRequest, match="not a YouTube link"):
        media_target("youtube", "https://cdn.example.com/a.mp4", allow_direct=False)
    with pytest.raises(InvalidRequest, match="is not a Pinterest link"):
        media_target("pinterest", "https://www.pinterest.com/someone/boards/")


def test_limits_are_checked_on_metadata_before_download(tmp_path: Path) -> None:
    """A site that announces the duration or size is refused before any byte is fetched."""
    from workers.media.ytdlp import MediaTooLarge, MediaTooLong, _check_duration, _check_size, _expected_size

    limits = Limits(max_bytes=1000, max_duration_s=60)
    with pytest.raises(MediaTooLong):
        _check_duration(61, limits)
    _check_duration(None, limits)
    info = {"requested_formats": [{"filesize": 600}, {"filesize_approx": 600}]}
    assert _expected_size(info) == 1200
    with pytest.raises(MediaTooLarge):
        _check_size(_expected_size(info), limits, "announced as")


# --- extractor metadata -> documented bodies (recorded yt-dlp info dicts, trimmed) --------------
YT_SEARCH_INFO: dict[str, Any] = {
    "_type": "playlist",
    "id": "javascript tutorial",
    "entries": [
        {
            "_type": "url",
            "ie_key": "Youtube",
            "id": "W6NZfCO5SIk",
            "url": "https://www.youtube.com/watch?v=W6NZfCO5SIk",
            "title": "JavaScript Tutorial for Beginners",
            "description": "Learn JavaScript basics...",
            "duration": 2730.0,
            "channel_id": "UCWv7vMbMWH4-V0ZXdmDpPBA",
            "channel": "Programming with Mosh",
            "channel_url": "https://www.youtube.com/channel/UCWv7vMbMWH4-V0ZXdmDpPBA",
            "view_count": 1000000,
            "thumbnails": [
                {"url": "https://i.ytimg.com/vi/W6NZfCO5SIk/hq720.jpg?a", "height": 202, "width": 360},
                {"url": "https://i.ytimg.com/vi/W6NZfCO5SIk/hq720.jpg?b", "height": 404, "width": 720},
            ],
            "timestamp": None,
            "upload_date": None,
        },
        {
            "_type": "url",
            "ie_key": "YoutubeTab",
            "id": "UCxyz",
            "url": "https://www.youtube.com/channel/UCxyz",
            "title": "A channel",
        },
        {
            "_type": "url",
            "ie_key": "Youtube",
            "id": "dQw4w9WgXcQ",
            "title": "Short one",
            "duration": 59,
            "uploader": "Someone",
            "channel_id": "UCabc",
            "view_count": None,
            "upload_date": "20240101",
        },
    ],
}

TIKTOK_INFO: dict[str, Any] = {
    "id": "7234567890123456789",
    "title": "Amazing video!",
    "description": "Amazing video! #fyp",
    "uploader": "user",
    "uploader_id": "6712345678901234567",
    "channel": "User Name",
    "duration": 15,
    "view_count": 1000000,
    "like_count": 50000,
    "comment_count": 1000,
    "repost_count": 5000,
    "track": "original sound",
    "artists": ["user"],
    "artist": "user",
    "thumbnails": [{"url": "https://p16-sign.tiktokcdn.com/cover.jpeg", "preference": -2}],
    "formats": [
        {
            "format_id": "download-0",
            "format_note": "watermarked",
            "url": "https://v16.tiktokcdn.com/wm.mp4",
            "ext": "mp4",
            "width": 576,
            "height": 1024,
            "vcodec": "h264",
        },
        {
            "format_id": "h264_540p_1",
            "url": "https://v16.tiktokcdn.com/540.mp4",
            "ext": "mp4",
            "width": 576,
            "height": 1024,
            "vcodec": "h264",
            "tbr": 900,
        },
        {
            "format_id": "bytevc1_720p_1",
            "url": "https://v16.tiktokcdn.com/720.mp4",
            "ext": "mp4",
            "width": 720,
            "height": 1280,
            "vcodec": "h265",
            "tbr": 1200,
        },
        {"format_id": "audio", "url": "https://v16.tiktokcdn.com/a.m4a", "ext": "m4a", "vcodec": "none"},
    ],
}

INSTAGRAM_CAROUSEL_INFO: dict[str, Any] = {
    "_type": "playlist",
    "id": "ABC123xyz",
    "title": "Post by photographer",
    "description": "Beautiful sunset!",
    "uploader": "John Photographer",
    "uploader_id": "1234567",
    "channel": "photographer",
    "timestamp": 1730973600,
    "like_count": 5000,
    "comment_count": 250,
    "entries": [
        {
            "id": "1",
            "title": "Video 1",
            "formats": [
                {
                    "url": "https://scontent.cdninstagram.com/v/1_480.mp4",
                    "width": 480,
                    "height": 480,
                    "ext": "mp4",
                    "vcodec": "avc1",
                },
                {
                    "url": "https://scontent.cdninstagram.com/v/1_1080.mp4",
                    "width": 1080,
                    "height": 1080,
                    "ext": "mp4",
                    "vcodec": "avc1",
                },
            ],
            "thumbnail": "https://scontent.cdninstagram.com/v/1.jpg",
        },
        {
            "id": "2",
            "title": "Video 2",
            "url": "https://scontent.cdninstagram.com/v/2.jpg",
            "ext": "jpg",
            "width": 1080,
            "height": 1350,
        },
    ],
}

PINTEREST_IMAGE_INFO: dict[str, Any] = {
    "id": "123456789",
    "title": "Beautiful Design",
    "description": "A stunning example...",
    "uploader": "DesignStudio",
    "uploader_id": "98765",
    "thumbnails": [
        {"url": "https://i.pinimg.com/236x/ab/cd/ef/abcdef.jpg", "width": 236},
        {"url": "https://i.pinimg.com/736x/ab/cd/ef/abcdef.jpg", "width": 736},
        {"url": "https://i.pinimg.com/originals/ab/cd/ef/abcdef.jpg"},
    ],
    "formats": [],
}


def test_youtube_search_results_keep_videos_in_the_documented_shape() -> None:
    from workers.media.mapping import youtube_search

    data = youtube_search(YT_SEARCH_INFO, {"query": "javascript tutorial"})
    assert data["query"] == "javascript tutorial" and data["count"] == 2
    first, second = data["results"]
    assert first == {
        "id": "W6NZfCO5SIk",
        "title": "JavaScript Tutorial for Beginners",
        "description": "Learn JavaScript basics...",
        "thumbnail": "https://i.ytimg.com/vi/W6NZfCO5SIk/hq720.jpg?b",
        "url": "https://www.youtube.com/watch?v=W6NZfCO5SIk",
        "channel": {
            "name": "Programming with Mosh",
            "url": "https://www.youtube.com/channel/UCWv7vMbMWH4-V0ZXdmDpPBA",
        },
        "duration": "PT45M30S",
        "views": 1000000,
        "published": None,
    }
    assert second["channel"] == {"name": "Someone", "url": "https://www.youtube.com/channel/UCabc"}
    assert second["duration"] == "PT59S" and second["views"] is None
    assert second["published"] == "2024-01-01T00:00:00Z"


def test_tiktok_video_maps_formats_to_qualities() -> None:
    from workers.media.mapping import tiktok_video

    data = tiktok_video(TIKTOK_INFO, {"site": "tiktok"})
    assert data["id"] == "7234567890123456789" and data["title"] == "Amazing video!"
    assert data["author"] == {"username": "user", "nickname": "User Name", "avatar": None}
    assert data["stats"] == {"views": 1000000, "likes": 50000, "comments": 1000, "shares": 5000}
    assert data["urls"] == [
        {"quality": "hd", "url": "https://v16.tiktokcdn.com/720.mp4", "format": "mp4"},
        {"quality": "sd", "url": "https://v16.tiktokcdn.com/540.mp4", "format": "mp4"},
        {"quality": "watermark", "url": "https://v16.tiktokcdn.com/wm.mp4", "format": "mp4"},
    ]
    assert data["music"] == {"title": "original sound", "author": "user", "url": None}


def test_instagram_carousel_gives_every_media() -> None:
    from workers.media.mapping import instagram_post

    data = instagram_post(
        INSTAGRAM_CAROUSEL_INFO, {"site": "instagram", "kind": "post", "media_id": "ABC123xyz"}
    )
    assert data["id"] == "ABC123xyz" and data["type"] == "post"
    assert data["caption"] == "Beautiful sunset!"
    assert data["author"] == {"username": "photographer", "full_name": "John Photographer", "avatar": None}
    assert data["timestamp"] == "2024-11-07T10:00:00Z"
    assert (data["likes"], data["comments"], data["count"]) == (5000, 250, 2)
    video, image = data["media"]
    assert video["type"] == "video" and video["url"].endswith("1_1080.mp4") and video["width"] == 1080
    assert image == {
        "type": "image", "url": "https://scontent.cdninstagram.com/v/2.jpg", "width": 1080, "height": 1350,
        "thumbnail": None,
    }  # fmt: skip
    single = instagram_post(
        INSTAGRAM_CAROUSEL_INFO["entries"][0], {"site": "instagram", "kind": "reel", "media_id": "R1"}
    )
    assert single["type"] == "reel" and single["count"] == 1


def test_pinterest_pin_lists_its_image_sizes() -> None:
    from workers.media.mapping import pinterest_pin

    data = pinterest_pin(PINTEREST_IMAGE_INFO, {"site": "pinterest"})
    assert data["title"] == "Beautiful Design" and data["author"] == "DesignStudio"
    assert [u["quality"] for u in data["urls"]] == ["236x", "736x", "originals"]
    assert data["urls"][2]["url"] == "https://i.pinimg.com/originals/ab/cd/ef/abcdef.jpg"


def test_generic_links_map_to_their_own_url() -> None:
    from workers.media.mapping import iso_duration, tiktok_video

    info = {"id": "clip", "title": "clip", "url": "https://cdn.example.com/clip.mp4", "ext": "mp4"}
    assert tiktok_video(info, {"site": "generic"})["urls"] == [
        {"quality": "original", "url": "https://cdn.example.com/clip.mp4", "format": "mp4"}
    ]
    assert [iso_duration(s) for s in (0, 59, 3600, 3725.4, None, -1)] == [
        "PT0S",
        "PT59S",
        "PT1H",
        "PT1H2M5S",
        None,
        None,
    ]


async def test_post_routes_give_a_direct_links_media_through_yt_dlp(
    gw: Gateway, key: str, media: MediaServer
) -> None:
    gw.start_worker("media", "media-batch")
    url = media.url("/media/clip.mp4")
    tiktok = await gw.client.post("/api/v1/tiktok/download", json={"url": url}, headers=h(key))
    assert tiktok.status_code == 200, tiktok.text
    assert tiktok.json()["data"]["urls"] == [{"quality": "original", "url": url, "format": "mp4"}]
    assert tiktok.json()["cached"] is False
    instagram = await gw.client.post("/api/v1/instagram/download", json={"url": url}, headers=h(key))
    media_items = instagram.json()["data"]["media"]
    assert instagram.json()["data"]["count"] == 1 and media_items[0]["type"] == "video"
    assert media_items[0]["url"] == url
    pinterest = await gw.client.post("/api/v1/pinterest/download", json={"url": url}, headers=h(key))
    assert pinterest.json()["data"]["urls"][0]["url"] == url
    probes = media.hits["/media/clip.mp4"]
    again = await gw.client.post("/api/v1/tiktok/download", json={"url": url}, headers=h(key))
    assert again.json()["cached"] is True and media.hits["/media/clip.mp4"] == probes
    missing = await gw.client.post(
        "/api/v1/pinterest/download", json={"url": media.url("/media/gone.jpg")}, headers=h(key)
    )
    assert missing.status_code == 404 and "404" in missing.json()["message"]


def test_leftovers_of_a_dead_worker_are_swept(tmp_path: Path) -> None:
    import os
    import time

    from workers.media.handlers import sweep_workdirs

    stale, fresh = tmp_path / "job1-1", tmp_path / "job2-1"
    for d in (stale, fresh):
        d.mkdir()
        (d / "clip.mp4.part").write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert sweep_workdirs(tmp_path, older_than_s=600) == 1
    assert not stale.exists() and (fresh / "clip.mp4.part").exists()
    assert sweep_workdirs(tmp_path / "missing", older_than_s=600) == 0


async def test_media_jobs_count_in_the_keys_usage(gw: Gateway, key: str, media: MediaServer) -> None:
    gw.start_worker("media", "media-batch")
    done = await gw.client.post(
        "/api/v1/youtube/mp3", json={"url": media.url("/media/clip.mp4")}, headers=h(key)
    )
    assert done.status_code == 200
    job = await get_job(gw.client, key, done.headers["x-job-id"])

    async def persisted() -> bool:
        listed = await gw.client.get("/api/v1/jobs", params={"status": "succeeded"}, headers=h(key))
        return any(j["id"] == job["id"] for j in listed.json()["data"])

    await eventually(persisted, what="the job in the key's list")
    status = await gw.client.get("/api/v1/status", params={"include_chart": "true"}, headers=h(key))
    assert status.status_code == 200, status.text
