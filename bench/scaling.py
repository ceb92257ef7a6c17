"""The scaling figure: sync chat throughput at 64 clients with 1, 2 and 4 interactive worker
processes behind 1 web process, then 2 web processes (`SWITCHYARD_WEB_WORKERS=2`: uvicorn's
children share the port) with 2 workers. Each row has req/s, p50 and the CPU of each process
group as a share of one core (web with its children, workers, Redis, the stand-in upstream,
the load generator, and everything else on the machine), so the reader sees where the curve
flattens and what saturates; `conclusion` says it in one line from the numbers.

It runs last (`--only scaling`): it stops the batch worker and restarts the web process.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from bench.cluster import system_busy_seconds
from bench.loadgen import run_load
from bench.phases import Bench

CONFIGS = ((1, 1), (1, 2), (1, 4), (2, 2))  # (web processes, interactive worker processes)
FLAT_GAIN = 0.15  # one more step of workers that adds less than this has flattened
FULL_CORE_PCT = 85.0  # a single-threaded process this busy is the limit
GROUPS = ("web", "workers", "Redis", "stand-in", "load generator")
TARGET_RATIO = 1.7  # DESIGN.md: 2 workers >= 1.7 x 1 worker, on a machine with the cores for it


def _group(name: str) -> str | None:
    if name == "web":
        return "web"
    if name.startswith("worker"):
        return "workers"
    return {"redis": "Redis", "standin": "stand-in", "bench": "load generator"}.get(name)


async def _set_workers(b: Bench, n: int) -> None:
    names = [f"worker{i}" if i > 1 else "worker" for i in range(1, 5)]
    for name in names[n:]:
        b.cluster.stop_process(name)
    for name in names[:n]:
        proc = b.cluster.procs.get(name)
        if proc is None or not proc.alive:
            b.cluster.start_interactive_worker(name)
    deadline = time.monotonic() + 60
    while (seen := await b.probe.workers_seen()) != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{seen} worker heartbeats instead of {n} after 60s\n{b.cluster.tails()}")
        await asyncio.sleep(0.1)


async def measure(b: Bench, webs: int, workers: int) -> dict[str, Any]:
    raw = b.chat_request()
    port, clients = b.cluster.web_port, b.sizes.clients
    await run_load(port, raw, concurrency=clients, duration=b.sizes.throughput_warmup_s)
    cpu0, busy0, t0 = b.cluster.tree_cpu_snapshot(), system_busy_seconds(), time.perf_counter()
    r = await run_load(port, raw, concurrency=clients, duration=b.sizes.throughput_s)
    elapsed = time.perf_counter() - t0
    cpu1, busy = b.cluster.tree_cpu_snapshot(), system_busy_seconds() - busy0
    if r.ok == 0:
        raise RuntimeError(f"{webs} web + {workers} workers: no successful request ({r.error_summary()})")
    pct: dict[str, float] = dict.fromkeys(GROUPS, 0.0)
    for name, after in cpu1.items():
        group = _group(name)
        if group is not None and name in cpu0:
            pct[group] += 100 * (after - cpu0[name]) / elapsed
    machine = 100 * busy / elapsed
    pct["others"] = max(0.0, machine - sum(pct.values()))
    return {
        "web": webs,
        "workers": workers,
        "requests_per_s": round(r.rate, 1),
        "p50_ms": round(r.percentile_ms(50), 3),
        "p99_ms": round(r.percentile_ms(99), 3),
        "errors": r.errors,
        "cpu_pct": {k: round(v, 1) for k, v in pct.items()},
        "machine_pct": round(machine, 1),
    }


async def scaling(b: Bench) -> None:
    fig = b.report["scaling"]
    b.cluster.stop_process("batch")  # the workers group is the interactive workers alone
    rows: list[dict[str, Any]] = []
    webs_now = 1
    for webs, workers in CONFIGS:
        if webs != webs_now:
            await b.cluster.restart_web(webs)
            webs_now = webs
        await _set_workers(b, workers)
        row = await measure(b, webs, workers)
        rows.append(row)
        cpu = ", ".join(f"{k} {v:.0f}%" for k, v in row["cpu_pct"].items())
        b.progress(
            f"  {webs} web + {workers} workers: {row['requests_per_s']:,.0f} req/s,"
            f" p50 {row['p50_ms']:.2f} ms, {row['errors']} errors; CPU {cpu}"
        )
    cpus = os.cpu_count() or 1
    busiest_others = max(r["cpu_pct"]["others"] for r in rows)
    if busiest_others > 15:
        b.report.notes.append(
            f"processes outside the benchmark used up to {busiest_others:.0f}% of a core during 'scaling':"
            " its rows are lower, and flatter, than on an otherwise idle machine"
        )
    fig.data = {"rows": rows, "cpus": cpus, "conclusion": conclusion(rows, cpus)}
    one, two = rows[0]["requests_per_s"], rows[1]["requests_per_s"]
    ratio = two / one if one else 0.0
    fig.data["two_workers_ratio"] = round(ratio, 3)
    fig.measured = " / ".join(f"{r['requests_per_s']:,.0f}" for r in rows[:3]) + " req/s with 1/2/4 workers"
    fig.measured += f", {rows[3]['requests_per_s']:,.0f} with 2 web + 2; 2 workers = {ratio:.2f} × 1"
    errors = sum(r["errors"] for r in rows)
    if errors:
        fig.measured += f" ({errors} errors)"
    fig.passed = ratio >= TARGET_RATIO and not errors


def conclusion(rows: list[dict[str, Any]], cpus: int) -> str:
    """One line from the numbers: where the worker curve flattens, what is saturated there,
    and what a second web process adds."""
    by = {(r["web"], r["workers"]): r for r in rows}
    curve = [by[(1, n)] for n in (1, 2, 4) if (1, n) in by]
    if not curve:
        return "no measurement"
    head, where = f"{curve[0]['requests_per_s']:,.0f} req/s with 1 worker", curve[0]
    for prev, cur in zip(curve, curve[1:], strict=False):
        gain = _rate(cur) / _rate(prev) - 1
        where = cur
        if gain < FLAT_GAIN:
            head = f"flattens at {prev['workers']} worker{'s' if prev['workers'] > 1 else ''}"
            head += f" ({cur['workers']} workers: {gain:+.0%})"
            break
        head = f"still rising at {cur['workers']} workers ({gain:+.0%} over {prev['workers']})"
    line = f"{head}: {bottleneck(where, cpus)}"
    if (2, 2) in by and (1, 2) in by:
        extra = _rate(by[(2, 2)]) / _rate(by[(1, 2)]) - 1
        line += f"; a 2nd web process with 2 workers: {extra:+.0%}"
    return line


def _rate(row: dict[str, Any]) -> float:
    return float(row["requests_per_s"]) or 1e-9


def bottleneck(row: dict[str, Any], cpus: int) -> str:
    pct = row["cpu_pct"]
    machine = row["machine_pct"]
    shares = sorted(((v, "other processes" if k == "others" else k) for k, v in pct.items()), reverse=True)
    top = ", ".join(f"{k} {v:.0f}%" for v, k in shares[:3])
    if machine >= 0.9 * cpus * 100:
        return f"the {cpus} cores are saturated ({machine:.0f}% of {cpus * 100}%: {top})"
    per_process = {
        "the web process": pct["web"] / row["web"],
        "Redis": pct["Redis"],
        "each worker": pct["workers"] / row["workers"],
    }
    name, busiest = max(per_process.items(), key=lambda kv: kv[1])
    if busiest >= FULL_CORE_PCT:
        return f"{name} at {busiest:.0f}% of a core (machine {machine:.0f}% of {cpus * 100}%)"
    return f"no process at a full core and the machine at {machine:.0f}% of {cpus * 100}% ({top})"
