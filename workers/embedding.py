"""Embeddings through `kind = "openai"` providers (POST {base_url}/embeddings), with fallbacks.

Providers are always asked for floats; the job's result is OpenAI's embeddings list in the
encoding the caller asked for (base64: little-endian float32, as OpenAI sends it).
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from jobs.kinds import EmbeddingPayload
from switchyard.providers import ProviderConfig
from workers.context import WorkerCtx
from workers.fallback import call_with_fallbacks
from workers.providers import ProviderError
from workers.providers import openai as openai_provider


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def decode_base64(text: str) -> list[float]:
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 4:
        raise ValueError("not a whole number of float32 values")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _vectors(data: dict[str, Any], expected: int) -> list[list[float]]:
    """The provider's embeddings in input order, as floats; a malformed answer is the provider's
    failure (tried again, then on the next provider)."""
    items = data["data"]
    if len(items) != expected:
        raise ProviderError(f"returned {len(items)} embeddings for {expected} inputs", retryable=True)
    vectors: list[list[float] | None] = [None] * expected
    for position, item in enumerate(items):
        index = item.get("index", position) if isinstance(item, dict) else None
        raw = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < expected or vectors[index] is not None:
            raise ProviderError("returned embeddings with missing or repeated indexes", retryable=True)
        try:
            if isinstance(raw, str):
                vectors[index] = decode_base64(raw)
            elif isinstance(raw, list) and raw and all(isinstance(v, int | float) for v in raw):
                vectors[index] = [float(v) for v in raw]
            else:
                raise ValueError("not a list of numbers")
        except (ValueError, binascii.Error) as exc:
            raise ProviderError(f"returned an embedding that is {exc}", retryable=True) from None
    return vectors  # type: ignore[return-value]


async def create_embeddings(ctx: WorkerCtx, job_id: str, payload: EmbeddingPayload) -> dict[str, Any]:
    request = payload["request"]
    inputs = request["input"]
    # One text or one token array is one input; a list of either is several.
    count = 1 if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)) else len(inputs)
    wanted = request.get("encoding_format") or "float"
    body = {**request, "model": payload["model"], "encoding_format": "float"}

    async def call(provider: ProviderConfig, timeout: float) -> tuple[list[list[float]], int]:
        data = await openai_provider.embeddings(ctx["http"], provider, body, timeout)
        usage = data.get("usage")
        return _vectors(data, count), _int(usage.get("prompt_tokens") if isinstance(usage, dict) else None)

    provider, (vectors, prompt_tokens) = await call_with_fallbacks(ctx, payload, call)
    result = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_base64(v) if wanted == "base64" else v}
            for i, v in enumerate(vectors)
        ],
        "model": payload["model"],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    price = provider.prices.get(payload["model"])
    return {
        "result": result,
        "provider": provider.name,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 0},
        "cost": price.cost(prompt_tokens, 0) if price else 0.0,
    }


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
