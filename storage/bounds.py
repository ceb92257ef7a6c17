"""Bounded waits on the dependencies of the request path (the database, Redis).

A stalled dependency must end a request in a 503 within about `SWITCHYARD_DEPENDENCY_TIMEOUT_S`
(default 2 s), never hold it for the whole stall. `bounded` is that bound, as an `async with`
block or a decorator; what exceeds it raises `DependencyTimeout` (a 503 naming the dependency).

Each web process sets its bound once at start (`configure`); other processes leave it unset
(no bound: a worker's waits are bounded by its job timeouts).

Two forms, because a driver may swallow the cancellation a timeout sends (asyncpg's ping on a
connection that stalls mid-checkout: the first stalled call took two bounds): `bounded` cancels
the block in place (cheap; Redis calls, and the engine's session), `bounded_call` runs a storage
function in a task of its own and answers at the bound whatever that task does (a task per
database call, ~20 us next to a query's hundreds).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from switchyard.errors import DependencyTimeout

log = logging.getLogger("switchyard.bounds")

P = ParamSpec("P")
T = TypeVar("T")

_timeout_s: float | None = None
_cleanups: set[asyncio.Future[Any]] = set()


def configure(timeout_s: float | None) -> None:
    """The bound of this process (the web sets `settings.dependency_timeout_s` at start);
    None: no bound."""
    global _timeout_s
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError("the dependency timeout must be positive")
    _timeout_s = timeout_s


def timeout_s() -> float | None:
    return _timeout_s


@contextlib.asynccontextmanager
async def bounded(what: str, limit_s: float | None = None) -> AsyncIterator[None]:
    """At most `limit_s` (the process' bound when None) for the block, then `DependencyTimeout`.

    A `TimeoutError` from inside (asyncpg's `command_timeout`, a socket's) is the same thing.
    """
    limit = _timeout_s if limit_s is None else limit_s
    if limit is None:
        yield
        return
    try:
        async with asyncio.timeout(limit):
            yield
    except TimeoutError as exc:
        raise DependencyTimeout(what, limit) from exc


def bounded_call(
    what: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Decorate an async function: within the process' bound it answers, or `DependencyTimeout`
    (its task is cancelled and left to clean up on its own)."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            limit = _timeout_s
            if limit is None:
                return await fn(*args, **kwargs)
            task = asyncio.ensure_future(fn(*args, **kwargs))
            try:
                done, _ = await asyncio.wait({task}, timeout=limit)
            except asyncio.CancelledError:
                task.cancel()
                _keep(task)
                raise
            if not done:
                task.cancel()
                _keep(task)
                raise DependencyTimeout(what, limit)
            try:
                return task.result()
            except TimeoutError as exc:  # the driver's own timeout: the same thing
                raise DependencyTimeout(what, limit) from exc

        return call

    return decorate


def _keep(task: asyncio.Future[Any]) -> None:
    """Hold an abandoned task until it ends, and read its outcome (no "never retrieved")."""
    _cleanups.add(task)

    def done(t: asyncio.Future[Any]) -> None:
        _cleanups.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.debug("an abandoned dependency call ended with %r", t.exception())

    task.add_done_callback(done)


def clean_up_later(what: str, cleanup: Awaitable[object]) -> None:
    """Run `cleanup` (a rollback, a close) in a task of its own: a request that gave up on a
    stalled dependency answers at once instead of waiting for its cleanup to stall as well.
    The engine's own timeouts bound the cleanup; its failure is logged, never raised."""

    async def run() -> None:
        try:
            await cleanup
        except Exception as exc:  # noqa: BLE001 (the connection is dropped either way)
            log.debug("%s: cleanup after a failure failed too: %r", what, exc)

    _keep(asyncio.ensure_future(run()))
