"""CPU of one provider call from a worker's HTTP client (`python -m bench.provider_call`).

Starts the stand-in provider (`switchyard.standin`) in its own process, then, in this one,
makes N chat-completion POSTs through `workers.http.Upstream` for each client
(`SWITCHYARD_PROVIDER_CLIENT`: httpcore, httptools) at concurrency 1 and 64, plain and
streamed, and prints the CPU seconds of this process per call (`time.process_time()`).
The clients run in alternation (A B A B) so a drift of the machine shows as a range.

    python -m bench.provider_call [--calls 20000] [--rounds 2] [--clients httpcore,httptools]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import orjson

from switchyard.settings import Settings
from workers.http import Upstream

HEADERS = [
    (b"authorization", b"Bearer sk-bench"),
    (b"content-type", b"application/json"),
    (b"accept", b"application/json"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the stand-in did not start")


async def _one(http: Upstream, url: str, body: bytes, stream: bool) -> int:
    if not stream:
        response = await http.post(url, body, HEADERS, 30.0)
        assert response.status_code == 200, response.status_code
        return len(response.content)
    size = 0
    async with http.stream_post(url, body, HEADERS, 30.0) as r:
        assert r.status_code == 200, r.status_code
        async for chunk in r.chunks():
            size += len(chunk)
    return size


async def measure(client: str, url: str, calls: int, concurrency: int, stream: bool) -> float:
    """CPU ms of this process per call."""
    http = Upstream(Settings(SWITCHYARD_PROVIDER_CLIENT=client))  # type: ignore[call-arg]
    request = {"model": "mock/echo", "messages": [{"role": "user", "content": "hello from the bench"}]}
    if stream:
        request["stream"] = True
    body = orjson.dumps(request)
    try:
        for _ in range(200):  # warm: connections made, code paths taken
            await _one(http, url, body, stream)
        left = calls

        async def loop() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await _one(http, url, body, stream)

        cpu = time.process_time()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return (time.process_time() - cpu) / calls * 1000
    finally:
        await http.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="httpcore,httptools")
    args = parser.parse_args()
    clients = args.clients.split(",")
    port = _free_port()
    standin = subprocess.Popen(
        [sys.executable, "-m", "switchyard.standin", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        import uvloop

        uvloop.install()  # as the worker runs
    except ImportError:  # pragma: no cover
        pass
    results: dict[tuple[str, int, bool], list[float]] = {}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        asyncio.run(_wait_port(port))
        for _ in range(args.rounds):
            for stream in (False, True):
                for concurrency in (1, 64):
                    for client in clients:
                        ms = asyncio.run(measure(client, url, args.calls, concurrency, stream))
                        results.setdefault((client, concurrency, stream), []).append(ms)
                        kind = "stream" if stream else "plain"
                        print(f"{client:10} c={concurrency:<3} {kind:6} {ms:.4f} ms/call", flush=True)
    finally:
        standin.terminate()
        standin.wait()
    print("\nCPU ms per call of the calling process (mean [min-max] over rounds)")
    base = clients[0]
    for stream in (False, True):
        for concurrency in (1, 64):
            row = []
            for client in clients:
                v = results[(client, concurrency, stream)]
                mean = sum(v) / len(v)
                cell = f"{client} {mean:.4f} [{min(v):.4f}-{max(v):.4f}]"
                if client != base:
                    b = results[(base, concurrency, stream)]
                    cell += f" ({(mean / (sum(b) / len(b)) - 1) * 100:+.0f} %)"
                row.append(cell)
            print(f"{'stream' if stream else 'plain ':6} c={concurrency:<3} " + " | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
