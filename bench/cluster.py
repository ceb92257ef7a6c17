"""The system under test, started as subprocesses on free ports and always torn down.

`Cluster.start()` brings up Redis (EmbeddedRedis' command line, no AOF), the stand-in upstream, a providers
file, the database migrations, the web process and one interactive worker, then creates an
API key. `start_batch_worker()` adds the batch worker later. Every child runs in its own
session (so a Ctrl-C in the terminal reaches only the benchmark, which then stops them in
order: SIGTERM, then SIGKILL to that child's own process group) and logs to a file in the
temporary directory, whose tail is shown when something fails. Children also get SIGTERM
from the kernel if the benchmark dies without cleaning up (PR_SET_PDEATHSIG). CPU times
come from /proc.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.loadgen import fetch
from switchyard.redis_server import EmbeddedRedis, free_port

MODEL = "mock/echo"
_BIG = 1_000_000_000
# Per-key limits far above what a run sends (the defaults would answer 429 after 60 calls).
BENCH_LIMITS = {
    "hourly": _BIG,
    "daily_requests": _BIG,
    "daily_tokens": _BIG * 1000,
    "per_minute": {"chat": _BIG, "image": _BIG, "video": _BIG},
}
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
_OUR_ENV = ("REDIS_URL", "DATABASE_URL", "WEB_CONCURRENCY")


class StartupError(RuntimeError):
    pass


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15 of stat(5)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Cluster:
    def __init__(self) -> None:
        self.bin = Path(sys.executable).parent
        self.tmp = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
        self.redis: EmbeddedRedis | None = None
        self.procs: dict[str, Proc] = {}
        self.web_port = 0
        self.standin_port = 0
        self.admin_key = secrets.token_urlsafe(24)
        self.api_key = ""
        self.env: dict[str, str] = {}

    # --- start -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.start_redis()
        self.standin_port = free_port()
        self.spawn(
            "standin",
            [sys.executable, "-m", "switchyard.standin", "--port", str(self.standin_port), "--models", MODEL],
        )
        providers = self.tmp / "providers.toml"
        providers.write_text(
            "[[providers]]\n"
            'name = "local"\n'
            'kind = "openai"\n'
            f'base_url = "http://127.0.0.1:{self.standin_port}/v1"\n'
            f'models = ["{MODEL}"]\n'
        )
        self.web_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not (k.startswith("SWITCHYARD_") or k in _OUR_ENV)}
        self.env.update(
            REDIS_URL=self.redis_url,
            # BENCH_DATABASE_URL: another database than the run's own SQLite file (e.g. PostgreSQL)
            DATABASE_URL=os.environ.get("BENCH_DATABASE_URL")
            or f"sqlite+aiosqlite:///{self.tmp / 'bench.db'}",
            SWITCHYARD_DATA_DIR=str(self.tmp),
            SWITCHYARD_PROVIDERS=str(providers),
            SWITCHYARD_ADMIN_KEY=self.admin_key,
            SWITCHYARD_PORT=str(self.web_port),
            SWITCHYARD_LOG_LEVEL="WARNING",
        )
        # BENCH_SWITCHYARD_X=v runs the cluster with SWITCHYARD_X=v (to compare settings).
        self.env.update(
            {k[len("BENCH_") :]: v for k, v in os.environ.items() if k.startswith("BENCH_SWITCHYARD_")}
        )
        await self.migrate()
        await self.wait_http("standin", self.standin_port, "/v1/models")
        self.spawn("web", [str(self.bin / "switchyard"), "web"])
        self.spawn("worker", [str(self.bin / "switchyard"), "worker", "--queue", "interactive"])
        await self.wait_http("web", self.web_port, "/health")
        self.api_key = await self.create_key()

    async def migrate(self, timeout: float = 120.0) -> None:
        proc = self.spawn("migrate", [str(self.bin / "switchyard"), "migrate"])
        deadline = time.monotonic() + timeout
        while proc.alive and time.monotonic() < deadline:  # noqa: ASYNC110 (no thread before a fork)
            await asyncio.sleep(0.1)
        self.stop_process("migrate", 5.0)
        if proc.popen.returncode != 0:
            raise StartupError(f"`switchyard migrate` failed ({proc.popen.returncode}):\n{proc.tail()}")

    @property
    def redis_url(self) -> str:
        if self.redis is None:
            raise StartupError("Redis is not started")
        return self.redis.url

    async def start_redis(self, timeout: float = 10.0) -> None:
        """EmbeddedRedis' own command line, spawned like every other child (see `spawn`)."""
        self.redis = EmbeddedRedis(self.tmp / "redis", persistent=False)
        self.redis.data_dir.mkdir(parents=True)
        proc = self.spawn("redis", self.redis.command())
        deadline = time.monotonic() + timeout
        while not self.redis.ping():
            if not proc.alive or time.monotonic() > deadline:
                raise StartupError(f"redis-server did not start on port {self.redis.port}:\n{proc.tail()}")
            await asyncio.sleep(0.02)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                argv,
                env=env or self.env or None,
                cwd=self.tmp,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        proc = self.procs[name] = Proc(name, popen, log)
        return proc

    def start_batch_worker(self) -> Proc:
        return self.spawn("batch", [str(self.bin / "switchyard"), "worker", "--queue", "batch"])

    def start_interactive_worker(self, name: str) -> Proc:
        return self.spawn(name, [str(self.bin / "switchyard"), "worker", "--queue", "interactive"])

    async def restart_web(self, processes: int) -> None:
        """The web process again, as `processes` uvicorn workers sharing its port
        (`SWITCHYARD_WEB_WORKERS`: one supervisor process and that many children)."""
        self.stop_process("web")
        env = dict(self.env, SWITCHYARD_WEB_WORKERS=str(processes))
        self.spawn("web", [str(self.bin / "switchyard"), "web"], env=env)
        await self.wait_http("web", self.web_port, "/health")

    async def wait_http(self, name: str, port: int, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and not proc.alive:
                raise StartupError(f"{name} exited ({proc.popen.returncode}) at start:\n{proc.tail()}")
            try:
                status, body = await fetch(port, "GET", path, timeout=2.0)
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                last = exc.__class__.__name__
            await asyncio.sleep(0.1)
        raise StartupError(f"{name} did not answer GET {path} within {timeout:g}s ({last})")

    async def create_key(self) -> str:
        """An API key with limits and credits on, both out of the benchmark's reach, so every
        call pays for the admission check and the credit charge (plain key if refused)."""
        headers = {"authorization": f"Bearer {self.admin_key}", "content-type": "application/json"}
        status, body = 0, b""
        for spec in ({"name": "bench", "limits": BENCH_LIMITS, "credits": _BIG}, {"name": "bench"}):
            status, body = await fetch(
                self.web_port, "POST", "/api/keys", body=orjson.dumps(spec), headers=headers
            )
            if status == 201:
                return str(orjson.loads(body)["key"])
        raise StartupError(f"POST /api/keys answered {status}: {body[:300]!r}")

    # --- observe -----------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in self.procs.items() if p.alive}
        pids["bench"] = os.getpid()
        return pids

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each process, the benchmark itself included."""
        snap = {}
        for name, pid in self.pids().items():
            cpu = cpu_seconds(pid)
            if cpu is not None:
                snap[name] = cpu
        return snap

    def tree_cpu_snapshot(self) -> dict[str, float]:
        """Like `cpu_snapshot`, each child with its descendants (the web's uvicorn workers). The
        benchmark is its own process alone: every other process here descends from it."""
        children = _children_by_parent()
        snap = {}
        for name, pid in self.pids().items():
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            stack = list(children.get(pid, ())) if pid != os.getpid() else []
            while stack:
                child = stack.pop()
                cpu += cpu_seconds(child) or 0.0
                stack += children.get(child, ())
            snap[name] = cpu
        return snap

    def dead(self) -> list[str]:
        return [f"{p.name} (exit {p.popen.returncode})" for p in self.procs.values() if not p.alive]

    def tails(self, names: tuple[str, ...] = ("web", "worker", "batch")) -> str:
        out = []
        for name in names:
            proc = self.procs.get(name)
            if proc is not None and proc.tail():
                out.append(f"--- {name} log (last lines) ---\n{proc.tail()}")
        return "\n".join(out)

    # --- stop --------------------------------------------------------------------------------
    def stop_process(self, name: str, timeout: float = 15.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        _terminate([proc], timeout)

    def stop(self) -> None:
        """Stop every child (workers first, Redis last) and remove the temporary directory."""
        order: list[str] = [n for n in ("batch", "worker", "web", "standin") if n in self.procs]
        order += [n for n in self.procs if n not in order and n != "redis"]
        try:
            _terminate([self.procs[n] for n in order], 15.0)
            if "redis" in self.procs:  # last: the workers flush to it while they stop
                _terminate([self.procs["redis"]], 10.0)
            self.procs.clear()
        finally:
            if os.environ.get("BENCH_KEEP_TMP"):
                print(f"bench: kept {self.tmp}", flush=True)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the benchmark dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _children_by_parent() -> dict[int, list[int]]:
    """Every process' children, from /proc/<pid>/stat (field 4 is the parent)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def system_busy_seconds() -> float:
    """CPU time used by everything on the machine so far (all cores), from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal ...: interrupts left out, as they are
    # mostly our own loopback traffic
    busy = sum(int(fields[i]) for i in (1, 2, 3, 8))
    return busy / _CLK_TCK


def _signal_group(proc: Proc, sig: signal.Signals) -> None:
    """Signal the child's own process group (it leads one: start_new_session)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.popen.send_signal(sig)
        except ProcessLookupError:
            pass


def _terminate(procs: list[Proc], timeout: float) -> None:
    for proc in procs:
        if proc.alive:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"bench: {proc.name} ignored SIGTERM for {timeout:g}s; killing it", flush=True)
        _signal_group(proc, signal.SIGKILL)  # anything it left behind in its group
        if proc.alive:
            proc.popen.wait(5)
