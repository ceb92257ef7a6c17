"""The bound itself (storage/bounds.py) and how a timeout or a Redis error renders: a 503 in
every dialect's shape, never a 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import CLOUDGPT, CREDITS, DISCOVERY, NATIVE, OPENAI, handlers_for
from storage import bounds
from switchyard.errors import DependencyTimeout


@pytest.fixture
def bound() -> Iterator[float]:
    before = bounds.timeout_s()
    bounds.configure(0.2)
    yield 0.2
    bounds.configure(before)


async def _stubborn(done: asyncio.Event) -> str:
    """A driver call that swallows the first cancellation and goes on waiting a while."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(3)
    done.set()
    return "late"


async def test_bounded_call_answers_at_the_bound_even_when_the_call_swallows_its_cancellation(
    bound: float,
) -> None:
    done = asyncio.Event()
    call = bounds.bounded_call("database")(_stubborn)
    started = time.monotonic()
    with pytest.raises(DependencyTimeout, match="database unavailable: no answer within 0.2 s"):
        await call(done)
    # At the bound, not when the call gives up (bound + 3 s); the slack is for a loaded machine.
    assert time.monotonic() - started < bound + 1.5
    await asyncio.wait_for(done.wait(), 5)  # the abandoned call ended on its own


async def test_bounded_block_and_unbounded_process(bound: float) -> None:
    with pytest.raises(DependencyTimeout):
        async with bounds.bounded("queue (Redis)"):
            await asyncio.sleep(1)
    bounds.configure(None)  # a worker: no bound at all
    async with bounds.bounded("queue (Redis)"):
        await asyncio.sleep(0.3)
    assert await bounds.bounded_call("database")(asyncio.sleep)(0.3, "done") == "done"


@pytest.mark.parametrize(
    "exc",
    [RedisConnectionError("gone"), RedisTimeoutError("slow"), TimeoutError(), DependencyTimeout("x", 2)],
)
@pytest.mark.parametrize("dialect", [NATIVE, CLOUDGPT, CREDITS, OPENAI, DISCOVERY])
def test_timeouts_and_redis_errors_render_as_503_in_every_dialect(dialect: str, exc: Exception) -> None:
    handlers = handlers_for(dialect)
    handler: Any = next(h for t, h in handlers.items() if isinstance(t, type) and isinstance(exc, t))
    response = handler(None, exc)
    assert response.status_code == 503
    body = orjson.loads(response.content)
    message = {
        NATIVE: lambda: body["message"],
        CREDITS: lambda: body["error"],
        DISCOVERY: lambda: body["error"]["message"],
    }.get(dialect, lambda: body["error"]["message"])()
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        assert "Redis" in message
    else:
        assert "unavailable" in message or "in time" in message
