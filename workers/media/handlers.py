"""Media job handlers: downloads (mp3/mp4) and look-ups (search, a post's media) through yt-dlp.

yt-dlp runs in a thread of its own per job (`download` and `extract_info` are blocking), so the
worker's event loop goes on claiming, finishing and renewing leases while it runs. A cancel
(or the job's timeout, or a shutdown) cancels the handler's task: the handler then tells the
thread to stop (it stops at its next block), waits for it, and removes the job's partial files.
"""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
import time
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from jobs import queues
from jobs.media import INSTAGRAM, MP3, PINTEREST, TIKTOK, YOUTUBE, MediaDownloadPayload, MediaInfoPayload
from storage.result_cache import ResultCache
from workers.context import WorkerCtx
from workers.media import mapping
from workers.media.files import reuse_file, save_file
from workers.media.ytdlp import Limits, Progress, download, extract_info

T = TypeVar("T")

# Only while the job's state is live: a late write never recreates an expired hash.
_SET_PROGRESS = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'progress', ARGV[1]) end"
)
PROGRESS_INTERVAL_S = 0.5  # at most two progress writes a second per job
STOP_WAIT_S = 30.0  # how long a canceled job waits for its thread to notice

# yt-dlp's threads; the media lane's worker bounds how many jobs run at once.
_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="media")

EXTRACTORS: dict[str, list[str]] = {
    YOUTUBE: ["youtube"],
    TIKTOK: ["tiktok", "vm.tiktok"],
    INSTAGRAM: ["instagram", "instagram:story"],
    PINTEREST: ["pinterest"],
    "generic": ["generic"],
}
MIME = {"mp3": "audio/mpeg", "mp4": "video/mp4"}


def media_cache(ctx: WorkerCtx, service: str) -> ResultCache:
    return ResultCache(ctx["redis"], service, ctx["settings"].media_cache_ttl_s)


class ProgressReporter:
    """Writes a job's progress to its state hash: woken by the download thread, throttled."""

    def __init__(self, ctx: WorkerCtx, job_id: str, progress: Progress) -> None:
        self._set = ctx["redis"].register_script(_SET_PROGRESS)
        self.key = queues.STATE_KEY + job_id
        self.progress = progress
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._last_poke = 0.0
        self._task: asyncio.Task[None] | None = None
        progress.on_change = self.poke

    def poke(self) -> None:
        """From the download thread: at most one wake-up per interval crosses to the loop."""
        now = time.monotonic()
        if now - self._last_poke >= PROGRESS_INTERVAL_S / 2:
            self._last_poke = now
            self.loop.call_soon_threadsafe(self._wake.set)

    def __enter__(self) -> ProgressReporter:
        self._task = self.loop.create_task(self._run())
        return self

    def __exit__(self, *_: Any) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._set(keys=[self.key], args=[orjson.dumps(self.progress.snapshot())])
            except Exception:  # noqa: BLE001 (progress is best effort; the job goes on)
                pass
            await asyncio.sleep(PROGRESS_INTERVAL_S)


async def run_in_thread(fn: functools.partial[T], progress: Progress) -> T:
    """Run `fn` on the media pool; if this task is canceled, stop the thread and wait for it."""
    future: Future[T] = _POOL.submit(fn)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        progress.canceled.set()
        await asyncio.wait([asyncio.wrap_future(future)], timeout=STOP_WAIT_S)
        raise


_swept_roots: set[Path] = set()


def sweep_workdirs(root: Path, older_than_s: float) -> int:
    """Remove job work directories older than any live job can be: what a worker killed
    mid-download (SIGKILL, a crash) left behind. Returns how many were removed."""
    if not root.is_dir():
        return 0
    limit = time.time() - older_than_s
    removed = 0
    for workdir in root.iterdir():
        try:
            if workdir.is_dir() and workdir.stat().st_mtime < limit:
                shutil.rmtree(workdir, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


def slug(title: str, limit: int = 80) -> str:
    """A filename from a title: ASCII letters, digits and dashes."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return text[:limit].rstrip("-") or "media"


async def media_download(ctx: WorkerCtx, job_id: str, payload: MediaDownloadPayload) -> dict[str, Any]:
    settings = ctx["settings"]
    service, fmt, quality = payload["service"], payload["format"], payload["quality"]
    cache = media_cache(ctx, service)
    owner = ctx.get("job", {}).get("owner")
    hit = await cache.get(payload["cache_key"])
    if hit is not None:
        reused = await reuse_file(ctx, hit, owner, job_id)
        if reused is not None:
            return {"result": {"data": reused, "cached": True}, "provider": "cache"}
        await cache.drop(payload["cache_key"])  # its file is gone: download again
    root = settings.data_dir / "tmp" / "media"
    if root not in _swept_roots:  # once per process: a dead worker's leftovers
        _swept_roots.add(root)
        await asyncio.to_thread(sweep_workdirs, root, settings.media_job_timeout_s + STOP_WAIT_S + 60)
    workdir = root / f"{job_id}-{ctx.get('job_try', 1)}"
    progress = Progress()
    try:
        with ProgressReporter(ctx, job_id, progress):
            got = await run_in_thread(
                functools.partial(
                    download,
                    payload["url"],
                    fmt,
                    quality,
                    workdir=workdir,
                    extractors=EXTRACTORS[payload["site"]],
                    limits=Limits(settings.media_max_bytes, settings.media_max_duration_s),
                    allow_private=settings.allow_private_urls,
                    progress=progress,
                ),
                progress,
            )
            title = str(got.info.get("title") or got.info.get("id") or "media")
            suffix = f"-{quality}" if fmt != MP3 else ""
            filename = f"{slug(title)}{suffix}.{fmt}"
            stored = await save_file(ctx, got.path, MIME[fmt], filename, owner, job_id)
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, workdir, True))
    data: dict[str, Any] = {
        "title": title,
        "duration": round(got.duration) if got.duration else None,
        "quality": quality,  # 000's field: mp3's is the audio quality asked for (mp3, 128k...)
        "filename": filename,
        "source": "ytdlp",
        **stored,
    }
    await cache.put(payload["cache_key"], data, extra_bytes=int(stored.get("size") or 0))
    return {"result": {"data": data, "cached": False}, "provider": "ytdlp"}


async def media_info(ctx: WorkerCtx, job_id: str, payload: MediaInfoPayload) -> dict[str, Any]:
    settings = ctx["settings"]
    service, operation = payload["service"], payload["operation"]
    cache = media_cache(ctx, service)
    hit = await cache.get(payload["cache_key"])
    if hit is not None:
        return {"result": {"data": hit, "cached": True}, "provider": "cache"}
    if operation == "search":
        url, extractors, limit = (
            f"ytsearch{payload['limit']}:{payload['query']}",
            ["youtube:search"],
            payload["limit"],
        )
    else:
        url, limit = payload["query"], None
        extractors = EXTRACTORS[payload["site"]]
    progress = Progress()
    info = await run_in_thread(
        functools.partial(
            extract_info, url, extractors=extractors, allow_private=settings.allow_private_urls, limit=limit
        ),
        progress,
    )
    data = mapping.MAPPERS[(service, operation)](info, payload)
    await cache.put(payload["cache_key"], data)
    return {"result": {"data": data, "cached": False}, "provider": "ytdlp"}
