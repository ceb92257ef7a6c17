"""Time to first streamed token: through Switchyard (web + worker + Redis, real processes)
versus straight from the stand-in provider, 1 client, `"stream": true`.

A request's time to first token runs from writing the request to reading the first event
whose `delta.content` is not empty; the rest of the stream is read too (a call ends at its
last chunk), so that both paths do the whole work of a stream.

    python -m bench.ttft [--n 200] [--quick]

`make bench` runs the same measurement as one of its phases (`stream_ttft`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Callable

import orjson

from bench.cluster import MODEL, Cluster
from bench.loadgen import HOST, build_request
from bench.phases import Bench
from bench.report import Figure, Report

STREAM_BODY = orjson.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "first token please"}], "stream": True}
)
_EMPTY = b'"content":""'
_CONTENT = b'"content":"'


def _first_token(body: bytes) -> bool:
    """Whether `body` (the events so far) holds an event with content."""
    at = body.find(_CONTENT)
    while at >= 0:
        if body[at : at + len(_EMPTY)] != _EMPTY:
            return True
        at = body.find(_CONTENT, at + 1)
    return False


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> tuple[float, float]:
    """(time to first token, time to the end of the stream) of one streamed call, in seconds."""
    t0 = time.perf_counter()
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {head[:200]!r}")
    if b"chunked" not in head.lower():
        raise RuntimeError("the stream is not a chunked response")
    body = b""
    first = math.nan
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            break
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if math.isnan(first) and _first_token(body):
            first = time.perf_counter() - t0
    if not body.rstrip().endswith(b"data: [DONE]"):
        raise RuntimeError(f"the stream did not end with [DONE]: {body[-200:]!r}")
    if math.isnan(first):
        raise RuntimeError("no content in the stream")
    return first, time.perf_counter() - t0


async def _series(port: int, raw: bytes, n: int) -> tuple[list[float], list[float]]:
    reader, writer = await asyncio.open_connection(HOST, port)
    firsts: list[float] = []
    totals: list[float] = []
    try:
        for _ in range(n):
            first, total = await asyncio.wait_for(_one(reader, writer, raw), 30)
            firsts.append(first)
            totals.append(total)
    finally:
        writer.close()
    return firsts, totals


def percentile_ms(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank] * 1000


async def stream_ttft(b: Bench) -> None:
    """The `make bench` phase."""
    await measure(b.cluster, b.report["stream_ttft"], b.sizes.ttft_n, b.progress)


async def measure(cluster: Cluster, fig: Figure, n: int, progress: Callable[[str], None] = print) -> None:
    """Fill `fig`: direct and through-Switchyard series in alternating blocks, after a warm-up."""
    headers = {"authorization": f"Bearer {cluster.api_key}", "content-type": "application/json"}
    through_raw = build_request(
        "POST", "/v1/chat/completions", cluster.web_port, body=STREAM_BODY, headers=headers
    )
    direct_raw = build_request(
        "POST",
        "/v1/chat/completions",
        cluster.standin_port,
        body=STREAM_BODY,
        headers={"content-type": "application/json"},
    )
    await _series(cluster.standin_port, direct_raw, 20)
    await _series(cluster.web_port, through_raw, 20)
    direct: list[float] = []
    through: list[float] = []
    through_total: list[float] = []
    blocks = 4
    for _ in range(blocks):
        d, _ = await _series(cluster.standin_port, direct_raw, max(1, n // blocks))
        t, total = await _series(cluster.web_port, through_raw, max(1, n // blocks))
        direct += d
        through += t
        through_total += total
    d50, d99 = percentile_ms(direct, 50), percentile_ms(direct, 99)
    s50, s99 = percentile_ms(through, 50), percentile_ms(through, 99)
    add50, add99 = s50 - d50, s99 - d99
    fig.data = {
        "direct_p50_ms": round(d50, 3),
        "direct_p99_ms": round(d99, 3),
        "switchyard_p50_ms": round(s50, 3),
        "switchyard_p99_ms": round(s99, 3),
        "added_p50_ms": round(add50, 3),
        "added_p99_ms": round(add99, 3),
        "switchyard_stream_p50_ms": round(percentile_ms(through_total, 50), 3),
        "samples": len(through),
    }
    fig.measured = (
        f"p50 {s50:.2f} ms vs {d50:.2f} direct (+{add50:.2f}), p99 {s99:.2f} vs {d99:.2f} (+{add99:.2f})"
    )
    fig.passed = add50 <= 3.0 and add99 <= 10.0
    progress(f"  time to first token: {fig.measured}")


async def _main(n: int) -> int:
    cluster = Cluster()
    report = Report(figures={"stream_ttft": Report()["stream_ttft"]})
    fig = report["stream_ttft"]
    try:
        await cluster.start()
        await measure(cluster, fig, n)
    except Exception as exc:  # noqa: BLE001 (reported, with the processes' logs)
        fig.fail(f"{exc.__class__.__name__}: {exc}")
        print(cluster.tails(("standin", "web", "worker")), flush=True)
    finally:
        cluster.stop()
    print()
    print(report.table())
    print(orjson.dumps(fig.to_json()).decode())
    return 1 if fig.error else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ttft", description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="streamed calls per path (default 200)")
    parser.add_argument("--quick", action="store_true", help="40 calls per path")
    args = parser.parse_args(argv)
    try:
        import uvloop

        return uvloop.run(_main(40 if args.quick else args.n))
    except ImportError:  # pragma: no cover
        return asyncio.run(_main(40 if args.quick else args.n))


if __name__ == "__main__":
    raise SystemExit(main())
