"""`python -m bench.media`: what media jobs cost, and what they cost chat.

On the cluster of `bench.cluster` (Redis, web, one interactive worker, the chat stand-in) plus
one media worker (`--queue media,media-batch`, up to 8 downloads at once) and a media stand-in
serving a generated MP4 on loopback:

1. the latency of a cache hit: one `POST /api/v1/youtube/mp4` downloads the file, then the
   same request is repeated sequentially (answered from the Redis cache, with the file inlined
   as base64 as the default response does) -> p50/p99;
2. chat latency (one sequential client) while 0, 1, 2, 4 and 8 downloads run at once (each
   download a new URL, so yt-dlp and the file store really run), beside the downloads/s done.
   DESIGN.md's interactive target is p95 <= 2x its p95 on an idle system.

BENCH_MEDIA_SECONDS (default 6) is the length of each chat measurement.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import subprocess
import sys
import time

import orjson

from bench.cluster import MODEL, Cluster
from bench.loadgen import build_request, fetch, run_load
from switchyard.redis_server import free_port
from workers.media.ytdlp import ffmpeg_exe

LEVELS = (0, 1, 2, 4, 8)
CACHE_HITS = 300


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))] * 1000


def make_clip(path: str, seconds: int = 10) -> int:
    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "96k", "-shortest", "-movflags", "+faststart", path,
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    return os.path.getsize(path)


async def download(cluster: Cluster, url: str) -> tuple[int, bytes, float]:
    body = orjson.dumps({"url": url, "quality": "360p"})
    headers = {"x-api-key": cluster.api_key, "content-type": "application/json"}
    started = time.perf_counter()
    status, data = await fetch(
        cluster.web_port, "POST", "/api/v1/youtube/mp4", body=body, headers=headers, timeout=120
    )
    return status, data, time.perf_counter() - started


async def downloader(
    cluster: Cluster,
    base: str,
    serial: itertools.count[int],
    stop: asyncio.Event,
    done: list[float],
    failures: list[str],
) -> None:
    """Downloads back to back, each of a new URL (no cache hit), until `stop`."""
    while not stop.is_set():
        status, data, took = await download(cluster, f"{base}?n={next(serial)}")
        if status == 200:
            done.append(took)
        else:
            failures.append(f"{status} {data[:120]!r}")


async def main() -> int:
    seconds = float(os.environ.get("BENCH_MEDIA_SECONDS", "6"))
    os.environ.setdefault("BENCH_SWITCHYARD_ALLOW_PRIVATE_URLS", "true")  # the media stand-in is on loopback
    os.environ.setdefault("BENCH_SWITCHYARD_MEDIA_MAX_JOBS", str(max(LEVELS)))
    cluster = Cluster()
    try:
        await cluster.start()
        clip = cluster.tmp / "clip.mp4"
        size = await asyncio.to_thread(make_clip, str(clip))
        media_port = free_port()
        cluster.spawn(
            "media-standin",
            [sys.executable, "-m", "switchyard.media_standin", "--port", str(media_port), str(clip)],
        )
        cluster.spawn("media", [str(cluster.bin / "switchyard"), "worker", "--queue", "media,media-batch"])
        await cluster.wait_http("media-standin", media_port, "/media/clip.mp4")
        base = f"http://127.0.0.1:{media_port}/media/clip.mp4"
        print(
            f"bench.media: a {size / 1e6:.2f} MB, 10 s MP4 (640x360, H.264 + AAC) from a loopback server",
            flush=True,
        )

        # 1. cache hits
        status, data, first = await download(cluster, base)
        if status != 200:
            raise RuntimeError(
                f"the first download answered {status}: {data[:300]!r}\n{cluster.tails(('web', 'media'))}"
            )
        hits: list[float] = []
        for _ in range(CACHE_HITS):
            status, data, took = await download(cluster, base)
            if status != 200 or not orjson.loads(data)["cached"]:
                raise RuntimeError(f"a repeat was not a cache hit: {status} {data[:200]!r}")
            hits.append(took)
        print(
            f"first download (yt-dlp, store): {first * 1000:.0f} ms; cache hit, {CACHE_HITS} sequential "
            f"(JSON with the {size / 1e6:.2f} MB file inlined as base64): p50 {percentile(hits, 50):.1f} ms, "
            f"p99 {percentile(hits, 99):.1f} ms",
            flush=True,
        )

        # 2. chat latency while downloads run
        chat = build_request(
            "POST",
            "/api/v1/chat",
            cluster.web_port,
            body=orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
            headers={"authorization": f"Bearer {cluster.api_key}", "content-type": "application/json"},
        )
        await run_load(cluster.web_port, chat, concurrency=1, duration=1.0)  # warm-up
        serial = itertools.count()
        baseline = float("nan")
        print(
            f"{'downloads':>9} | {'chat p50':>9} | {'chat p95':>9} | {'x idle p95':>10} | "
            f"{'downloads/s':>11} | {'MB/s':>6}"
        )
        for level in LEVELS:
            stop = asyncio.Event()
            done: list[float] = []
            failures: list[str] = []

            tasks = [
                asyncio.create_task(downloader(cluster, base, serial, stop, done, failures))
                for _ in range(level)
            ]
            await asyncio.sleep(1.0 if level else 0)  # let the downloads get going
            mark = len(done)
            result = await run_load(cluster.web_port, chat, concurrency=1, duration=seconds)
            finished = len(done) - mark
            stop.set()
            await asyncio.gather(*tasks)
            p50, p95 = result.percentile_ms(50), result.percentile_ms(95)
            if level == 0:
                baseline = p95
            rate = finished / result.elapsed
            print(
                f"{level:>9} | {p50:>6.2f} ms | {p95:>6.2f} ms | {p95 / baseline:>9.2f}x | {rate:>11.2f} | "
                f"{rate * size / 1e6:>6.1f}"
                + (f"  ({result.errors} chat errors)" if result.errors else "")
                + (f"  download failures: {failures[:2]}" if failures else ""),
                flush=True,
            )
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    sys.exit(asyncio.run(main()))
