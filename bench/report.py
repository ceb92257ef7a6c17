"""The figures of DESIGN.md's performance table, and how they are printed and saved.

A `Figure` holds one row: what was measured (text for the table, numbers in `data` for the
JSON), its target and whether it was met. A phase that fails marks its figures FAILED with
the reason and the run goes on. `Report` also carries the CPU and Redis breakdowns that
say where the time went.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    key: str
    label: str
    target: str
    measured: str = ""
    passed: bool | None = None  # None: a baseline, or not measured
    baseline: bool = False
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "FAILED"
        if not self.measured:
            return "not run"
        if self.baseline:
            return "baseline"
        return "PASS" if self.passed else "MISS"

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "target": self.target,
            "measured": self.measured or None,
            "verdict": self.verdict,
            "passed": None if self.baseline or self.error else self.passed,
            "error": self.error,
            **self.data,
        }


def default_figures() -> list[Figure]:
    return [
        Figure("added_latency", "added latency of a sync chat call, 1 client", "p50 ≤ 1 ms, p99 ≤ 4 ms"),
        Figure(
            "sync_throughput", "sync chat throughput, 64 clients, 1 web + 1 worker", "≥ 2,500 req/s, 0 errors"
        ),
        Figure("batch_submit", "?batch=1 submissions, 64 clients", "≥ 8,000 jobs/s accepted"),
        Figure(
            "batch_drain", "drain of 20,000 queued batch jobs, 1 worker", "≥ 3,000 jobs/s, 20,000 succeeded"
        ),
        Figure(
            "interactive_p95_empty", "interactive p95, 1 client, empty queue", "(the baseline)", baseline=True
        ),
        Figure(
            "interactive_p95_waiting",
            "interactive p95 while 20,000 batch jobs wait",
            "≤ 1.5 × empty-queue p95",
        ),
        Figure(
            "interactive_p95_draining",
            "interactive p95 while a batch worker drains",
            "≤ 1.5 × empty-queue p95",
        ),
        Figure(
            "batch_api",
            "a 20,000-line Batch API file, end to end",
            "≥ 90 % of the ?batch=1 drain, interactive p95 ≤ 1.5 × empty, flat memory",
        ),
        Figure("redis_idle", "Redis commands/s with idle workers", "≤ 10 per worker"),
        Figure("pages", "dashboard pages, median of 20 GETs each, signed in", "≤ 50 ms per page"),
        Figure(
            "scaling",
            "sync chat throughput, 64 clients, by processes (1/2/4 workers; 2 web + 2)",
            "2 workers ≥ 1.7 × 1 worker (with the cores for it)",
        ),
        Figure(
            "stream_ttft",
            "time to first streamed token added, 1 client",
            "a few ms (p50 ≤ 3 ms, p99 ≤ 10 ms added)",
        ),
    ]


@dataclass
class Report:
    figures: dict[str, Figure] = field(default_factory=lambda: {f.key: f for f in default_figures()})
    cpu: dict[str, Any] = field(default_factory=dict)  # phase -> CPU per unit of work per process
    redis: dict[str, Any] = field(default_factory=dict)  # phase -> Redis commands per unit of work
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    quick: bool = False
    load_at_start: tuple[float, ...] = field(
        default_factory=lambda: tuple(round(x, 2) for x in os.getloadavg())
    )

    def __getitem__(self, key: str) -> Figure:
        return self.figures[key]

    def fail_unmeasured(self, reason: str) -> None:
        for fig in self.figures.values():
            if not fig.measured:
                fig.fail(reason)

    # --- text --------------------------------------------------------------------------------
    def table(self) -> str:
        rows = [("figure", "measured", "target", "result")]
        notes: list[str] = []
        for fig in self.figures.values():
            result = fig.verdict
            if fig.error is not None:
                notes.append(fig.error)
                result = f"FAILED [{len(notes)}]"
            rows.append((fig.label, fig.measured or "-", fig.target, result))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = []
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        for i, note in enumerate(notes, 1):
            lines.append(f"[{i}] {note}")
        return "\n".join(lines)

    def cpu_table(self) -> str:
        if not self.cpu:
            return ""
        phases = list(self.cpu)
        procs: list[str] = []
        for phase in phases:
            procs += [p for p in self.cpu[phase]["processes"] if p not in procs]
        header = ["process"] + [f"{p} (ms/{self.cpu[p]['unit']}, core %)" for p in phases]
        rows = [header]
        for proc in procs:
            row = [proc]
            for phase in phases:
                entry = self.cpu[phase]["processes"].get(proc)
                row.append(
                    "-" if entry is None else f"{entry['ms_per_unit']:.3f}  ({entry['core_pct']:.0f}%)"
                )
            rows.append(row)
        total = ["total"]
        for phase in phases:
            entries = self.cpu[phase]["processes"].values()
            total.append(
                f"{sum(e['ms_per_unit'] for e in entries):.3f}  ({sum(e['core_pct'] for e in entries):.0f}%)"
            )
        rows.append(total)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def scaling_table(self) -> str:
        """The scaling figure's rows: req/s, p50 and each process group's share of one core."""
        data = self.figures["scaling"].data
        rows_in = data.get("rows") or []
        if not rows_in:
            return ""
        groups = list(rows_in[0]["cpu_pct"])
        rows = [["processes", "req/s", "p50 ms", "errors", *[f"{g} %" for g in groups], "machine %"]]
        for r in rows_in:
            rows.append(
                [
                    f"{r['web']} web + {r['workers']} worker{'s' if r['workers'] > 1 else ''}",
                    f"{r['requests_per_s']:,.0f}",
                    f"{r['p50_ms']:.2f}",
                    str(r["errors"]),
                    *[f"{r['cpu_pct'][g]:.0f}" for g in groups],
                    f"{r['machine_pct']:.0f}",
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"conclusion ({data.get('cpus')} cores): {data.get('conclusion', '')}")
        return "\n".join(lines)

    def redis_lines(self) -> str:
        out = []
        for phase, entry in self.redis.items():
            top = ", ".join(f"{cmd} {n:.2f}" for cmd, n in entry["top_per_unit"].items())
            out.append(f"{phase}: {entry['per_unit']:.1f} per {entry['unit']} (top: {top})")
        if out:
            out.insert(0, "Redis commands per unit of work (calls made inside Lua scripts included):")
        return "\n".join(out)

    # --- JSON --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "figures": {k: f.to_json() for k, f in self.figures.items()},
            "cpu": self.cpu,
            "redis": self.redis,
            "notes": self.notes,
            "quick": self.quick,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_s": round((self.finished or time.time()) - self.started, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": self.load_at_start,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))
