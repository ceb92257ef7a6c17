"""`python -m bench.batch_api`: a Batch API batch against the `?batch=1` drain of as many jobs.

On the cluster of `bench.cluster` (Redis, web, one interactive worker, the chat stand-in):

1. N chat jobs submitted with `?batch=1` (64 at once), then one batch worker started: the
   drain rate, from its first finished job to an empty queue (as `make bench` times it);
2. an N-line JSONL file uploaded to `/v1/files` and run as a batch (`/v1/batches`) on that
   worker: the validation rate, the dispatch rate (lines enqueued per second), the end-to-end
   rate (created -> completed, finalize included) and the lines' own rate (first line done ->
   last line done) against the drain, and the p95 of one sequential interactive chat client
   (10 ms between calls) while the lines run, against its p95 on the idle system (the same
   client runs during the drain, so both rates are taken under the same interactive load);
   then the peak RSS of every process.

BENCH_BATCH_LINES (default 20000) is N.

`batch_api` is the same batch as a phase of `make bench` (`--only batch_api`), after the drain
of that run, on its batch worker.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

import httpx
import orjson
import redis.asyncio as aioredis

from bench.cluster import MODEL, Cluster
from bench.loadgen import LoadResult
from bench.phases import Bench, Usage

BATCH_QUEUE = "switchyard:queue:batch"
CHAT = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


def p95_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] * 1000 if ordered else float("nan")


async def interactive(http: httpx.AsyncClient, stop: asyncio.Event, samples: list[float], limit: int) -> None:
    """One synchronous chat call at a time, 10 ms apart, until `stop` (or `limit` calls)."""
    while not stop.is_set() and len(samples) < limit:
        started = time.perf_counter()
        response = await http.post(
            "/v1/chat/completions", content=CHAT, headers={"content-type": "application/json"}
        )
        if response.status_code == 200:
            samples.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float | None:
    """The process' peak resident memory (VmHWM; VmRSS: its current one), in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Start the process' peak RSS again from its current RSS (Linux: `clear_refs` 5), so a
    later VmHWM is the peak of what came after."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def batch_lines(n: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": f"hi {i}"}]},
            }
        )
        + b"\n"
        for i in range(n)
    )


async def drain(c: Cluster, http: httpx.AsyncClient, r: aioredis.Redis, n: int, idle_p95: float) -> float:
    body = CHAT
    sem = asyncio.Semaphore(64)

    async def one() -> None:
        async with sem:
            response = await http.post(
                "/v1/chat/completions?batch=1", content=body, headers={"content-type": "application/json"}
            )
            if response.status_code != 202:
                raise RuntimeError(f"submission answered {response.status_code}: {response.text[:200]}")

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    print(f"submitted {n:,} ?batch=1 jobs in {time.perf_counter() - t:.1f}s")
    c.start_batch_worker()
    n0 = await r.zcard(BATCH_QUEUE)
    t_first, n_first = 0.0, 0
    stop, samples = asyncio.Event(), []
    probe: asyncio.Task[None] | None = None
    while True:
        await asyncio.sleep(0.05)
        left = await r.zcard(BATCH_QUEUE)
        if not t_first and left < n0:
            t_first, n_first = time.perf_counter(), left
            probe = asyncio.create_task(interactive(http, stop, samples, 1_000_000))
        if left == 0:
            break
    seconds = time.perf_counter() - t_first
    stop.set()
    if probe is not None:
        await probe
    rate = n_first / seconds
    print(f"?batch=1 drain: {n_first:,} jobs in {seconds:.2f}s = {rate:,.0f} jobs/s")
    busy = p95_ms(samples)
    print(f"interactive p95 during the drain: {busy:.1f} ms ({busy / idle_p95:.2f} x idle)")
    return rate


async def batch(
    http: httpx.AsyncClient, r: aioredis.Redis, n: int, drain_rate: float, idle_p95: float
) -> None:
    lines = batch_lines(n)
    t0 = time.perf_counter()
    upload = await http.post("/v1/files", files={"file": ("r.jsonl", lines)}, data={"purpose": "batch"})
    upload.raise_for_status()
    t_uploaded = time.perf_counter()
    created = await http.post(
        "/v1/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    created.raise_for_status()
    batch_id = created.json()["id"]
    t_created = time.perf_counter()
    key = f"sy:batch:{batch_id}"
    marks: dict[str, float] = {}
    stop, samples = asyncio.Event(), []
    probe: asyncio.Task[None] | None = None
    while True:
        await asyncio.sleep(0.02)
        status, dispatched, completed, failed = await r.hmget(
            key, "status", "dispatched", "completed", "failed"
        )
        now = time.perf_counter()
        done = int(completed or 0) + int(failed or 0)
        if status != b"validating":
            marks.setdefault("validated", now)
        if int(dispatched or 0) >= n:
            marks.setdefault("dispatched", now)
        if done:
            marks.setdefault("first done", now)
            if probe is None:
                probe = asyncio.create_task(interactive(http, stop, samples, 1_000_000))
        if done >= n:
            marks.setdefault("all done", now)
            stop.set()
        if status in (b"completed", b"failed", b"expired", b"cancelled"):
            break
    t_end = time.perf_counter()
    stop.set()
    if probe is not None:
        await probe
    final = (await http.get(f"/v1/batches/{batch_id}")).json()
    create_ms = (t_created - t_uploaded) * 1000
    print(f"upload of {len(lines) / 1e6:.1f} MB: {t_uploaded - t0:.2f}s; create: {create_ms:.0f} ms")
    validation = marks["validated"] - t_created
    print(f"validation: {validation:.2f}s = {n / validation:,.0f} lines/s")
    dispatch = marks["dispatched"] - marks["validated"]
    print(f"dispatch: {n:,} lines in {dispatch:.2f}s = {n / dispatch:,.0f} lines/s")
    lines_s = marks["all done"] - marks["first done"]
    share = n / lines_s / drain_rate
    print(
        f"lines: first done -> all done {lines_s:.2f}s = {n / lines_s:,.0f} lines/s",
        f"({share:.0%} of the drain)",
    )
    print(f"finalize (output and error files): {t_end - marks['all done']:.2f}s")
    e2e = t_end - t_created
    share = n / e2e / drain_rate
    print(
        f"end to end, created -> {final['status']}: {e2e:.2f}s = {n / e2e:,.0f} lines/s",
        f"({share:.0%} of the drain)",
    )
    print(f"request_counts: {final['request_counts']}")
    busy = p95_ms(samples)
    print(
        f"interactive p95 while the lines ran: {busy:.1f} ms over {len(samples)} calls",
        f"({busy / idle_p95:.2f} x the idle {idle_p95:.1f} ms)",
    )


BATCH_DONE = (b"completed", b"failed", b"expired", b"cancelled")


async def batch_api(b: Bench) -> None:
    """A `batch_jobs`-line chat file through the Batch API on the batch worker of the drain
    before it: its end-to-end rate (created -> completed, as DESIGN.md's target counts it) and
    its lines' rate (first done -> all done) against the drain's jobs/s of this run; the peak
    RSS of every process while it runs, beside its RSS before; the interactive p95 while its
    lines run against the empty-queue p95. CPU and Redis per line over its lines' run."""
    fig = b.report["batch_api"]
    drain_rate = b.report["batch_drain"].data.get("jobs_per_s")
    idle_p95 = b.report["interactive_p95_empty"].data.get("p95_ms")
    if not drain_rate or not idle_p95:
        raise RuntimeError("needs the ?batch=1 drain and the empty-queue p95 of this run")
    worker = b.cluster.procs.get("batch")
    if worker is None or not worker.alive:
        b.cluster.start_batch_worker()
    n = b.sizes.batch_jobs
    lines = batch_lines(n)
    limit_s = b.sizes.drain_limit_s * 2
    pids = {name: pid for name, pid in b.cluster.pids().items() if name != "bench"}
    rss_before = {name: peak_rss_mb(pid, "VmRSS") for name, pid in pids.items()}
    peaks_reset = all([reset_peak_rss(pid) for pid in pids.values()])
    headers = {"authorization": f"Bearer {b.cluster.api_key}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{b.cluster.web_port}", headers=headers, timeout=120
    ) as http:
        t0 = time.perf_counter()
        upload = await http.post("/v1/files", files={"file": ("r.jsonl", lines)}, data={"purpose": "batch"})
        upload.raise_for_status()
        t_created = time.perf_counter()
        created = await http.post(
            "/v1/batches",
            json={
                "input_file_id": upload.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        created.raise_for_status()
        batch_id = created.json()["id"]
        b.progress(f"  uploaded {len(lines) / 1e6:.1f} MB in {t_created - t0:.2f}s; {batch_id} created")
        usage = Usage(b, "Batch API lines (+ probe)", "line")
        marks: dict[str, float] = {}
        stop = asyncio.Event()
        probe: asyncio.Task[LoadResult] | None = None
        status: bytes | None = None
        done = 0
        try:
            while time.perf_counter() - t_created < limit_s:
                await asyncio.sleep(0.05)
                status, dispatched, completed, failed = await b.probe.redis.hmget(
                    f"sy:batch:{batch_id}", ["status", "dispatched", "completed", "failed"]
                )
                now = time.perf_counter()
                done = int(completed or 0) + int(failed or 0)
                if status not in (None, b"validating"):
                    marks.setdefault("validated", now)
                if int(dispatched or 0) >= n:
                    marks.setdefault("dispatched", now)
                if done and probe is None:
                    marks["first done"] = now
                    await usage.start()
                    probe = asyncio.create_task(b.interactive(1_000_000, stop=stop, limit_s=limit_s))
                if done >= n and "all done" not in marks:
                    marks["all done"] = now
                    stop.set()
                    await usage.stop(n)
                if status is None or status in BATCH_DONE:
                    break
        finally:
            stop.set()
            interactive = await probe if probe is not None else None
        t_end = time.perf_counter()
        final = (await http.get(f"/v1/batches/{batch_id}")).json()
    peaks = {name: peak_rss_mb(pid) for name, pid in pids.items()}
    finalize_ms, write_ms = await b.probe.redis.hmget(
        f"sy:batch:{batch_id}", ["finalize_ms", "finalize_write_ms"]
    )
    finalized = None
    if finalize_ms is not None:
        finalized = {"job_s": int(finalize_ms) / 1000, "lines_written_s": int(write_ms or 0) / 1000}
        b.progress(
            f"  the finalize job took {finalized['job_s']:.3f}s, of which writing the lines"
            f" {finalized['lines_written_s']:.3f}s"
        )
    if final["status"] != "completed":
        raise RuntimeError(
            f"the batch ended {final['status']} ({final['request_counts']}) in {t_end - t_created:.0f}s"
        )
    e2e_s = t_end - t_created
    rate = n / e2e_s
    lines_s = marks["all done"] - marks["first done"]
    rss = {name: {"before_mb": _round(rss_before[name]), "peak_mb": _round(peaks[name])} for name in pids}
    b.progress(
        f"  {n:,} lines: validated {marks.get('validated', t_end) - t_created:.2f}s, dispatched"
        f" {marks.get('dispatched', t_end) - t_created:.2f}s, all done {marks['all done'] - t_created:.2f}s,"
        f" completed {e2e_s:.2f}s after create"
    )
    b.progress(
        "  RSS before -> peak during (MB): "
        + ", ".join(f"{name} {v['before_mb']} -> {v['peak_mb']}" for name, v in rss.items())
    )
    fig.data = {
        "jobs_per_s": round(rate, 1),
        "lines_per_s": round(n / lines_s, 1),
        "drain_jobs_per_s": drain_rate,
        "share_of_drain": round(rate / drain_rate, 3),
        "lines_share_of_drain": round(n / lines_s / drain_rate, 3),
        "seconds": round(e2e_s, 3),
        "validate_s": round(marks.get("validated", t_end) - t_created, 3),
        "dispatch_done_s": round(marks.get("dispatched", t_end) - t_created, 3),
        "finalize_s": round(t_end - marks["all done"], 3),
        "finalize_job": finalized,
        "request_counts": final["request_counts"],
        "rss": rss,
        "peak_is_of_this_phase": peaks_reset,
    }
    fig.measured = f"{rate:,.0f} jobs/s = {rate / drain_rate:.0%} of the drain's {drain_rate:,.0f}"
    passed = rate >= 0.9 * drain_rate and final["request_counts"]["completed"] == n
    if interactive is not None and interactive.ok:
        p95 = interactive.percentile_ms(95)
        fig.data.update(
            p95_ms=round(p95, 3), p95_ratio_to_empty=round(p95 / idle_p95, 3), p95_samples=interactive.ok
        )
        fig.measured += f"; interactive p95 {p95 / idle_p95:.2f} × empty"
        passed = passed and p95 / idle_p95 <= 1.5 and not interactive.errors
    else:
        fig.measured += "; no interactive sample"
        passed = False
    peak_total = sum(v["peak_mb"] or 0 for v in rss.values())
    fig.measured += f"; peak RSS {peak_total:,.0f} MB in all"
    fig.passed = passed


def _round(mb: float | None) -> float | None:
    return None if mb is None else round(mb, 1)


async def main() -> None:
    n = int(os.environ.get("BENCH_BATCH_LINES", "20000"))
    c = Cluster()
    try:
        await c.start()
        r = aioredis.Redis.from_url(c.redis_url)
        headers = {"authorization": f"Bearer {c.api_key}"}
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{c.web_port}", headers=headers, timeout=120, limits=limits
        ) as http:
            idle: list[float] = []
            await interactive(http, asyncio.Event(), idle, 300)
            idle_p95 = p95_ms(idle)
            print(f"interactive p95, idle: {idle_p95:.1f} ms over {len(idle)} calls")
            rate = await drain(c, http, r, n, idle_p95)
            await asyncio.sleep(3)  # the persister writes the drain's rows before the batch starts
            await batch(http, r, n, rate, idle_p95)
        await r.aclose()
        for name, pid in c.pids().items():
            rss = peak_rss_mb(pid)
            if rss is not None:
                print(f"peak RSS {name}: {rss:.0f} MB")
    finally:
        c.stop()


if __name__ == "__main__":
    asyncio.run(main())
