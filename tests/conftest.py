"""Fixtures that talk to real things: an embedded Redis, a real database (SQLite, and PostgreSQL
when one is reachable), a stand-in provider on loopback, the app in the test's event loop and
workers in that same loop.

The app is driven through `httpx.ASGITransport` inside `app.lifespan()` rather than Litestar's
`AsyncTestClient`: that client runs the app in a blocking portal on another thread and blocks
the test's loop while a request is in flight, so a synchronous call could never be served by a
worker running in the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from litestar import Litestar

from api.app import create_app
from storage.migrate import upgrade
from switchyard.redis_server import EmbeddedRedis
from switchyard.settings import Settings
from switchyard.standin import StandIn
from switchyard.standin_images import ImageStandIn
from workers.settings import create_worker
from workers.worker import SwitchyardWorker

ADMIN_KEY = "admin-" + "x" * 24
MODELS = ["mock/echo", "mock/other"]
PG_CANDIDATES = (
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "postgresql+asyncpg://root@127.0.0.1:5432/test",
)

# Settings a test must not inherit from the machine it runs on.
_ENV_PREFIXES = ("SWITCHYARD_", "REDIS_URL", "DATABASE_URL", "WEB_CONCURRENCY")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "settings(**env): override Settings for this test, by env alias name")
    config.addinivalue_line("markers", "standin(models=[...]): the stand-in provider's models")
    # Third-party deprecations we cannot fix from here (later lines win over pyproject's "error"):
    # - Litestar 2.2x deprecates `job_id: str` path parameters in favour of `FromPath[str]`, which
    #   the versions pyproject allows (>=2.12) do not all have.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:.*declared using deprecated inferred style:litestar.exceptions.LitestarDeprecationWarning",
    )
    # - arq 0.28's Worker.close() calls redis-py's `close()`, deprecated for `aclose()` in redis 5.0.1.
    config.addinivalue_line("filterwarnings", "ignore:Call to deprecated close:DeprecationWarning:arq")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name)


# --- Redis ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    with sync_redis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    return redis_server.url


# --- database ------------------------------------------------------------------------------------
async def _pg_reachable(url: str) -> bool:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), 3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _pg_exec(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for stmt in statements:
            await conn.execute(stmt)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of our own on the reachable PostgreSQL, migrated once; other users of the
    server (benchmarks, a developer's data) are never touched."""
    admin_url = next((u for u in PG_CANDIDATES if asyncio.run(_pg_reachable(u))), None)
    if admin_url is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"switchyard_test_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_exec(admin_url, f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        _drop_pg_database(admin_url, name)


def _drop_pg_database(admin_url: str, name: str) -> None:
    """Clean-up, not a test: a server busy with other clients (too many connections) is asked
    again, and a database still left is reported as a warning, never as a failed suite."""
    for attempt in range(5):
        try:
            asyncio.run(_pg_exec(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except Exception as exc:  # noqa: BLE001 (asyncpg's and the OS's errors alike)
            last = exc
            time.sleep(0.5 * (attempt + 1))
    warnings.warn(f"the test database {name} could not be dropped: {last!r}", stacklevel=1)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once (synchronously: Alembic runs its own `asyncio.run`)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh, migrated SQLite file of this test's own."""
    path = tmp_path / "switchyard.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database: a fresh SQLite file, or the PostgreSQL test database with its
    tables emptied (the PostgreSQL run is skipped when none is reachable)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    url = request.getfixturevalue("pg_database")
    asyncio.run(_pg_truncate_all(url))
    return str(url)


async def _pg_truncate_all(url: str) -> None:
    """Empty every table the migrations made (whatever tables later migrations add)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            if r["tablename"] != "alembic_version"
        ]
        if tables:
            await conn.execute("TRUNCATE TABLE " + ", ".join(f'"{t}"' for t in tables))
    finally:
        await conn.close()


# --- the stand-in provider -----------------------------------------------------------------------
@pytest.fixture
async def standin(request: pytest.FixtureRequest) -> AsyncIterator[StandIn]:
    marker = request.node.get_closest_marker("standin")
    models = list(marker.kwargs.get("models", MODELS)) if marker else MODELS
    server = await StandIn(models=models).start()
    yield server
    await server.stop()


@pytest.fixture
async def pics() -> AsyncIterator[ImageStandIn]:
    """The image stand-in (Pollinations- and OpenAI-shaped image APIs)."""
    server = await ImageStandIn().start()
    yield server
    await server.stop()


def write_providers(path: Path, providers: list[dict[str, Any]]) -> Path:
    lines = []
    for p in providers:
        lines.append("[[providers]]")
        for k, v in p.items():
            if isinstance(v, list | tuple):
                lines.append(f"{k} = [{', '.join(repr(str(m)).replace(chr(39), chr(34)) for m in v)}]")
            else:
                lines.append(f'{k} = "{v}"')
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn) -> Path:
    return write_providers(
        tmp_path / "providers.toml",
        [{"name": "standin", "kind": "openai", "base_url": standin.base_url, "models": standin.models}],
    )


# --- settings ------------------------------------------------------------------------------------
def base_env(redis_url: str, database_url: str, providers: Path, data_dir: Path) -> dict[str, str]:
    """The settings every test starts from; TEST_PROVIDER_CLIENT=httptools|httpcore runs a suite
    with that provider connection (SWITCHYARD_PROVIDER_CLIENT)."""
    return {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "SWITCHYARD_DATA_DIR": str(data_dir),
        "SWITCHYARD_PROVIDERS": str(providers),
        "SWITCHYARD_ADMIN_KEY": ADMIN_KEY,
        "SWITCHYARD_SYNC_TIMEOUT_S": "15",
        # Consistent as `settings_problems` asks: 35 > 10 x 2 attempts + backoff.
        "SWITCHYARD_JOB_TIMEOUT_S": "35",
        "SWITCHYARD_PROVIDER_TIMEOUT_S": "10",
        "SWITCHYARD_PROVIDER_ATTEMPTS": "2",
        "SWITCHYARD_RETRY_BACKOFF_S": "0.01",
        "SWITCHYARD_SHUTDOWN_GRACE_S": "5",
        "SWITCHYARD_ALLOW_PRIVATE_URLS": "true",
        # A loaded CI machine can take over 2 s (the default) for a SQLite write; the bound
        # itself is tested with its default in test_bounded_waits.py.
        "SWITCHYARD_DEPENDENCY_TIMEOUT_S": "10",
    } | ({"SWITCHYARD_PROVIDER_CLIENT": client} if (client := os.environ.get("TEST_PROVIDER_CLIENT")) else {})


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a web or worker subprocess: this machine's, less its Switchyard
    settings, plus the test's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)} | env


def make_settings(env: dict[str, str]) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


# --- the S3 stand-in -----------------------------------------------------------------------------
@dataclass
class S3Server:
    """moto's S3 server in a process of its own on a free loopback port."""

    endpoint: str
    proc: subprocess.Popen[bytes]

    def reset(self) -> None:
        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()

    def create_bucket(self, name: str) -> None:
        # An anonymous PUT: moto does not check signatures
        httpx.put(f"{self.endpoint}/{name}", timeout=10).raise_for_status()

    def env(self, bucket: str, prefix: str = "blobs") -> dict[str, str]:
        return {
            "SWITCHYARD_BLOB_URL": f"s3://{bucket}/{prefix}",
            "SWITCHYARD_S3_ENDPOINT_URL": self.endpoint,
            "SWITCHYARD_S3_REGION": "us-east-1",
            "SWITCHYARD_S3_ACCESS_KEY_ID": "testing",
            "SWITCHYARD_S3_SECRET_ACCESS_KEY": "testing",
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = S3Server(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{server.endpoint}/moto-api/", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def s3_env(s3_server: S3Server) -> dict[str, str]:
    """Settings for a fresh, empty bucket on the S3 stand-in."""
    s3_server.reset()
    bucket = f"switchyard-{secrets.token_hex(4)}"
    s3_server.create_bucket(bucket)
    return s3_server.env(bucket)


@pytest.fixture
def blob_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The blob store's settings: none (the file store under the data dir), unless the test is
    parametrized over both stores (`@BOTH_BLOB_STORES`)."""
    return both_blob_stores(request) if hasattr(request, "param") else {}


def both_blob_stores(request: pytest.FixtureRequest) -> dict[str, str]:
    """For a parametrized `blob_env`: params "file" and "s3" (a fresh bucket on moto's server)."""
    return {} if request.param == "file" else dict(request.getfixturevalue("s3_env"))


BOTH_BLOB_STORES = pytest.mark.parametrize("blob_env", ["file", "s3"], indirect=True)


@pytest.fixture
def env(
    request: pytest.FixtureRequest,
    redis_url: str,
    db_url: str,
    providers_file: Path,
    tmp_path: Path,
    blob_env: dict[str, str],
) -> dict[str, str]:
    """The settings of this test as environment variables (what a subprocess would be given)."""
    values = base_env(redis_url, db_url, providers_file, tmp_path / "data") | blob_env
    marker = request.node.get_closest_marker("settings")
    if marker:
        values.update({k: str(v) for k, v in marker.kwargs.items()})
    return values


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return make_settings(env)


# --- the app and workers -------------------------------------------------------------------------
@dataclass
class Gateway:
    """The app, a client in the test's loop, and the workers this test started."""

    settings: Settings
    client: httpx.AsyncClient
    workers: list[tuple[SwitchyardWorker, asyncio.Task[None]]] = field(default_factory=list)

    def start_worker(self, *queues: str, **overrides: Any) -> SwitchyardWorker:
        worker = create_worker(
            queues or ("interactive", "batch"), self.settings, handle_signals=False, **overrides
        )
        task = asyncio.create_task(worker.async_run(), name=f"worker-{'+'.join(worker.serves)}")
        self.workers.append((worker, task))
        return worker

    async def stop_worker(self, worker: SwitchyardWorker) -> None:
        for i, (w, task) in enumerate(self.workers):
            if w is worker:
                del self.workers[i]
                await _stop(w, task)
                return

    async def stop_workers(self) -> None:
        while self.workers:
            worker, task = self.workers.pop()
            await _stop(worker, task)

    async def create_key(self, name: str = "test", **body: Any) -> str:
        response = await self.client.post("/api/keys", json={"name": name, **body}, headers=admin_headers())
        assert response.status_code == 201, response.text
        return str(response.json()["key"])


async def _stop(worker: SwitchyardWorker, task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await worker.close()


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@contextlib.asynccontextmanager
async def app_lifespan(app: Litestar) -> AsyncIterator[None]:
    """The app's lifespan held by a task of its own: pytest-asyncio may tear a fixture down in
    another task than the one that set it up, and Litestar's lifespan holds an anyio task group
    that must be left from the task that entered it."""
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def hold() -> None:
        try:
            async with app.lifespan():
                started.set_result(None)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    task = asyncio.create_task(hold(), name="app-lifespan")
    await started
    try:
        yield
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    app = create_app(settings)
    async with app_lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver.local", timeout=30
        ) as client:
            gw = Gateway(settings=settings, client=client)
            try:
                yield gw
            finally:
                await gw.stop_workers()


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with running_gateway(settings) as gateway:
        yield gateway


@pytest.fixture
async def key(gw: Gateway) -> str:
    return await gw.create_key("tester")


# --- helpers -------------------------------------------------------------------------------------
def chat_body(text: str = "hello", model: str = "mock/echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def eventually(
    check: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


async def get_job(client: httpx.AsyncClient, key: str, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def wait_for_status(
    client: httpx.AsyncClient, key: str, job_id: str, *statuses: str, timeout: float = 10.0
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = await get_job(client, key, job_id)
        return job if job["status"] in statuses else None

    return await eventually(check, timeout=timeout, what=f"job {job_id} to be {'/'.join(statuses)}")  # type: ignore[no-any-return]
