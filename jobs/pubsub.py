"""A Redis pub/sub subscription that outlives lost connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("switchyard.pubsub")


async def listen(
    redis: Redis,
    channels: Sequence[str],
    on_message: Callable[[bytes, bytes], None],
    *,
    what: str,
    on_subscribed: Callable[[], Awaitable[None]] | None = None,
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Hand every message on `channels` to `on_message(channel, data)`, until cancelled.

    A lost connection is logged, `on_lost` called, and the subscription made again after a
    backoff (50 ms, doubling up to 2 s); `on_subscribed` runs each time it is in place, so a
    caller can catch up on what was published while it was away. A message `on_message`
    fails on is logged and skipped: one bad message never ends the subscription.
    """
    backoff = 0.05
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            backoff = 0.05
            if on_subscribed is not None:
                await on_subscribed()
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if msg is not None and msg["type"] == "message":
                    try:
                        on_message(msg["channel"], msg["data"])
                    except Exception:  # the callback's own bug: this message is lost, not the rest
                        log.exception(
                            "%s: a message on %r could not be handled: %.200r",
                            what,
                            msg["channel"],
                            msg["data"],
                        )
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            raise
        except (RedisError, OSError) as exc:
            if on_lost is not None:
                on_lost()
            log.warning("%s subscription lost (%s); reconnecting", what, exc)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
