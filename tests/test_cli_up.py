"""`switchyard up` stopped the way a terminal's Ctrl-C stops it: SIGINT to its whole process
group. The embedded Redis runs in a session of its own, so the signal does not reach it; honcho
stops web and workers (waiting the shutdown grace + 5 s before any SIGKILL), and the embedded
Redis is stopped last, so no worker loses Redis while it shuts down."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx
import redis as sync_redis

from switchyard.redis_server import free_port
from tests.conftest import write_providers

SLOW_STOP = """
import signal, sys, time

def stop(*_):
    time.sleep(6)
    print("slow stopped cleanly", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
print("slow ready", flush=True)
while True:
    time.sleep(1)
"""


def _up(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    procfile = tmp_path / "Procfile"
    # One web and one worker: enough to see both shut down, light on a shared 2-core machine.
    # `slow` takes 6 s to stop: more than honcho's own 5 s before a SIGKILL, less than the
    # shutdown grace (3 s) + 5 s that `up` gives it.
    slow = tmp_path / "slow_stop.py"
    slow.write_text(SLOW_STOP)
    procfile.write_text(
        f"web: switchyard web\nworker: switchyard worker --queue interactive\nslow: python -u {slow}\n"
    )
    providers = write_providers(
        tmp_path / "providers.toml",
        [{"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "models": ["m/chat"]}],
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "REDIS_URL", "DATABASE_URL"))
    }
    env |= {
        "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHYARD_PROVIDERS": str(providers),
        "SWITCHYARD_PORT": str(port),
        "SWITCHYARD_SHUTDOWN_GRACE_S": "3",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "switchyard.cli", "up", "--procfile", str(procfile)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    return process, port


def _wait_until_serving(process: subprocess.Popen[str], port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "switchyard up exited early"
        try:
            # any answer will do: /health is 503 (unhealthy) here, as no provider is reachable
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the web process did not answer")


class Output:
    """The lines of a process' output, read as they come by a thread of their own."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no line matches {pattern!r} in:\n{self.text()}")

    def close(self) -> None:
        self._thread.join(10)

    def text(self) -> str:
        return "\n".join(self.lines)


def test_ctrl_c_stops_workers_cleanly_and_redis_last(tmp_path: Path) -> None:
    process, port = _up(tmp_path)
    out = Output(process)
    try:
        redis_port = int(out.wait_for(r"embedded Redis on redis://127\.0\.0\.1:(\d+)/").group(1))
        _wait_until_serving(process, port)
        with sync_redis.Redis(port=redis_port) as r:
            redis_pid = int(r.info("server")["process_id"])
        assert os.getsid(redis_pid) != os.getsid(process.pid)  # a session of its own
        out.wait_for(r"worker\.1 .*worker serving interactive", timeout=30)
        out.wait_for(r"slow\.1 .*slow ready", timeout=30)
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        process.wait(60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        _kill_left_over(tmp_path / "data")  # a failed run must not leave its processes running
        out.close()
        assert process.stdout is not None
        process.stdout.close()
    output = out.text()
    assert process.returncode in (0, 130), output
    assert "Traceback" not in output, output
    assert "SIGKILL" not in output, output
    # Redis outlived them: nothing lost its connection while shutting down.
    assert "subscription lost" not in output and "Connection refused" not in output, output
    lines = output.splitlines()

    def index_of(pattern: str) -> int:
        found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"no line matches {pattern!r} in:\n{output}"
        return found[-1]

    web_stopped = index_of(r"web\.1 stopped")
    worker_stopped = index_of(r"worker\.1 stopped")
    # (honcho's "stopped" comes once the process' output has closed, i.e. once it has exited; its
    # rc is the `sh -c` wrapper's, which the SIGTERM to the group ends at once.)
    assert index_of(r"slow\.1 .*slow stopped cleanly") < index_of(r"slow\.1 stopped")
    redis_stopped = index_of(r"embedded Redis stopped")
    assert max(web_stopped, worker_stopped, index_of(r"slow\.1 stopped")) < redis_stopped, output
    assert not Path(f"/proc/{redis_pid}").exists() or _is_zombie(redis_pid)


def _kill_left_over(data_dir: Path) -> None:
    """SIGKILL what this test's `up` started and left behind: honcho gives each process a
    session of its own, so killing `up`'s group does not reach them; they are found by the data
    dir in their environment, or as their working directory (the embedded Redis)."""
    marker = str(data_dir).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            found = (
                marker in (proc / "environ").read_bytes()
                or os.readlink(proc / "cwd").startswith(str(data_dir))  # the embedded Redis runs there
            )
        except OSError:
            continue
        if found:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
