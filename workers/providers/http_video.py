"""`kind = "http-video"`: GET `{base_url}/prompt/{prompt}?duration=&width=&height=&seed=&model=`
answers an MP4 (Pollinations' shape for video). Video is slow to make: its calls get
`SWITCHYARD_VIDEO_TIMEOUT_S` unless the provider entry sets `timeout_s`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from switchyard.providers import ProviderConfig
from workers.http import Upstream
from workers.providers import ProviderError
from workers.providers.download import fetch


def is_mp4(data: bytes) -> bool:
    """An ISO base media file starts with a box whose type is `ftyp` (MP4, MOV, 3GP...)."""
    return len(data) >= 12 and data[4:8] == b"ftyp"


async def generate(
    http: Upstream,
    provider: ProviderConfig,
    *,
    model: str,
    prompt: str,
    width: int,
    height: int,
    duration: float,
    seed: int | None,
    timeout: float,
    max_bytes: int,
) -> bytes:
    params: dict[str, Any] = {"model": model, "duration": f"{duration:g}", "width": width, "height": height}
    if seed is not None:
        params["seed"] = seed
    headers = {"accept": "video/mp4"}
    key = provider.resolved_api_key()
    if key:
        headers["authorization"] = f"Bearer {key}"
    url = f"{provider.base_url}/prompt/{quote(prompt, safe='')}"
    fetched = await fetch(
        http, "GET", url, params=params, headers=headers, timeout=timeout, max_bytes=max_bytes
    )
    if not is_mp4(fetched.content):
        what = fetched.content_type or "unknown content"
        raise ProviderError(f"returned something that is not an MP4 video ({what})", retryable=True)
    return fetched.content
