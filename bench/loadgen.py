"""A minimal HTTP/1.1 keep-alive client and load generator on raw asyncio streams.

The benchmark shares two cores with everything it measures, so the client does as little
as it can: requests are pre-built bytes, a response is one `readuntil` for the head and one
`readexactly` for the body, and a run is bounded by a request count and a deadline (a
watchdog cancels whatever is still in flight when the hard limit passes). Only 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

HOST = "127.0.0.1"
_IO_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


def build_request(
    method: str, path: str, port: int, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """The raw bytes of one request, sent as they are on every iteration of a load run."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    for _ in range(100_000):
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers expected
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
    raise ValueError("too many chunks")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, server-closes-connection) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if chunked:
        body = await _read_chunked(reader)
    elif length >= 0:
        body = await reader.readexactly(length) if length else b""
    else:  # delimited by the end of the connection
        body = await reader.read(10_000_000)
        close = True
    return status, body, close


async def fetch(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request on a fresh connection (control calls: health, keys, job polls)."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(build_request(method, path, port, body=body, headers=headers))
            status, data, _ = await read_response(reader)
            return status, data
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout)


@dataclass
class LoadResult:
    """What one load run saw. Latencies (seconds) are those of 2xx responses only."""

    concurrency: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    bodies: list[bytes] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        """Nearest-rank percentile of the 2xx latencies, in milliseconds (nan when none)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    def error_summary(self) -> str:
        parts = [f"HTTP {s}: {n}" for s, n in sorted(self.statuses.items()) if not 200 <= s < 300]
        parts += [f"{name}: {n}" for name, n in self.exceptions.most_common()]
        return ", ".join(parts)

    def summary(self) -> str:
        text = (
            f"{self.ok} ok in {self.elapsed:.2f}s = {self.rate:,.0f}/s, p50 {self.percentile_ms(50):.2f} ms, "
            f"p95 {self.percentile_ms(95):.2f} ms, p99 {self.percentile_ms(99):.2f} ms, {self.errors} errors"
        )
        return text + (f" ({self.error_summary()})" if self.errors else "")


class _Budget:
    """The requests left to issue, shared by the connections of one run."""

    __slots__ = ("left", "deadline", "stop")

    def __init__(self, count: int | None, deadline: float, stop: asyncio.Event | None) -> None:
        self.left = count if count is not None else 1 << 62
        self.deadline = deadline
        self.stop = stop

    def take(self) -> bool:
        if (
            self.left <= 0
            or time.perf_counter() >= self.deadline
            or (self.stop is not None and self.stop.is_set())
        ):
            return False
        self.left -= 1
        return True


async def _connection(
    port: int, raw: bytes, budget: _Budget, result: LoadResult, keep_bodies: int, pause_s: float
) -> None:
    perf = time.perf_counter
    lat = result.latencies
    statuses = result.statuses
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    reconnects = 0
    try:
        while budget.take():
            if writer is None:
                if reconnects > 1000:
                    return
                reconnects += 1
                try:
                    reader, writer = await asyncio.open_connection(HOST, port)
                except OSError as exc:
                    result.errors += 1
                    result.exceptions[f"connect: {exc.__class__.__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
            assert reader is not None
            t0 = perf()
            try:
                writer.write(raw)
                status, body, close = await read_response(reader)
            except _IO_ERRORS as exc:
                result.errors += 1
                result.exceptions[exc.__class__.__name__] += 1
                writer.close()
                writer = None
                continue
            t1 = perf()
            statuses[status] += 1
            if 200 <= status < 300:
                lat.append(t1 - t0)
            else:
                result.errors += 1
            if keep_bodies and len(result.bodies) < keep_bodies:
                result.bodies.append(body)
            if close:
                writer.close()
                writer = None
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        if writer is not None:
            writer.close()


async def run_load(
    port: int,
    raw: bytes,
    *,
    concurrency: int,
    count: int | None = None,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    keep_bodies: int = 0,
    pause_s: float = 0.0,
    grace_s: float = 15.0,
) -> LoadResult:
    """Send `raw` back-to-back (or `pause_s` apart) on `concurrency` keep-alive connections.

    Stops after `count` requests, after `duration` seconds, or when `stop` is set, whichever
    comes first (at least one of count/duration must be given). Requests still in flight
    `grace_s` after the deadline are canceled and counted as errors.
    """
    if count is None and duration is None:
        raise ValueError("a load run needs a count or a duration")
    limit = duration if duration is not None else 600.0
    result = LoadResult(concurrency)
    start = time.perf_counter()
    budget = _Budget(count, start + limit, stop)
    tasks = [
        asyncio.create_task(_connection(port, raw, budget, result, keep_bodies, pause_s))
        for _ in range(concurrency)
    ]
    done, pending = await asyncio.wait(tasks, timeout=limit + grace_s)
    for task in pending:
        task.cancel()
        result.errors += 1
        result.exceptions["in flight at the hard limit"] += 1
    if pending:
        await asyncio.wait(pending, timeout=5)
    result.elapsed = time.perf_counter() - start
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            result.errors += 1
            result.exceptions[f"client crashed: {exc!r}"] += 1
    return result
