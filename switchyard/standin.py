"""A local stand-in for an OpenAI-compatible provider, for tests, benchmarks and demos.

A small HTTP/1.1 keep-alive server on raw asyncio (cheap enough to sit beside a benchmark
on two cores). It answers `GET .../models` and `POST .../chat/completions`, echoing the last
user message. Behaviour is steered per request by markers in that message — `[fail]` (500),
`[fail:N]` (500 for the first N calls carrying that marker), `[429]`, `[400]`, `[hang]`,
`[sleep:S]`, `[html]` — or for every request by the `fail_next`/`status` attributes (and
`status_message`, the error message a `status` answer carries);
`models_status`/`models_body` steer `GET /models`.

`POST .../embeddings` answers vectors drawn from a hash of each input (markers work there too).

With `"stream": true` the reply comes as Server-Sent Events in OpenAI's chunk format, one
word per chunk, over a chunked response: a role chunk, the content chunks, a finish chunk, a
usage chunk when `stream_options.include_usage`, then `data: [DONE]`. Markers for streams:
`[gap:S]` waits S seconds before each content chunk (a client that goes away meanwhile is
counted in `streams_abandoned`), `[step]` holds each content chunk until the test calls
`release_step()` (so a test can prove chunk k reached the client before chunk k+1 left),
`[die:N]` drops the connection after N content chunks,
`[sse-error:N]` sends an `error` event after N content chunks and ends the stream.

    python -m switchyard.standin --port 18080 --models mock/echo
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Self

import orjson

_MARK = re.compile(r"\[(fail|429|400|hang|sleep|html|gap|step|die|sse-error)(?::([0-9.]+))?\]")


class LoopbackServer:
    """An asyncio TCP server on `host:port` (0: a free port) serving `_serve`; the stand-ins'
    shared start and stop."""

    host: str
    port: int
    _server: asyncio.base_events.Server | None
    backlog = 100

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def start(self) -> Self:
        self._writers: set[asyncio.StreamWriter] = set()
        self._server = await asyncio.start_server(self._tracked, self.host, self.port, backlog=self.backlog)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _tracked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        finally:
            self._writers.discard(writer)

    async def stop(self) -> None:
        """Stop listening and close the open connections (`Server.close_clients` before Python
        3.13), so no connection outlives the loop that served it."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            self._server = None


@dataclass
class SSEReply:
    """A streamed answer: `events` are whole SSE events (bytes), each flagged as content or not."""

    events: list[tuple[bool, bytes]] = field(default_factory=list)
    gap_s: float = 0.0  # before each content event
    stepped: bool = False  # each content event waits for `StandIn.release_step()`
    die_after: int | None = None  # content events sent before the connection is dropped

    def add(self, data: Any, *, content: bool = False) -> None:
        payload = data if isinstance(data, bytes) else orjson.dumps(data)
        self.events.append((content, b"data: " + payload + b"\n\n"))


REASONING_TOKENS = {"minimal": 0, "low": 8, "medium": 32, "high": 128}  # tokens "thought" per effort


class StandIn(LoopbackServer):
    backlog = 1024

    def __init__(self, models: list[str] | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.models = models or ["mock/echo"]
        self.host = host
        self.port = port
        self.calls = 0
        self.chat_calls = 0
        self.embedding_calls = 0
        self.authorizations: list[str] = []  # the Authorization header of each call, when recording
        self.request_ids: list[str] = []  # the x-request-id header of each call, when recording
        self.fail_next = 0  # the next N chat calls answer 500
        self.status: int | None = None  # every chat call answers this status
        self.status_message = "stand-in status"  # with this error message
        self.models_status = 200
        self.models_body: bytes | None = None  # when set, `GET /models` answers exactly this
        self.models_calls = 0
        self.stream_calls = 0
        self.streams_died = 0  # streams dropped on purpose by `[die:N]`
        self.streams_abandoned = 0  # streams whose client went away before the end
        self.connections = 0  # accepted so far (keep-alive reuse shows as fewer than calls)
        self._marker_counts: Counter[str] = Counter()
        self._steps = asyncio.Semaphore(0)  # releases for `[step]` streams
        self.requests: list[dict[str, Any]] = []
        self.record = False
        self._server: asyncio.base_events.Server | None = None

    def release_step(self) -> None:
        """Let one held content chunk of a `[step]` stream go out."""
        self._steps.release()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == "content-length:":
                        length = int(line[15:].strip())
                    elif self.record and line[:14].lower() == "authorization:":
                        self.authorizations.append(line[14:].strip())
                    elif self.record and line[:13].lower() == "x-request-id:":
                        self.request_ids.append(line[13:].strip())
                body = await reader.readexactly(length) if length else b""
                status, payload, ctype = await self.handle(method, path, body)
                if isinstance(payload, SSEReply):
                    if not await self._stream(reader, writer, payload):
                        return
                    continue
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
                    % (status, ctype.encode(), len(payload))
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: SSEReply
    ) -> bool:
        """Write `reply` as a chunked event stream; False when the connection is to be dropped."""
        self.stream_calls += 1
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        sent = 0
        for content, event in reply.events:
            if content:
                if reply.die_after is not None and sent >= reply.die_after:
                    self.streams_died += 1
                    writer.transport.abort()  # no terminating chunk: the body is cut short
                    return False
                if reply.gap_s > 0 and await self._client_gone(reader, reply.gap_s):
                    self.streams_abandoned += 1
                    return False
                if reply.stepped:
                    await asyncio.wait_for(self._steps.acquire(), 30)
                sent += 1
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    async def _client_gone(reader: asyncio.StreamReader, wait_s: float) -> bool:
        """Wait `wait_s`, noticing meanwhile whether the client closed the connection."""
        try:
            return await asyncio.wait_for(reader.read(1), wait_s) == b""
        except TimeoutError:
            return False

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes | SSEReply, str]:
        self.calls += 1
        if method == "GET" and path.endswith("/models"):
            self.models_calls += 1
            if self.models_body is not None:
                return self.models_status, self.models_body, "application/json"
            if self.models_status != 200:
                return self.models_status, b'{"error":{"message":"models unavailable"}}', "application/json"
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "standin"} for m in self.models]
            return 200, orjson.dumps({"object": "list", "data": data}), "application/json"
        if method == "POST" and path.endswith("/chat/completions"):
            return await self.chat(orjson.loads(body or b"{}"))
        if method == "POST" and path.endswith("/embeddings"):
            return await self.embeddings(orjson.loads(body or b"{}"))
        return 404, b'{"error":{"message":"no such route"}}', "application/json"

    async def chat(self, req: dict[str, Any]) -> tuple[int, bytes | SSEReply, str]:
        self.chat_calls += 1
        if self.record:
            self.requests.append(req)
        messages = req.get("messages") or [{}]
        text = str(messages[-1].get("content") or "")
        for kind, arg in _MARK.findall(text):
            if kind == "hang":
                await asyncio.sleep(3600)
            elif kind == "sleep":
                await asyncio.sleep(float(arg or 0))
            elif kind == "fail":
                key = f"{kind}:{arg}:{text}"
                self._marker_counts[key] += 1
                if not arg or self._marker_counts[key] <= float(arg):
                    return 500, b'{"error":{"message":"stand-in failure"}}', "application/json"
            elif kind in ("429", "400"):
                return (
                    int(kind),
                    b'{"error":{"message":"stand-in says %s"}}' % kind.encode(),
                    "application/json",
                )
            elif kind == "html":
                return 200, b"<html>not json</html>", "text/html"
        if self.fail_next > 0:
            self.fail_next -= 1
            return 500, b'{"error":{"message":"stand-in failure"}}', "application/json"
        if self.status is not None:
            return self.status, orjson.dumps({"error": {"message": self.status_message}}), "application/json"
        reply = "echo: " + text
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        completion_tokens = len(reply.split())
        if req.get("stream") is True:
            return 200, self._sse(req, text, reply, prompt_tokens, completion_tokens), "text/event-stream"
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if req.get("reasoning_effort"):  # as OpenAI's reasoning models count their thinking
            thought = REASONING_TOKENS.get(str(req["reasoning_effort"]), 0)
            usage["completion_tokens"] += thought
            usage["total_tokens"] += thought
            usage["completion_tokens_details"] = {"reasoning_tokens": thought}
        body = {
            "id": f"chatcmpl-standin{self.chat_calls}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", "mock/echo"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            ],
            "usage": usage,
        }
        return 200, orjson.dumps(body), "application/json"

    def _sse(
        self, req: dict[str, Any], text: str, reply: str, prompt_tokens: int, completion_tokens: int
    ) -> SSEReply:
        marks = {kind: arg for kind, arg in _MARK.findall(text)}
        out = SSEReply(gap_s=float(marks.get("gap") or 0), stepped="step" in marks)
        if "die" in marks:
            out.die_after = int(float(marks["die"] or 0))
        head = {
            "id": f"chatcmpl-standin{self.chat_calls}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": req.get("model", "mock/echo"),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        out.add(chunk({"role": "assistant", "content": ""}))
        words = reply.split(" ")
        error_after = int(float(marks["sse-error"] or 0)) if "sse-error" in marks else None
        for i, word in enumerate(words):
            if error_after is not None and i == error_after:
                out.add({"error": {"message": "stand-in stream error", "type": "server_error"}}, content=True)
                return out
            out.add(chunk({"content": word if i == 0 else " " + word}), content=True)
        out.add(chunk({}, "stop"))
        options = req.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            out.add({**head, "choices": [], "usage": usage})
        out.add(b"[DONE]")
        return out

    async def embeddings(self, req: dict[str, Any]) -> tuple[int, bytes, str]:
        """One vector per input, `dimensions` long (default 16): each value is a byte of a SHA-256
        stream of the text, scaled to [-1, 1) in steps of 1/128 (exact in float32)."""
        self.embedding_calls += 1
        if self.record:
            self.requests.append(req)
        raw = req.get("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            return 400, b'{"error":{"message":"input is required"}}', "application/json"
        texts = [t if isinstance(t, str) else " ".join(str(i) for i in t) for t in raw]
        for text in texts:
            for kind, arg in _MARK.findall(text):
                if kind == "sleep":
                    await asyncio.sleep(float(arg or 0))
                elif kind == "fail":
                    key = f"embed:{kind}:{arg}:{text}"
                    self._marker_counts[key] += 1
                    if not arg or self._marker_counts[key] <= float(arg):
                        return 500, b'{"error":{"message":"stand-in failure"}}', "application/json"
                elif kind in ("429", "400"):
                    return (
                        int(kind),
                        b'{"error":{"message":"stand-in says %s"}}' % kind.encode(),
                        "application/json",
                    )
        if self.status is not None:
            return self.status, orjson.dumps({"error": {"message": self.status_message}}), "application/json"
        dims = int(req.get("dimensions") or 16)
        tokens = sum(len(t.split()) if isinstance(t, str) else len(t) for t in raw)
        body = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": standin_vector(text, dims)}
                for i, text in enumerate(texts)
            ],
            "model": req.get("model", "mock/embed"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return 200, orjson.dumps(body), "application/json"


def standin_vector(text: str, dims: int) -> list[float]:
    """The stand-in's embedding of `text` (tests compute the expected vectors with it)."""
    stream = b""
    block = 0
    while len(stream) < dims:
        stream += hashlib.sha256(f"{block}:{text}".encode()).digest()
        block += 1
    return [(b - 128) / 128 for b in stream[:dims]]


async def _main(args: argparse.Namespace) -> None:
    standin = await StandIn(args.models.split(","), port=args.port).start()
    print(f"stand-in provider on {standin.base_url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="local OpenAI-compatible stand-in provider")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--models", default="mock/echo")
    ns = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(_main(ns))
