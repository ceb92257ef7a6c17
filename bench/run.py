"""The benchmark run: start the cluster, run the phases in order, stop it, print the figures.

`python -m bench [--quick] [--only FIGURE ...]`. The table and then the JSON object go to stdout; the JSON is
also written to `bench/results/latest.json`. Exit status: 0 when every phase ran (targets
missed or not), 1 when a phase failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.batch_api import batch_api
from bench.cluster import Cluster
from bench.pages import pages
from bench.phases import (
    Bench,
    Sizes,
    added_latency,
    batch_drain,
    batch_submit,
    p95_empty,
    p95_waiting,
    redis_idle,
    run_phase,
    throughput,
    warm_up,
)
from bench.probes import Probe
from bench.report import Report
from bench.scaling import scaling
from bench.ttft import stream_ttft

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
PHASE_LIMIT_S = 420.0  # a safety net: every loop inside a phase is bounded far below this

PHASES = [
    ("added latency (1 client, direct vs through Switchyard)", ("added_latency",), added_latency),
    ("interactive p95, empty queue", ("interactive_p95_empty",), p95_empty),
    ("time to first streamed token (1 client, direct vs through Switchyard)", ("stream_ttft",), stream_ttft),
    ("sync throughput (64 clients)", ("sync_throughput",), throughput),
    ("?batch=1 submissions (64 clients, no batch worker)", ("batch_submit",), batch_submit),
    ("interactive p95 while batch jobs wait", ("interactive_p95_waiting",), p95_waiting),
    ("drain by 1 batch worker (+ interactive p95)", ("batch_drain", "interactive_p95_draining"), batch_drain),
    ("a Batch API file on that batch worker (+ interactive p95, peak RSS)", ("batch_api",), batch_api),
    ("Redis commands with idle workers", ("redis_idle",), redis_idle),
    ("dashboard pages (20 GETs each, a signed-in user)", ("pages",), pages),
    # last: it stops the batch worker and restarts the web process
    ("scaling: 1, 2, 4 workers and 2 web processes (64 clients)", ("scaling",), scaling),
]


# What a phase needs run before it (the empty-queue baseline, a queue to wait or drain).
NEEDS = {
    "interactive_p95_waiting": ("interactive_p95_empty", "batch_submit"),
    "batch_drain": ("interactive_p95_empty", "batch_submit"),
    "interactive_p95_draining": ("interactive_p95_empty", "batch_submit"),
    "batch_api": ("interactive_p95_empty", "batch_submit", "batch_drain"),  # its rate beside the drain's
}


def selected(only: list[str] | None) -> set[str] | None:
    """The figures to measure: those asked for and those they need; None for all."""
    if not only:
        return None
    keys = set(only)
    for key in only:
        keys.update(NEEDS.get(key, ()))
    return keys


async def run_all(cluster: Cluster, report: Report, sizes: Sizes, only: set[str] | None = None) -> None:
    t0 = time.monotonic()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    load = ", ".join(f"{x:.2f}" for x in report.load_at_start)
    print(
        f"[{0:6.1f}s] load average {load}; starting Redis, stand-in, web, interactive worker ...", flush=True
    )
    try:
        await cluster.start()
    except Exception as exc:  # noqa: BLE001
        report.fail_unmeasured(f"start-up failed: {exc.__class__.__name__}: {exc}")
        print(f"start-up failed: {exc}\n{cluster.tails(('standin', 'web', 'worker'))}", flush=True)
        return
    assert cluster.redis is not None
    probe = Probe(cluster.redis.url)
    b = Bench(cluster, probe, report, sizes, t0=t0)
    b.progress(f"up: web :{cluster.web_port}, stand-in :{cluster.standin_port}, Redis :{cluster.redis.port}")
    try:
        all_keys = tuple(report.figures)
        if not await run_phase(b, "warm-up", all_keys, warm_up):
            return
        for name, keys, fn in PHASES:
            if only is None or only.intersection(keys):
                await run_phase(b, name, keys, _bounded(fn))
    finally:
        await probe.close()


def _bounded(fn: Callable[[Bench], Awaitable[None]]) -> Callable[[Bench], Awaitable[None]]:
    async def run(b: Bench) -> None:
        await asyncio.wait_for(fn(b), PHASE_LIMIT_S)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run with smaller counts (figures not comparable)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="FIGURE",
        help="measure these figures (and what they need) only, e.g. --only batch_drain",
    )
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    report = Report(quick=args.quick)
    unknown = sorted(set(args.only or ()) - set(report.figures))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; figures: {', '.join(report.figures)}")
    cluster = Cluster()
    # Ctrl-C cancels the run (asyncio.Runner's own handling), even when started with SIGINT
    # ignored; SIGTERM and SIGHUP do the same through `run_all`'s handlers.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = False
    try:
        import uvloop

        uvloop.run(run_all(cluster, report, sizes, selected(args.only)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        report.notes.append("interrupted")
        report.fail_unmeasured("interrupted before this figure was measured")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the clean-up finish
        print("stopping everything ...", flush=True)
        cluster.stop()
    report.finished = time.time()
    print_report(report)
    try:
        report.write_json(args.json_out)
        print(f"(written to {args.json_out})")
    except OSError as exc:
        print(f"cannot write {args.json_out}: {exc}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if any(f.error for f in report.figures.values()) else 0


def print_report(report: Report) -> None:
    title = "Switchyard performance (DESIGN.md targets)" + (
        " -- QUICK RUN, not comparable" if report.quick else ""
    )
    print(f"\n{title}\n")
    print(report.table())
    cpu = report.cpu_table()
    if cpu:
        print("\nCPU per unit of work by process (ms), and share of one core during the phase:\n")
        print(cpu)
    scale = report.scaling_table()
    if scale:
        print("\nScaling: sync chat at 64 clients; CPU of each process group in % of one core:\n")
        print(scale)
    redis = report.redis_lines()
    if redis:
        print("\n" + redis)
    for note in report.notes:
        print(f"note: {note}")
    print()
    print(report.dumps(), flush=True)
