"""Catalog changes relayed to this web process's `/ws/models` sockets.

Workers publish each refresh's changes on one Redis channel; every web process holds one
subscription to it (started with the first socket) and copies each event to every socket's
queue. A socket too slow to keep up loses events rather than holding the others back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from redis.asyncio import Redis

from jobs import pubsub
from jobs.deadletters import DeadLetters
from jobs.discovery import EVENTS_CHANNEL
from jobs.tasks import supervise

QUEUE_SIZE = 1000


class ModelEvents:
    def __init__(self, redis: Redis, dead_letters: DeadLetters | None = None) -> None:
        self.redis = redis
        self.dead_letters = dead_letters or DeadLetters(redis)
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def subscribe(self, timeout: float = 5.0) -> asyncio.Queue[dict[str, Any]]:
        """A queue of the events to come; once this returns, none published later is missed."""
        if self._listener is None or self._listener.done():
            self._listener = supervise("switchyard-model-events", self._listen)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            async with asyncio.timeout(timeout):
                await self._subscribed.wait()
        except BaseException:  # timed out, or the caller went away meanwhile
            self._queues.discard(queue)
            raise
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    async def _listen(self) -> None:
        await pubsub.listen(
            self.redis,
            [EVENTS_CHANNEL],
            self._on_events,
            what="model-events",
            on_subscribed=self._on_subscribed,
            on_lost=self._subscribed.clear,
        )

    async def _on_subscribed(self) -> None:
        self._subscribed.set()

    def _on_events(self, _channel: bytes, data: bytes) -> None:
        try:
            events = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self.dead_letters.add_soon("model-events", f"the event message is not JSON ({exc})", message=data)
            return
        if not isinstance(events, list | dict):
            self.dead_letters.add_soon(
                "model-events", "the event message is not an event or a list", message=data
            )
            return
        for queue in list(self._queues):
            for event in events if isinstance(events, list) else [events]:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        await self.dead_letters.drain()
