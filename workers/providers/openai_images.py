"""`kind = "openai"` models of type image: OpenAI's images API, `POST {base_url}/images/generations`.

One image per call (DALL-E 3 takes only n=1; the handler runs n calls at once). The image
comes back as `b64_json`, or as a `url` fetched here with the same size and time limits.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from switchyard.providers import ProviderConfig
from switchyard.urls import check_url_async
from workers.http import Upstream
from workers.providers import ProviderError
from workers.providers.download import fetch

PASSED_ON = ("quality", "style", "negative_prompt", "user", "background", "moderation")
SIZES = frozenset({"256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536"})


def upstream_size(width: int, height: int) -> str:
    """The size to ask for: the requested one when OpenAI's API has it, else the square or the
    landscape or portrait size closest in aspect (the pipeline fits the result exactly)."""
    size = f"{width}x{height}"
    if size in SIZES:
        return size
    aspect = width / height
    return "1024x1024" if 0.8 <= aspect <= 1.25 else ("1792x1024" if aspect > 1 else "1024x1792")


async def generate(
    http: Upstream,
    provider: ProviderConfig,
    *,
    model: str,
    prompt: str,
    width: int,
    height: int,
    seed: int | None,
    options: dict[str, Any],
    timeout: float,
    max_bytes: int,
    allow_private_urls: bool,
) -> tuple[bytes, str | None]:
    """The image's bytes and the provider's revised prompt, if it gave one."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "n": 1, "size": upstream_size(width, height)}
    body["response_format"] = "b64_json"
    if seed is not None:
        body["seed"] = seed
    for name in (*PASSED_ON, *provider.image_params):  # the extras only where the file says so
        if options.get(name) is not None:
            body[name] = options[name]
    headers = {"content-type": "application/json", "accept": "application/json"}
    key = provider.resolved_api_key()
    if key:
        headers["authorization"] = f"Bearer {key}"
    # Base64 inflates by a third; the JSON around it is small.
    fetched = await fetch(
        http,
        "POST",
        provider.base_url + "/images/generations",
        json=body,
        headers=headers,
        timeout=timeout,
        max_bytes=max_bytes * 4 // 3 + 65_536,
    )
    try:
        data = orjson.loads(fetched.content)
    except orjson.JSONDecodeError:
        raise ProviderError("returned a body that is not JSON", retryable=True) from None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items or not isinstance(items[0], dict):
        raise ProviderError("returned no `data`: not an images response", retryable=True)
    item = items[0]
    revised = item.get("revised_prompt") if isinstance(item.get("revised_prompt"), str) else None
    if isinstance(item.get("b64_json"), str):
        try:
            return base64.b64decode(item["b64_json"], validate=True), revised
        except (binascii.Error, ValueError):
            raise ProviderError("returned `b64_json` that is not base64", retryable=True) from None
    if isinstance(item.get("url"), str):
        url = item["url"]
        try:
            await check_url_async(url, allow_private=allow_private_urls)
        except Exception as exc:  # noqa: BLE001 (an InvalidRequest here is the provider's fault)
            raise ProviderError(
                f"returned an image URL that may not be fetched: {exc}", retryable=True
            ) from None
        image = await fetch(http, "GET", url, timeout=timeout, max_bytes=max_bytes)
        return image.content, revised
    raise ProviderError("returned neither `b64_json` nor `url`", retryable=True)
