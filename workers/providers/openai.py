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
        reason = _reason(UpstreamResponse(response.status_code, dict(response.headers), response.content))
        raise ProviderError(f"model listing failed: HTTP {response.status_code}: {reason}", retryable=True)
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ProviderError("model listing is not JSON", retryable=False) from None
    items = data.get("data", data.get("models")) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ProviderError("model listing has no list of models", retryable=False)
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
