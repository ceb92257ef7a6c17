"""Bounded waits on the dependencies of the request path (the database, Redis).

A stalled dependency must end a request in a 503 within about `SWITCHYARD_DEPENDENCY_TIMEOUT_S`
(default 2 s), never hold it for the whole stall. `bounded` is that bound, as an `async with`
block or a decorator; what exceeds it raises `DependencyTimeout` (a 503 naming the dependency).

Each web process sets its bound once at start (`configure`); workers keep the default and
mostly do not use it (their waits are their own job timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable

from switchyard.errors import DependencyTimeout

log = logging.getLogger("switchyard.bounds")

DEFAULT_TIMEOUT_S = 2.0
_timeout_s = DEFAULT_TIMEOUT_S
_cleanups: set[asyncio.Task[None]] = set()


def configure(timeout_s: float) -> None:
    """The bound of this process (the web sets `settings.dependency_timeout_s` at start)."""
    global _timeout_s
    if timeout_s <= 0:
        raise ValueError("the dependency timeout must be positive")
    _timeout_s = timeout_s


def timeout_s() -> float:
    return _timeout_s


@contextlib.asynccontextmanager
async def bounded(what: str, limit_s: float | None = None) -> AsyncIterator[None]:
    """At most `limit_s` (the process' bound when None) for the block, then `DependencyTimeout`.

    A `TimeoutError` from inside (asyncpg's `command_timeout`, a socket's) is the same thing.
    """
    limit = _timeout_s if limit_s is None else limit_s
    try:
        async with asyncio.timeout(limit):
            yield
    except TimeoutError as exc:
        raise DependencyTimeout(what, limit) from exc


def clean_up_later(what: str, cleanup: Awaitable[object]) -> None:
    """Run `cleanup` (a rollback, a close) in a task of its own: a request that gave up on a
    stalled dependency answers at once instead of waiting for its cleanup to stall as well.
    The engine's own timeouts bound the cleanup; its failure is logged, never raised."""

    async def run() -> None:
        try:
            await cleanup
        except Exception as exc:  # noqa: BLE001 (the connection is dropped either way)
            log.debug("%s: cleanup after a failure failed too: %r", what, exc)

    task = asyncio.ensure_future(run())
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)
