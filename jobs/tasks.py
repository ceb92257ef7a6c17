"""Long-lived background tasks that come back when they die: `supervise`.

Every loop a web or worker process runs for its lifetime (the done listener, the stream hub,
model events, the persister, wake-ups, lease renewal, discovery, the file sweeper) is started
through `supervise` instead of a bare `create_task`: whatever escapes the loop is logged with
its traceback and the loop is started again after a backoff, so one bug met at run time
costs a restart, never the process' listener or persister for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

log = logging.getLogger("switchyard.tasks")

FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0  # a run this long was a good one: the next death backs off from the start

restarts: Counter[str] = Counter()  # per task name, since the process started: for metrics


def supervise(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    first_backoff_s: float = FIRST_BACKOFF_S,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> asyncio.Task[None]:
    """Run `factory()` in a task until it returns (a loop told to stop) or the task is
    cancelled; when it raises, log it and run it again, 0.1 s later at first, doubling to 30 s
    while it keeps dying."""
    return asyncio.create_task(_supervised(name, factory, first_backoff_s, max_backoff_s), name=name)


async def _supervised(
    name: str, factory: Callable[[], Awaitable[None]], first_backoff_s: float, max_backoff_s: float
) -> None:
    loop = asyncio.get_running_loop()
    backoff = first_backoff_s
    while True:
        started = loop.time()
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if loop.time() - started >= HEALTHY_AFTER_S:
                backoff = first_backoff_s
            restarts[name] += 1
            log.exception("background task %s died; restarting it in %.1f s", name, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)
