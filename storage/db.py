"""Engine and session factory. One session per request or job, as `async with session_scope()`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.bounds import bounded, bounded_call, clean_up_later
from storage.clean import storable
from storage.models import Job, Usage
from switchyard.errors import DependencyTimeout

# Core tables (not ORM classes): finished jobs are written as one cached executemany.
JOBS, USAGE = (SQLModel.metadata.tables[m.__tablename__] for m in (Job, Usage))  # type: ignore[attr-defined]


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class Database:
    """`timeout_s` bounds every `session()`, `connect()` and `begin()` (the web's request path:
    `storage.bounds`), and the driver's own waits (SQLite's busy timeout, asyncpg's connect and
    command timeouts, the pool's wait for a connection). None (workers): no bound, 30 s busy."""

    def __init__(self, url: str, *, timeout_s: float | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            if ":memory:" in url:
                kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"timeout": timeout_s or 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
            if timeout_s is not None:
                kwargs.update(pool_timeout=timeout_s)
                if url.startswith("postgresql+asyncpg"):
                    kwargs["connect_args"] = {"timeout": timeout_s, "command_timeout": timeout_s}
        # JSON columns (a job's result) through orjson: several times the standard library's speed
        kwargs.update(json_serializer=_json_dumps, json_deserializer=orjson.loads)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Commit on success, roll back on error (within `timeout_s`, when set)."""
        if self.timeout_s is None:
            async with self._sessions() as session:
                try:
                    yield session
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    raise
            return
        session = self._sessions()
        try:
            async with bounded("database", self.timeout_s):
                yield session
                await session.commit()
                await session.close()
        except (DependencyTimeout, asyncio.CancelledError):
            clean_up_later("database session", session.close())  # close() rolls back
            raise
        except BaseException:
            await session.close()
            raise

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """`engine.connect()`, within `timeout_s` when set."""
        if self.timeout_s is None:
            async with self.engine.connect() as conn:
                yield conn
            return
        conn = self.engine.connect()
        try:
            async with bounded("database", self.timeout_s):
                await conn.start()
                yield conn
                await conn.close()
        except (DependencyTimeout, asyncio.CancelledError):
            if conn.sync_connection is not None:
                clean_up_later("database connection", conn.close())
            raise
        except BaseException:
            if conn.sync_connection is not None:
                await conn.close()
            raise

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """`engine.begin()` (commit on success), within `timeout_s` when set."""
        async with self.connect() as conn, conn.begin():
            yield conn

    @bounded_call("database")
    async def ping(self) -> None:
        """One round trip; raises what the driver raises when it cannot. SQLite reads its
        schema (a plain `SELECT 1` needs no lock, so a locked database would pass)."""
        async with self.connect() as conn:
            await conn.execute(text("SELECT count(*) FROM sqlite_master" if self.is_sqlite else "SELECT 1"))

    def _upsert(self, table: Any, key: str, rows: list[dict[str, Any]]) -> Any:
        insert = sqlite_insert if self.is_sqlite else pg_insert
        stmt = insert(table)  # Core, not ORM: one cached statement run as executemany
        updatable = {c: stmt.excluded[c] for c in rows[0] if c != key}
        return stmt.on_conflict_do_update(index_elements=[key], set_=updatable)

    async def write_finished(self, jobs: list[dict[str, Any]], usage: list[dict[str, Any]]) -> None:
        """Finished jobs and their usage, in one transaction; their text made storable first
        (`storage.clean.storable`: the rows are changed in place)."""
        storable(JOBS, jobs)
        storable(USAGE, usage)
        async with self.engine.begin() as conn:
            if jobs:
                await conn.execute(self._upsert(JOBS, "id", jobs), jobs)
            if usage:
                await conn.execute(self._upsert(USAGE, "job_id", usage), usage)

    async def dispose(self) -> None:
        await self.engine.dispose()
