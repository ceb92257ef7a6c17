"""`kind = "pollinations-image"`: GET `{base_url}/prompt/{prompt}?width=&height=&seed=&model=`
answers the image's bytes (Pollinations' keyless image API and anything shaped like it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from switchyard.providers import ProviderConfig
from workers.http import Upstream
from workers.providers.download import fetch

# Options of the request that Pollinations understands, passed on as query parameters.
PASSED_ON = ("negative_prompt", "enhance", "safe", "nologo", "private", "quality", "guidance_scale")


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
) -> bytes:
    params: dict[str, Any] = {"width": width, "height": height, "model": model, "nologo": "true"}
    if seed is not None:
        params["seed"] = seed
    if options.get("safety_checker") is not None and options.get("safe") is None:
        options = {**options, "safe": options["safety_checker"]}  # 000's name for Pollinations' `safe`
    for name in PASSED_ON:
        value = options.get(name)
        if value is not None:
            params[name] = str(value).lower() if isinstance(value, bool) else value
    headers = {"accept": "image/*"}
    key = provider.resolved_api_key()
    if key:
        headers["authorization"] = f"Bearer {key}"
    url = f"{provider.base_url}/prompt/{quote(prompt, safe='')}"
    fetched = await fetch(
        http, "GET", url, params=params, headers=headers, timeout=timeout, max_bytes=max_bytes
    )
    return fetched.content
