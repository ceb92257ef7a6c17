"""One function per figure of the performance table, run in order against one cluster.

Each phase fills its figures in the `Report`; an exception in a phase is caught by
`run_phase`, which marks that phase's unmeasured figures FAILED with the reason (and the
tails of the process logs) so the next phases still run.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.cluster import MODEL, Cluster, system_busy_seconds
from bench.loadgen import LoadResult, build_request, fetch, run_load
from bench.probes import BATCH_HEALTH_KEY, BATCH_QUEUE, Probe
from bench.report import Report

OTHERS = "others (not ours)"
CHAT_BODY = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


@dataclass
class Sizes:
    """How much work each phase does (`--quick` shrinks it for a smoke run)."""

    latency_n: int = 2000
    latency_warmup: int = 300
    p95_n: int = 800
    p95_pause_s: float = 0.010  # the interactive probe's think time: light enough not to starve a drain
    clients: int = 64
    throughput_s: float = 10.0
    throughput_warmup_s: float = 2.0
    batch_jobs: int = 20_000
    submit_limit_s: float = 60.0
    drain_limit_s: float = 90.0
    drain_usage_s: float = 3.0  # CPU and Redis per batch job: this long, before the interactive probe
    persist_limit_s: float = 20.0
    idle_s: float = 5.0
    ttft_n: int = 200  # streamed calls per path (direct, through Switchyard)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            latency_n=300,
            latency_warmup=50,
            p95_n=200,
            throughput_s=3.0,
            throughput_warmup_s=1.0,
            batch_jobs=2000,
            drain_usage_s=1.0,
            ttft_n=40,
        )


@dataclass
class Bench:
    cluster: Cluster
    probe: Probe
    report: Report
    sizes: Sizes
    t0: float = field(default_factory=time.monotonic)

    def progress(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    def chat_request(self, batch: bool = False) -> bytes:
        path = "/v1/chat/completions" + ("?batch=1" if batch else "")
        headers = {"authorization": f"Bearer {self.cluster.api_key}", "content-type": "application/json"}
        return build_request("POST", path, self.cluster.web_port, body=CHAT_BODY, headers=headers)

    def direct_request(self) -> bytes:
        headers = {"content-type": "application/json"}
        return build_request(
            "POST", "/v1/chat/completions", self.cluster.standin_port, body=CHAT_BODY, headers=headers
        )

    async def interactive(
        self, count: int, *, stop: asyncio.Event | None = None, limit_s: float = 60.0
    ) -> LoadResult:
        """The interactive probe: 1 client, sync calls, `p95_pause_s` apart (same in every p95 figure)."""
        return await run_load(
            self.cluster.web_port,
            self.chat_request(),
            concurrency=1,
            count=count,
            duration=limit_s,
            stop=stop,
            pause_s=self.sizes.p95_pause_s,
        )


async def run_phase(
    b: Bench, name: str, keys: tuple[str, ...], fn: Callable[[Bench], Awaitable[None]]
) -> bool:
    """Run one phase; on an exception mark its unmeasured figures FAILED and return False."""
    b.progress(f"{name} ...")
    try:
        await fn(b)
        return True
    except Exception as exc:  # noqa: BLE001 (a failed phase is reported, the run goes on)
        reason = f"{name}: {exc.__class__.__name__}: {exc}".strip()
        dead = b.cluster.dead()
        if dead:
            reason += f" (exited: {', '.join(dead)})"
        for key in keys:
            if not b.report[key].measured:
                b.report[key].fail(reason)
        b.progress(f"{name} FAILED: {reason}")
        tails = b.cluster.tails()
        if tails:
            print(tails, flush=True)
        return False


# --- accounting helpers ---------------------------------------------------------------------
class Usage:
    """CPU per process and Redis commands between `start()` and `stop(units)`, into the report."""

    def __init__(self, b: Bench, phase: str, unit: str) -> None:
        self.b, self.phase, self.unit = b, phase, unit
        self.cpu0: dict[str, float] = {}
        self.busy0 = 0.0
        self.t0 = 0.0
        self.cmd0: dict[str, int] = {}

    async def start(self) -> None:
        self.cmd0 = await redis_counters(self.b.probe)
        self.cpu0 = self.b.cluster.cpu_snapshot()
        self.busy0 = system_busy_seconds()
        self.t0 = time.perf_counter()

    async def stop(self, units: int) -> None:
        elapsed = time.perf_counter() - self.t0
        cpu1 = self.b.cluster.cpu_snapshot()
        busy = system_busy_seconds() - self.busy0
        cmd1 = await redis_counters(self.b.probe)
        units = max(units, 1)
        used_by = {name: after - self.cpu0[name] for name, after in cpu1.items() if name in self.cpu0}
        used_by[OTHERS] = max(0.0, busy - sum(used_by.values()))
        procs = {
            name: {
                "cpu_s": round(used, 3),
                "ms_per_unit": used * 1000 / units,
                "core_pct": 100 * used / elapsed if elapsed else 0.0,
            }
            for name, used in used_by.items()
        }
        others_pct = procs[OTHERS]["core_pct"]
        if others_pct > 15:
            self.b.report.notes.append(
                f"processes outside the benchmark used {others_pct:.0f}% of a core during '{self.phase}': "
                "its figures are lower than on an otherwise idle machine"
            )
        self.b.report.cpu[self.phase] = {
            "unit": self.unit,
            "units": units,
            "elapsed_s": round(elapsed, 3),
            "processes": procs,
        }
        diff = {k: v - self.cmd0.get(k, 0) for k, v in cmd1.items() if k != "total" and k != "info"}
        diff = {k: v for k, v in diff.items() if v > 0}
        total = cmd1.get("total", 0) - self.cmd0.get("total", 0) - 2  # the two INFO of the first snapshot
        top = dict(sorted(((k, v / units) for k, v in diff.items()), key=lambda kv: -kv[1])[:6])
        self.b.report.redis[self.phase] = {"unit": self.unit, "per_unit": total / units, "top_per_unit": top}


async def redis_counters(probe: Probe) -> dict[str, int]:
    """`total` commands processed and calls per command (Lua's inner calls included)."""
    stats = await probe.redis.info("stats")
    cmdstats = await probe.redis.info("commandstats")
    out = {"total": int(stats["total_commands_processed"])}
    for name, entry in cmdstats.items():
        out[name.removeprefix("cmdstat_")] = int(entry["calls"])
    return out


def ms(x: float) -> str:
    return f"{x:.2f} ms"


def _check_clean(r: LoadResult, what: str) -> None:
    if r.ok == 0:
        raise RuntimeError(f"{what}: no successful request ({r.error_summary() or 'no answer'})")


# --- the phases -----------------------------------------------------------------------------
async def warm_up(b: Bench) -> None:
    r = await run_load(
        b.cluster.web_port, b.chat_request(), concurrency=1, count=b.sizes.latency_warmup, duration=60
    )
    _check_clean(r, "warm-up through Switchyard")
    b.progress(f"  warm-up through Switchyard: {r.summary()}")
    if r.errors:
        raise RuntimeError(f"warm-up calls failed: {r.error_summary()}")


async def added_latency(b: Bench) -> None:
    """Direct calls to the stand-in and calls through Switchyard, 1 client, in alternating blocks."""
    fig = b.report["added_latency"]
    direct_raw, sy_raw = b.direct_request(), b.chat_request()
    port_d, port_s = b.cluster.standin_port, b.cluster.web_port
    await run_load(port_d, direct_raw, concurrency=1, count=b.sizes.latency_warmup, duration=30)
    direct, through = LoadResult(1), LoadResult(1)
    blocks = 4
    for _ in range(blocks):
        for port, raw, acc in ((port_d, direct_raw, direct), (port_s, sy_raw, through)):
            r = await run_load(port, raw, concurrency=1, count=b.sizes.latency_n // blocks, duration=60)
            acc.latencies += r.latencies
            acc.errors += r.errors
            acc.statuses.update(r.statuses)
            acc.exceptions.update(r.exceptions)
            acc.elapsed += r.elapsed
    _check_clean(direct, "direct calls")
    _check_clean(through, "calls through Switchyard")
    b.progress(f"  direct:  {direct.summary()}")
    b.progress(f"  through: {through.summary()}")
    add50 = through.percentile_ms(50) - direct.percentile_ms(50)
    add99 = through.percentile_ms(99) - direct.percentile_ms(99)
    fig.data = {
        "added_p50_ms": round(add50, 3),
        "added_p99_ms": round(add99, 3),
        "direct_p50_ms": round(direct.percentile_ms(50), 3),
        "direct_p99_ms": round(direct.percentile_ms(99), 3),
        "switchyard_p50_ms": round(through.percentile_ms(50), 3),
        "switchyard_p99_ms": round(through.percentile_ms(99), 3),
        "samples": through.ok,
        "errors": through.errors + direct.errors,
    }
    fig.measured = f"p50 +{add50:.2f} ms, p99 +{add99:.2f} ms"
    if through.errors or direct.errors:
        fig.measured += f" ({through.errors + direct.errors} errors)"
    fig.passed = add50 <= 1.0 and add99 <= 4.0 and not (through.errors or direct.errors)


def _p95_figure(b: Bench, key: str, r: LoadResult, extra: dict[str, Any] | None = None) -> None:
    fig = b.report[key]
    _check_clean(r, fig.label)
    p95 = r.percentile_ms(95)
    fig.data = {
        "p95_ms": round(p95, 3),
        "p50_ms": round(r.percentile_ms(50), 3),
        "samples": r.ok,
        "errors": r.errors,
        **(extra or {}),
    }
    fig.measured = f"p95 {ms(p95)}" + (f" ({r.errors} errors)" if r.errors else "")
    if fig.baseline:
        return
    base = b.report["interactive_p95_empty"].data.get("p95_ms")
    if base is None:
        fig.measured += " (no baseline)"
        fig.passed = False
        return
    ratio = p95 / base
    fig.data["ratio_to_empty"] = round(ratio, 3)
    fig.measured += f" = {ratio:.2f} × empty"
    fig.passed = ratio <= 1.5 and not r.errors


async def p95_empty(b: Bench) -> None:
    queued = await b.probe.zcard(BATCH_QUEUE)
    if queued:
        raise RuntimeError(f"the batch queue is not empty ({queued} jobs)")
    r = await b.interactive(b.sizes.p95_n)
    b.progress(f"  {r.summary()}")
    _p95_figure(b, "interactive_p95_empty", r)


async def throughput(b: Bench) -> None:
    fig = b.report["sync_throughput"]
    raw = b.chat_request()
    port, clients = b.cluster.web_port, b.sizes.clients
    w = await run_load(port, raw, concurrency=clients, duration=b.sizes.throughput_warmup_s)
    b.progress(f"  warm-up: {w.summary()}")
    usage = Usage(b, "sync chat, 64 clients", "request")
    await usage.start()
    r = await run_load(port, raw, concurrency=clients, duration=b.sizes.throughput_s)
    await usage.stop(r.ok)
    b.progress(f"  {r.summary()}")
    _check_clean(r, "throughput run")
    fig.data = {
        "requests_per_s": round(r.rate, 1),
        "requests": r.ok,
        "errors": r.errors,
        "seconds": round(r.elapsed, 3),
        "p50_ms": round(r.percentile_ms(50), 3),
        "p99_ms": round(r.percentile_ms(99), 3),
        "error_detail": r.error_summary() or None,
    }
    fig.measured = f"{r.rate:,.0f} req/s, {r.errors} errors"
    fig.passed = r.rate >= 2500 and r.errors == 0


async def batch_submit(b: Bench) -> None:
    fig = b.report["batch_submit"]
    before = await b.probe.zcard(BATCH_QUEUE)
    if before:
        raise RuntimeError(f"the batch queue is not empty ({before} jobs)")
    usage = Usage(b, "?batch=1 submissions", "job")
    await usage.start()
    r = await run_load(
        b.cluster.web_port,
        b.chat_request(batch=True),
        concurrency=b.sizes.clients,
        count=b.sizes.batch_jobs,
        duration=b.sizes.submit_limit_s,
        keep_bodies=1,
    )
    accepted = r.statuses.get(202, 0)
    await usage.stop(accepted)
    b.progress(f"  {r.summary()}")
    queued = await b.probe.zcard(BATCH_QUEUE)
    rate = accepted / r.elapsed if r.elapsed else 0.0
    fig.data = {
        "jobs_per_s": round(rate, 1),
        "accepted": accepted,
        "errors": r.errors,
        "seconds": round(r.elapsed, 3),
        "queued_after": queued,
        "p50_ms": round(r.percentile_ms(50), 3),
        "p99_ms": round(r.percentile_ms(99), 3),
        "error_detail": r.error_summary() or None,
    }
    if accepted == 0:
        raise RuntimeError(f"no submission was accepted ({r.error_summary()})")
    # One sample: the 202 body has the job, and the job is visible and queued.
    sample = orjson.loads(r.bodies[0])
    job_id = sample["id"]  # the OpenAI routes' 202 is an OpenAI-style job object
    status, body = await fetch(
        b.cluster.web_port,
        "GET",
        f"/api/v1/jobs/{job_id}",
        headers={"authorization": f"Bearer {b.cluster.api_key}"},
    )
    sample_status = orjson.loads(body)["data"]["status"] if status == 200 else f"HTTP {status}"
    fig.data["sample_job"] = {"id": job_id, "status": sample_status}
    fig.measured = f"{rate:,.0f} jobs/s ({accepted:,} accepted, {r.errors} errors)"
    fig.passed = rate >= 8000 and r.errors == 0 and accepted == b.sizes.batch_jobs
    if queued != accepted:
        b.report.notes.append(f"after the submissions the batch queue held {queued} jobs, not {accepted}")
    if sample_status != "queued":
        b.report.notes.append(
            f"a submitted job was {sample_status!r}, not 'queued', with no batch worker running"
        )


async def p95_waiting(b: Bench) -> None:
    waiting = await b.probe.zcard(BATCH_QUEUE)
    if waiting == 0:
        raise RuntimeError("no batch job is waiting (the submissions failed)")
    r = await b.interactive(b.sizes.p95_n)
    b.progress(f"  {r.summary()} with {waiting:,} batch jobs waiting")
    _p95_figure(b, "interactive_p95_waiting", r, {"batch_jobs_waiting": waiting})


async def batch_drain(b: Bench) -> None:
    """Start the batch worker; time the queue from its first finished job to empty.

    CPU and Redis per job are taken over the first `drain_usage_s` seconds of the drain, then
    again from there to the end, while the interactive probe runs.
    """
    fig = b.report["batch_drain"]
    n0 = await b.probe.zcard(BATCH_QUEUE)
    if n0 == 0:
        raise RuntimeError("no batch job is waiting (the submissions failed)")
    usage = Usage(b, "batch drain (alone)", "job")
    usage_probe = Usage(b, "batch drain (+ probe)", "job")
    n_probe = 0
    spawned = time.perf_counter()
    proc = b.cluster.start_batch_worker()
    stop = asyncio.Event()
    load: asyncio.Task[LoadResult] | None = None
    t_first: float | None = None
    n_first = 0
    left = n0
    t_end = spawned
    deadline = spawned + b.sizes.drain_limit_s
    still_s = longest_still_s = run_s = 0.0  # how long the queue length did not move
    try:
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
            before, t_before = left, t_end
            left = await b.probe.zcard(BATCH_QUEUE)
            now = t_end = time.perf_counter()
            if t_first is not None:
                if left == before:
                    run_s += now - t_before
                    still_s += now - t_before
                    longest_still_s = max(longest_still_s, run_s)
                else:
                    run_s = 0.0
            if t_first is None and left < n0:
                t_first, n_first = now, left
                await usage.start()
                b.progress(f"  the batch worker finished its first jobs {now - spawned:.1f}s after its start")
            if t_first is not None and load is None and (now - t_first >= b.sizes.drain_usage_s or left == 0):
                await usage.stop(n_first - left)
                n_probe = left
                await usage_probe.start()
                load = asyncio.create_task(b.interactive(1_000_000, stop=stop, limit_s=b.sizes.drain_limit_s))
            if left == 0:
                break
            if not proc.alive:
                raise RuntimeError(f"the batch worker exited ({proc.popen.returncode}) with {left} jobs left")
    finally:
        stop.set()
        interactive = await load if load is not None else None
    if load is not None:
        await usage_probe.stop(n_probe - left)
    if t_first is None:
        raise RuntimeError(f"the batch worker finished no job in {b.sizes.drain_limit_s:g}s")
    drained = n_first - left
    seconds = max(t_end - t_first, 1e-9)
    rate = drained / seconds
    b.progress(f"  drained {drained:,} jobs in {seconds:.2f}s = {rate:,.0f} jobs/s ({left} left)")
    if still_s > 0.2 * seconds:
        b.progress(
            f"  the queue did not move for {still_s:.1f}s of {seconds:.1f}s (longest {longest_still_s:.1f}s)"
        )
        b.report.notes.append(
            f"during the drain the batch queue did not move for {still_s:.1f}s of {seconds:.1f}s "
            f"(longest pause {longest_still_s:.1f}s) although jobs were waiting"
        )
    states = await b.probe.job_states("batch")
    succeeded = states.get("succeeded", 0)
    b.progress(f"  batch job states in Redis: {dict(states)}")
    fig.data = {
        "jobs_per_s": round(rate, 1),
        "drained": drained,
        "seconds": round(seconds, 3),
        "jobs_per_s_from_spawn": round((n0 - left) / (t_end - spawned), 1),
        "left": left,
        "queue_still_s": round(still_s, 2),
        "queue_longest_still_s": round(longest_still_s, 2),
        "states": dict(states),
        "succeeded": succeeded,
    }
    fig.measured = f"{rate:,.0f} jobs/s, {succeeded:,} succeeded"
    fig.passed = rate >= 3000 and left == 0 and succeeded == b.sizes.batch_jobs
    if left:
        fig.measured += f", {left:,} left after {b.sizes.drain_limit_s:g}s"
    await persisted(b, fig.data, b.sizes.persist_limit_s)
    if interactive is None:
        raise RuntimeError("the interactive probe did not run")
    b.progress(f"  interactive while draining: {interactive.summary()}")
    _p95_figure(b, "interactive_p95_draining", interactive)


async def persisted(b: Bench, data: dict[str, Any], limit_s: float) -> None:
    """Wait for the persister to write the finished jobs; count the batch rows in the database."""
    start = time.perf_counter()
    pending = await b.probe.unpersisted()
    while pending and time.perf_counter() - start < limit_s:
        await asyncio.sleep(0.2)
        pending = await b.probe.unpersisted()
    waited = time.perf_counter() - start
    rows = await asyncio.to_thread(_count_rows, str(b.cluster.tmp / "bench.db"))
    data["persist_wait_s"] = round(waited, 2)
    data["persist_pending"] = pending
    data["db_rows"] = rows
    b.progress(f"  database after {waited:.1f}s: {rows} ({pending} jobs still waiting to be written)")
    if pending:
        b.report.notes.append(
            f"{pending} finished jobs were still not in the database {limit_s:g}s after the drain"
        )


def _count_rows(path: str) -> dict[str, int] | str:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
            rows = db.execute("SELECT priority || ':' || status, count(*) FROM jobs GROUP BY 1").fetchall()
        return {k: int(n) for k, n in rows}
    except sqlite3.Error as exc:
        return f"unreadable: {exc}"


async def redis_idle(b: Bench) -> None:
    fig = b.report["redis_idle"]
    left = await b.probe.zcard(BATCH_QUEUE)
    batch = b.cluster.procs.get("batch")
    if left or batch is None or not batch.alive:
        # Idle means idle: the jobs the drain left are dropped, and a batch worker started anew.
        b.progress(f"  {left:,} batch jobs left: dropping them and (re)starting the batch worker")
        b.cluster.stop_process("batch")
        await b.probe.redis.delete(BATCH_QUEUE)
        if left:
            b.report.notes.append(
                f"the {left:,} batch jobs left after the drain were dropped before the idle window"
            )
        b.cluster.start_batch_worker()
        if not await b.probe.wait_for_key(BATCH_HEALTH_KEY, 30.0):
            raise RuntimeError("the restarted batch worker did not report healthy within 30s")
    workers = [n for n in ("worker", "batch") if n in b.cluster.procs and b.cluster.procs[n].alive]
    if len(workers) < 2:
        raise RuntimeError(f"only {workers or 'no worker'} running")
    for _ in range(50):  # idle: nothing left to persist
        if not await b.probe.unpersisted():
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    c0 = await b.probe.commands_processed()
    before = await redis_counters(b.probe)
    t0 = time.perf_counter()
    await asyncio.sleep(b.sizes.idle_s)
    after = await redis_counters(b.probe)
    seconds = time.perf_counter() - t0
    c1 = await b.probe.commands_processed()
    own = 5  # our INFO calls counted in c1: the first one and the four of redis_counters
    commands = c1 - c0 - own
    breakdown = {k: v - before.get(k, 0) for k, v in after.items() if k not in ("total", "info")}
    breakdown = {k: v for k, v in breakdown.items() if v > 0}
    per_s = commands / seconds
    per_worker = per_s / len(workers)
    fig.data = {
        "commands": commands,
        "seconds": round(seconds, 2),
        "per_s": round(per_s, 2),
        "per_worker_per_s": round(per_worker, 2),
        "workers": workers,
        "commands_by_name": breakdown,
    }
    b.progress(f"  {commands} commands in {seconds:.1f}s with {len(workers)} idle workers: {breakdown}")
    fig.measured = f"{per_worker:.2f} per worker ({per_s:.2f}/s, {len(workers)} workers + web)"
    fig.passed = per_worker <= 10
