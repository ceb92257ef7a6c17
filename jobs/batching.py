"""Calls of one Lua script made in the same event-loop turn, sent to Redis as one pipeline.

Under load many jobs are submitted (web) or finished (worker) at once. Sent one by one, each
call is a socket write and a wake-up of Redis and of this process; on a small virtual machine
those dominate the cost of a job. Gathered per loop turn they cost one write and one read,
and a lone call (one client) goes out as soon as the loop turns, so its latency is unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


class ScriptBatcher:
    def __init__(self, redis: Redis, script: str, max_batch: int = 256) -> None:
        self.redis = redis
        self.script = redis.register_script(script)
        self.max_batch = max_batch
        self._pending: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._scheduled = False

    async def __call__(self, args: list[Any]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((args, fut))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)
        return await fut

    def _flush_soon(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        for i in range(0, len(batch), self.max_batch):
            asyncio.ensure_future(self._send(batch[i : i + self.max_batch]))

    async def _send(self, batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
        if len(batch) == 1:  # nothing to gather: the plain call, NOSCRIPT handled by redis-py
            args, fut = batch[0]
            try:
                result = await self.script(args=args)
            except BaseException as exc:  # noqa: BLE001 (handed to the caller)
                if not fut.done():
                    fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                if not fut.done():
                    fut.set_result(result)
            return
        try:
            results = await self._pipeline(batch)
        except BaseException as exc:  # noqa: BLE001 (handed to every caller)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def _pipeline(self, batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> list[Any]:
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for args, _ in batch:
                    pipe.evalsha(self.script.sha, 0, *args)
                results: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                # Redis restarted and lost its script cache: nothing ran; load and send again.
                await self.redis.script_load(self.script.script)
                continue
            return results
        return results
