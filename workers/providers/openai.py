"""`kind = "openai"`: any OpenAI-compatible HTTP API (OpenAI, NIM, Groq, OpenRouter, vLLM, Ollama...)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from switchyard.providers import ProviderConfig
from workers.http import Upstream, UpstreamConnectionError, UpstreamResponse, UpstreamTimeout
from workers.providers import ProviderError


def _headers(provider: ProviderConfig) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json"), (b"accept", b"application/json")]
    key = provider.resolved_api_key()
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return headers


def _reason(response: UpstreamResponse) -> str:
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
            f"HTTP {status}: {_reason(response)}", retryable=retryable, status=status, retry_after=retry_after
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


async def list_models(http: Upstream, provider: ProviderConfig, timeout: float) -> list[str]:
    try:
        response = await http.client.get(
            provider.base_url + "/models", headers=_headers(provider), timeout=timeout
        )
        response.raise_for_status()
        data = orjson.loads(response.content)
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        raise ProviderError(f"model listing failed: {exc}", retryable=True) from None
    items = data.get("data") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ProviderError("model listing is not a list", retryable=False)
    return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]


async def embeddings(
    http: Upstream, provider: ProviderConfig, request: dict[str, Any], timeout: float
) -> dict[str, Any]:
    data = await post_json(http, provider, "/embeddings", request, timeout)
    if not isinstance(data.get("data"), list):
        raise ProviderError("returned no `data`: not an embeddings response", retryable=True)
    return data
