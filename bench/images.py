"""`python -m bench.images`: images per second through the whole image pipeline, and Pillow's share.

Starts Redis, the image stand-in (an instant provider: the same prompt and seed answer the same
cached 256x256 PNG), the web process and one interactive worker as subprocesses, then sends
`POST /api/image` (256x256, PNG) back to back: admission, the queue, the worker's provider
call, the Pillow pipeline (verify, size, encode, metadata, thumbnail), two stored files and the
file streamed back. Pillow's share is measured by running the same pipeline on the provider's
exact bytes in this process (`workers.imaging.process`, per-thread CPU) and comparing it with
the CPU each image cost the worker (from /proc) and with the time per image.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from bench.cluster import Cluster, StartupError
from bench.loadgen import LoadResult, build_request, fetch, run_load
from switchyard.redis_server import free_port
from workers import imaging

MODEL = "bench/picture"
SIDE = 256
PROMPT = "a lighthouse at dusk"
SEED = 7


class ImageCluster(Cluster):
    """Cluster with the image stand-in as its only provider."""

    async def start(self) -> None:
        await self.start_redis()
        self.standin_port = free_port()
        self.spawn(
            "standin", [sys.executable, "-m", "switchyard.standin_images", "--port", str(self.standin_port)]
        )
        providers = self.tmp / "providers.toml"
        providers.write_text(
            "[[providers]]\n"
            'name = "pictures"\n'
            'kind = "pollinations-image"\n'
            f'base_url = "http://127.0.0.1:{self.standin_port}"\n'
            f'models = ["{MODEL}"]\n'
        )
        self.web_port = free_port()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith("SWITCHYARD_") or k in ("REDIS_URL", "DATABASE_URL", "WEB_CONCURRENCY"))
        }
        self.env.update(
            REDIS_URL=self.redis_url,
            DATABASE_URL=f"sqlite+aiosqlite:///{self.tmp / 'bench.db'}",
            SWITCHYARD_DATA_DIR=str(self.tmp),
            SWITCHYARD_PROVIDERS=str(providers),
            SWITCHYARD_ADMIN_KEY=self.admin_key,
            SWITCHYARD_PORT=str(self.web_port),
            SWITCHYARD_LOG_LEVEL="WARNING",
        )
        self.env.update(
            {k[len("BENCH_") :]: v for k, v in os.environ.items() if k.startswith("BENCH_SWITCHYARD_")}
        )
        await self.migrate()
        await self.wait_http("standin", self.standin_port, "/models")
        self.spawn("web", [str(self.bin / "switchyard"), "web"])
        self.spawn("worker", [str(self.bin / "switchyard"), "worker", "--queue", "interactive"])
        await self.wait_http("web", self.web_port, "/health")
        self.api_key = await self.create_key()


def _request(cluster: Cluster) -> bytes:
    body = orjson.dumps({"prompt": PROMPT, "model": MODEL, "width": SIDE, "height": SIDE, "seed": SEED})
    headers = {"authorization": f"Bearer {cluster.api_key}", "content-type": "application/json"}
    return build_request("POST", "/api/image", cluster.web_port, body=body, headers=headers)


async def _provider_bytes(cluster: Cluster) -> bytes:
    """What the provider answers each call: the pipeline's input."""
    query = urlencode({"width": SIDE, "height": SIDE, "seed": SEED, "model": MODEL})
    path = f"/prompt/{quote(PROMPT, safe='')}?{query}"
    status, body = await fetch(cluster.standin_port, "GET", path)
    if status != 200:
        raise StartupError(f"the stand-in answered {status}")
    return body


def pillow_cpu_ms(data: bytes, rounds: int) -> float:
    """CPU milliseconds of one pipeline run on `data`, this thread only (median of `rounds`)."""
    spec = imaging.ImageSpec(SIDE, SIDE)
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        out = imaging.process(data, spec, max_pixels=40_000_000)
        times.append((time.thread_time() - start) * 1000)
        assert (out.width, out.height) == (SIDE, SIDE)
    return statistics.median(times)


def _check(r: LoadResult, what: str) -> None:
    if r.errors or not r.ok:
        raise RuntimeError(f"{what}: {r.summary()}")


async def measure(cluster: Cluster, count: int, clients: int) -> dict[str, Any]:
    raw = _request(cluster)
    _check(await run_load(cluster.web_port, raw, concurrency=4, count=40), "warm-up")
    one = await run_load(cluster.web_port, raw, concurrency=1, count=max(count // 4, 50))
    _check(one, "1 client")
    print(f"  1 client:  {one.summary()}", flush=True)
    before = cluster.cpu_snapshot()
    many = await run_load(cluster.web_port, raw, concurrency=clients, count=count)
    after = cluster.cpu_snapshot()
    _check(many, f"{clients} clients")
    print(f"  {clients} clients: {many.summary()}", flush=True)
    cpu_ms = {name: (after[name] - before[name]) * 1000 / many.ok for name in after if name in before}
    pillow = pillow_cpu_ms(await _provider_bytes(cluster), 100)
    worker = cpu_ms.get("worker", float("nan"))
    total = sum(v for k, v in cpu_ms.items() if k != "bench")
    per_image_1 = 1000 / one.rate
    return {
        "images_per_s_1_client": round(one.rate, 1),
        "p50_ms_1_client": round(one.percentile_ms(50), 2),
        f"images_per_s_{clients}_clients": round(many.rate, 1),
        f"p50_ms_{clients}_clients": round(many.percentile_ms(50), 2),
        "cpu_ms_per_image": {k: round(v, 2) for k, v in cpu_ms.items()},
        "pillow_cpu_ms_per_image": round(pillow, 2),
        "pillow_share_of_worker_cpu": round(pillow / worker, 3),
        "pillow_share_of_all_cpu": round(pillow / total, 3),
        "pillow_share_of_time_1_client": round(pillow / per_image_1, 3),
    }


async def _main(count: int, clients: int) -> int:
    cluster = ImageCluster()
    try:
        await cluster.start()
        print(f"bench.images: {count} x POST /api/image {SIDE}x{SIDE} PNG, instant provider", flush=True)
        figures = await measure(cluster, count, clients)
    except Exception as exc:  # noqa: BLE001 (reported, with the processes' logs)
        print(f"bench.images failed: {exc.__class__.__name__}: {exc}", flush=True)
        print(cluster.tails(("standin", "web", "worker")), flush=True)
        return 1
    finally:
        cluster.stop()
    print()
    print(
        f"images/s, 1 client:       {figures['images_per_s_1_client']}  (p50 {figures['p50_ms_1_client']} ms)"
    )
    key = f"images_per_s_{clients}_clients"
    print(
        f"images/s, {clients} clients:      {figures[key]}  (p50 {figures[f'p50_ms_{clients}_clients']} ms)"
    )
    print(f"CPU ms per image:         {figures['cpu_ms_per_image']}")
    print(
        f"Pillow: {figures['pillow_cpu_ms_per_image']} ms CPU per image = "
        f"{figures['pillow_share_of_worker_cpu']:.0%} of the worker's CPU, "
        f"{figures['pillow_share_of_all_cpu']:.0%} of all processes' CPU, "
        f"{figures['pillow_share_of_time_1_client']:.0%} of the time per image at 1 client"
    )
    print(orjson.dumps(figures).decode())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.images", description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="images in the concurrent run (default 1000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--quick", action="store_true", help="200 images")
    args = parser.parse_args(argv)
    count = 200 if args.quick else args.count
    try:
        import uvloop

        return uvloop.run(_main(count, args.clients))
    except ImportError:  # pragma: no cover
        return asyncio.run(_main(count, args.clients))


if __name__ == "__main__":
    raise SystemExit(main())
