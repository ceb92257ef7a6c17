"""A streamed chat completion: the provider's chunks relayed into the job's Redis stream as
they arrive, and assembled into the completion that becomes the job's result.

Before the first chunk a provider failure is an ordinary `ProviderError` (the handler retries
it or falls back to the next provider); once chunks have gone out nothing is retried: the
stream gets an error entry and the job fails with the reason. A run of a job whose stream
already has entries (its worker died mid-stream) fails at once for the same reason.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import orjson

from jobs.streams import CHUNK, END, ERROR, STREAM_END_TTL_S, STREAM_MAXLEN, stream_key
from switchyard.errors import ProviderFailed
from switchyard.providers import ProviderConfig
from workers.context import WorkerCtx
from workers.providers import ProviderError
from workers.providers import openai as openai_provider


class Assembler:
    """Normalises chunks (our model id, OpenAI's object name) and builds the whole completion."""

    def __init__(self, job_id: str, model: str) -> None:
        self.model = model
        self.id = "chatcmpl-" + job_id
        self.created = int(time.time())
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.extra: dict[str, Any] = {}  # system_fingerprint and the like, from the provider

    def add(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """The chunk to relay, or None when it carried only usage."""
        usage = chunk.pop("usage", None)
        if isinstance(usage, dict):
            self.usage = usage
        if isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
        if isinstance(chunk.get("created"), int):
            self.created = chunk["created"]
        if isinstance(chunk.get("system_fingerprint"), str):
            self.extra["system_fingerprint"] = chunk["system_fingerprint"]
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            choices = []
        if not choices and usage is not None:
            return None
        for choice in choices:
            if isinstance(choice, dict):
                self._merge(choice)
        chunk["id"], chunk["created"] = self.id, self.created
        chunk["object"] = "chat.completion.chunk"
        chunk["model"] = self.model
        chunk["choices"] = choices
        return chunk

    def _merge(self, choice: dict[str, Any]) -> None:
        raw_index = choice.get("index")
        index = raw_index if isinstance(raw_index, int) else 0
        acc = self.choices.setdefault(index, {"index": index, "message": {"role": "assistant"}})
        message = acc["message"]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for name, value in delta.items():
                if name == "tool_calls" and isinstance(value, list):
                    _merge_tool_calls(message.setdefault("tool_calls", []), value)
                elif isinstance(value, str) and name != "role":
                    before = message.get(name)
                    message[name] = (before if isinstance(before, str) else "") + value
                elif value is not None:
                    message[name] = value
        if choice.get("finish_reason") is not None:
            acc["finish_reason"] = choice["finish_reason"]

    def completion(self, request: dict[str, Any]) -> dict[str, Any]:
        """The job's result: what the same call without `stream` would have answered."""
        choices = []
        for index in sorted(self.choices):
            acc = self.choices[index]
            acc["message"].setdefault("content", None if "tool_calls" in acc["message"] else "")
            choices.append(
                {"index": index, "message": acc["message"], "finish_reason": acc.get("finish_reason")}
            )
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage_or_estimate(request),
            **self.extra,
        }

    def usage_or_estimate(self, request: dict[str, Any]) -> dict[str, int]:
        """The provider's usage; a provider that reports none gets about 4 characters a token,
        so that a stream still counts against the key's token limits."""
        if self.usage is not None:
            prompt = _int(self.usage.get("prompt_tokens"))
            completion = _int(self.usage.get("completion_tokens"))
        else:
            prompt_chars = sum(len(str(m.get("content") or "")) for m in request.get("messages") or [])
            text_chars = sum(len(str(c["message"].get("content") or "")) for c in self.choices.values())
            prompt, completion = math.ceil(prompt_chars / 4), math.ceil(text_chars / 4)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        """OpenAI's last chunk under `stream_options.include_usage`."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }


def _merge_tool_calls(calls: list[dict[str, Any]], deltas: list[Any]) -> None:
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        raw_index = delta.get("index")
        index = raw_index if isinstance(raw_index, int) and 0 <= raw_index < 128 else len(calls)
        while len(calls) <= index:
            calls.append({"type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        for name in ("id", "type"):
            if isinstance(delta.get(name), str):
                call[name] = delta[name]
        fn = delta.get("function")
        if isinstance(fn, dict):
            for name in ("name", "arguments"):
                if isinstance(fn.get(name), str):
                    call["function"][name] += fn[name]


def _is_preamble(chunk: dict[str, Any]) -> bool:
    """A chunk with no output in it: only the role, or empty content."""
    for choice in chunk["choices"]:
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
            return False
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(v not in (None, "") for k, v in delta.items() if k != "role"):
            return False
    return True


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


class StreamWriter:
    """Appends to one job's stream; the first entry also sets the key's expiry."""

    def __init__(self, ctx: WorkerCtx, job_id: str) -> None:
        self.redis = ctx["redis"]
        self.key = stream_key(job_id)
        self.ttl_s = int(ctx["settings"].job_timeout_s) + STREAM_END_TTL_S
        self.sent = 0

    async def chunks(self, chunks: list[dict[str, Any]]) -> None:
        """One entry per chunk, in one round trip."""
        await self._add([(CHUNK, orjson.dumps(c)) for c in chunks], self.ttl_s if self.sent == 0 else None)
        self.sent += len(chunks)

    async def end(self, usage_chunk: dict[str, Any]) -> None:
        await self._add([(END, orjson.dumps(usage_chunk))], STREAM_END_TTL_S)

    async def error(self, message: str, error_type: str, status: int) -> None:
        body = {"message": message, "type": error_type, "code": error_type, "status": status}
        await self._add([(ERROR, orjson.dumps(body))], STREAM_END_TTL_S)

    async def _add(self, entries: list[tuple[bytes, bytes]], ttl_s: int | None) -> None:
        if ttl_s is None and len(entries) == 1:
            kind, data = entries[0]
            await self.redis.xadd(self.key, {kind: data}, maxlen=STREAM_MAXLEN, approximate=True)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for kind, data in entries:
                pipe.xadd(self.key, {kind: data}, maxlen=STREAM_MAXLEN, approximate=True)
            if ttl_s is not None:
                pipe.expire(self.key, ttl_s)
            await pipe.execute()


async def relay_chat_stream(
    ctx: WorkerCtx, job_id: str, provider: ProviderConfig, model: str, request: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Stream `request` from `provider` into the job's stream; the assembled completion."""
    writer = StreamWriter(ctx, job_id)
    if ctx.get("job_try", 1) > 1 and await ctx["redis"].exists(writer.key):
        raise ProviderFailed("the stream was interrupted after chunks were sent; a stream is not retried")
    upstream = {**request, "stream": True, "stream_options": {"include_usage": True}}
    # Chunks name the model the caller asked for (a persona's "@org/name", say), as the
    # completion without `stream` does, not the base model that serves it.
    assembler = Assembler(job_id, (ctx.get("job") or {}).get("model") or model)
    try:
        chunks = openai_provider.stream_chat_completion(ctx["http"], provider, upstream, timeout)
        # Chunks that carry nothing yet (the role, empty content) wait for the first one that
        # does and go out with it: one Redis round trip less before the first token.
        held: list[dict[str, Any]] = []
        async with contextlib.aclosing(chunks):
            async for batch in chunks:
                relayed = held + [out for out in map(assembler.add, batch) if out is not None]
                if writer.sent == 0 and all(map(_is_preamble, relayed)):
                    held = relayed
                    continue
                held = []
                if relayed:
                    await writer.chunks(relayed)
        if held:
            await writer.chunks(held)
    except ProviderError as exc:
        if writer.sent == 0:
            raise  # nothing went out yet: retried or passed to the next provider like any call
        failed = ProviderFailed(
            f"provider {provider.name!r} failed after {writer.sent} streamed chunks (not retried): {exc}"
        )
        await writer.error(failed.message, failed.error_type, failed.status_code)
        raise failed from None
    completion = assembler.completion(request)
    await writer.end(assembler.usage_chunk(completion["usage"]))
    return completion
