"""`kind = "openai"`: any OpenAI-compatible HTTP API (OpenAI, NIM, Groq, OpenRouter, vLLM, Ollama...)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import orjson

from switchyard.providers import ProviderConfig
from workers.http import Upstream, UpstreamConnectionError, UpstreamResponse, UpstreamTimeout
from workers.providers import ProviderError
from workers.sse import Event, SSEDecoder, SSEError


def _headers(provider: ProviderConfig) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json"), (b"accept", b"application/json")]
    key = provider.resolved_api_key()
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return headers


def _reason(response: UpstreamResponse, provider: ProviderConfig) -> str:
    """What the provider said went wrong, without the key it was sent (an upstream that echoes
    the key it refused would otherwise put it in the job's error for the caller and the database)."""
    key = provider.resolved_api_key()
    reason = _upstream_message(response)
    return reason.replace(key, "[redacted]") if key else reason


def _upstream_message(response: UpstreamResponse) -> str:
    try:
        body = orjson.loads(response.content)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except orjson.JSONDecodeError:
        pass
    text = response.content.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:200] or f"HTTP {response.status_code}"


async def post_json(
    http: Upstream, provider: ProviderConfig, path: str, body: dict[str, Any], timeout: float
) -> dict[str, Any]:
    try:
        response = await http.post(provider.base_url + path, orjson.dumps(body), _headers(provider), timeout)
    except UpstreamTimeout:
        raise ProviderError(f"timed out after {timeout:g}s", retryable=True) from None
    except UpstreamConnectionError as exc:
        raise ProviderError(f"connection failed: {exc}", retryable=True) from None
    status = response.status_code
    if status >= 400:
        retry_after = None
        if status == 429:
            try:
                retry_after = float(response.headers.get("retry-after", ""))
            except ValueError:
                retry_after = None
        retryable = status == 429 or status >= 500
        raise ProviderError(
            f"HTTP {status}: {_reason(response, provider)}",
            retryable=retryable,
            status=status,
            retry_after=retry_after,
        )
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ProviderError("returned a body that is not JSON", retryable=True, status=status) from None
    if not isinstance(data, dict):
        raise ProviderError("returned JSON that is not an object", retryable=True, status=status)
    return data


async def chat_completion(
    http: Upstream, provider: ProviderConfig, request: dict[str, Any], timeout: float
) -> dict[str, Any]:
    data = await post_json(http, provider, "/chat/completions", request, timeout)
    if not isinstance(data.get("choices"), list):
        raise ProviderError("returned no `choices`: not a chat completion", retryable=True)
    return data


async def stream_chat_completion(
    http: Upstream, provider: ProviderConfig, request: dict[str, Any], timeout: float
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The provider's `chat.completion.chunk` objects as they arrive (`request` asks for a
    stream), in batches: the chunks that one read from the connection completed. Every failure
    is a `ProviderError`, whether before the first chunk or after it (the chunks before it in
    the same read come first); the caller knows which. Closing the generator early closes the
    connection."""
    headers = [(k, b"text/event-stream" if k == b"accept" else v) for k, v in _headers(provider)]
    try:
        async with http.stream_post(
            provider.base_url + "/chat/completions", orjson.dumps(request), headers, timeout
        ) as response:
            status = response.status_code
            if status >= 400:
                body = await response.read()
                retry_after = None
                if status == 429:
                    try:
                        retry_after = float(response.headers.get("retry-after", ""))
                    except ValueError:
                        retry_after = None
                reason = _reason(UpstreamResponse(status, response.headers, body), provider)
                raise ProviderError(
                    f"HTTP {status}: {reason}",
                    retryable=status == 429 or status >= 500,
                    status=status,
                    retry_after=retry_after,
                )
            ctype = response.headers.get("content-type", "")
            if not ctype.startswith("text/event-stream"):
                # Some providers ignore `stream` and answer in one piece: still a completion.
                body = await response.read(limit=16_000_000)
                yield [_as_chunk(_completion(UpstreamResponse(status, response.headers, body)))]
                return
            decoder = SSEDecoder()
            done = False
            pieces = response.chunks()
            async for piece in pieces:
                batch, done, failure = _chunks(decoder.feed(piece))
                if batch:
                    yield batch
                if failure is not None:
                    raise failure
                if done:
                    await _drain(pieces)
                    break
            if not done:
                batch, done, failure = _chunks(decoder.close())
                if batch:
                    yield batch
                if failure is not None:
                    raise failure
            if not done:
                raise ProviderError("the stream ended without `data: [DONE]`", retryable=True, status=status)
    except UpstreamTimeout:
        raise ProviderError(f"no data for {timeout:g}s", retryable=True) from None
    except UpstreamConnectionError as exc:
        raise ProviderError(f"connection failed: {exc}", retryable=True) from None
    except SSEError as exc:
        raise ProviderError(f"broken event stream: {exc}", retryable=True) from None


DRAIN_S = 1.0


async def _drain(pieces: AsyncIterator[bytes]) -> None:
    """Read what follows `[DONE]` (the end of the chunked body, usually already here) so that
    the connection goes back to the pool instead of being closed; a provider that does not end
    the body soon after is left (the connection is closed) and the stream is complete anyway."""
    with contextlib.suppress(TimeoutError, UpstreamTimeout, UpstreamConnectionError):
        async with asyncio.timeout(DRAIN_S):
            async for _ in pieces:
                pass


def _chunks(events: list[Event]) -> tuple[list[dict[str, Any]], bool, ProviderError | None]:
    """The chunks of `events` up to `[DONE]` or a failure; whether `[DONE]` came; the failure."""
    batch: list[dict[str, Any]] = []
    for event in events:
        try:
            chunk = _chunk(event.data, event.event)
        except ProviderError as exc:
            return batch, False, exc
        if chunk is None:
            return batch, True, None
        batch.append(chunk)
    return batch, False, None


def _chunk(data: str, event: str) -> dict[str, Any] | None:
    """One event's chunk; None for `[DONE]`. An error event or object is a ProviderError."""
    if data.strip() == "[DONE]":
        return None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderError(f"sent an event that is not JSON: {data[:120]!r}", retryable=True) from None
    if not isinstance(chunk, dict):
        raise ProviderError("sent an event that is not a JSON object", retryable=True)
    err = chunk.get("error")
    if err is not None or event == "error":
        message = err.get("message") if isinstance(err, dict) else err
        raise ProviderError(f"error in the stream: {message or data[:200]}", retryable=True)
    return chunk


def _completion(response: UpstreamResponse) -> dict[str, Any]:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ProviderError("returned a body that is not JSON", retryable=True) from None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise ProviderError("returned no `choices`: not a chat completion", retryable=True)
    return data


def _as_chunk(completion: dict[str, Any]) -> dict[str, Any]:
    """A whole completion as the one chunk that carries all of it."""
    choices = []
    for i, choice in enumerate(completion["choices"]):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        delta = dict(message) if isinstance(message, dict) else {}
        choices.append(
            {"index": choice.get("index", i), "delta": delta, "finish_reason": choice.get("finish_reason")}
        )
    return {**completion, "object": "chat.completion.chunk", "choices": choices}


async def list_models(http: Upstream, provider: ProviderConfig, timeout: float) -> list[dict[str, Any]]:
    """The provider's `GET /models`, each model reduced to what the catalog keeps; a listing
    that is not one (an error status, not JSON, no list of objects with ids) is an error."""
    try:
        response = await http.client.get(
            provider.base_url + "/models", headers=_headers(provider), timeout=timeout
        )
    except httpx.TimeoutException:
        raise ProviderError(f"model listing timed out after {timeout:g}s", retryable=True) from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"model listing failed: {exc.__class__.__name__}", retryable=True) from None
    if response.status_code >= 400:
        reason = _reason(
            UpstreamResponse(response.status_code, dict(response.headers), response.content), provider
        )
        raise ProviderError(f"model listing failed: HTTP {response.status_code}: {reason}", retryable=True)
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ProviderError("model listing is not JSON", retryable=False) from None
    items = data.get("data", data.get("models")) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ProviderError("model listing has no list of models", retryable=False)
    # a plain list of ids is a listing too (Pollinations' image API answers `["flux", ...]`)
    items = [{"id": m} if isinstance(m, str) else m for m in items]
    models = [
        _listed_model(m) for m in items if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]
    ]
    if items and not models:
        raise ProviderError("model listing has no model ids", retryable=False)
    return models


def _listed_model(item: dict[str, Any]) -> dict[str, Any]:
    """What the catalog keeps of a listed model: its id, and the common optional fields of
    OpenAI, OpenRouter, vLLM and the like when they have the expected types."""
    out: dict[str, Any] = {"id": item["id"]}
    if isinstance(item.get("created"), int):
        out["created"] = item["created"]
    for name in ("owned_by", "name", "description"):
        if isinstance(item.get(name), str) and item[name]:
            out[name] = item[name][:500]
    for name in ("context_length", "context_window", "max_model_len"):
        if isinstance(item.get(name), int) and item[name] > 0:
            out["context_length"] = item[name]
            break
    pricing = item.get("pricing")
    if isinstance(pricing, dict):  # OpenRouter: US dollars per token, as strings
        for src, dst in (("prompt", "input_cost"), ("completion", "output_cost")):
            try:
                out[dst] = round(float(pricing[src]) * 1000, 9)
            except (KeyError, TypeError, ValueError):
                pass
    return out


async def embeddings(
    http: Upstream, provider: ProviderConfig, request: dict[str, Any], timeout: float
) -> dict[str, Any]:
    data = await post_json(http, provider, "/embeddings", request, timeout)
    if not isinstance(data.get("data"), list):
        raise ProviderError("returned no `data`: not an embeddings response", retryable=True)
    return data
