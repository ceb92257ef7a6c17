"""Engine and session factory. One session per request or job, as `async with session_scope()`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import Job


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            if ":memory:" in url:
                kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Commit on success, roll back on error."""
        async with self._sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def upsert_jobs(self, rows: list[dict[str, Any]]) -> None:
        """Write finished jobs in one statement; a job written twice keeps its latest state."""
        if not rows:
            return
        insert = sqlite_insert if self.is_sqlite else pg_insert
        table = Job.__table__  # Core, not ORM: one cached statement run as executemany
        stmt = insert(table)  # type: ignore[arg-type]
        updatable = {c: stmt.excluded[c] for c in rows[0] if c != "id"}
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_=updatable)
        async with self.engine.begin() as conn:
            await conn.execute(stmt, rows)

    async def dispose(self) -> None:
        await self.engine.dispose()
