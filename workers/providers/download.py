"""Bodies fetched from providers with a bound on their size and on the whole call's time.

Images and videos arrive as bodies of megabytes from a URL the provider chose: read them as a
stream and stop at the limit, rather than trusting a `content-length` or holding whatever
arrives.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from workers.http import Upstream
from workers.providers import ProviderError


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    content_type: str
    content: bytes


def _retry_after(headers: httpx.Headers) -> float | None:
    try:
        return float(headers.get("retry-after", ""))
    except ValueError:
        return None


async def fetch(
    http: Upstream,
    method: str,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> Fetched:
    """The response body, at most `max_bytes`, within `timeout` seconds in all.

    Timeouts, connection errors, 429 and 5xx are retryable ProviderErrors; other 4xx are not;
    a body over the limit is a retryable failure (another provider may do better).
    """
    try:
        async with asyncio.timeout(timeout):
            async with http.client.stream(
                method, url, params=params, headers=headers, json=json, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    body = await _head(response, 2048)
                    status = response.status_code
                    raise ProviderError(
                        f"HTTP {status}: {_reason(body) or response.reason_phrase}",
                        retryable=status == 429 or status >= 500,
                        status=status,
                        retry_after=_retry_after(response.headers) if status == 429 else None,
                    )
                declared = response.headers.get("content-length")
                if (
                    declared is not None
                    and declared.isascii()
                    and declared.isdigit()
                    and int(declared) > max_bytes
                ):
                    raise ProviderError(
                        f"the response is {int(declared):,} bytes, over the limit of {max_bytes:,}",
                        retryable=True,
                        status=response.status_code,
                    )
                buf = bytearray()
                async for chunk in response.aiter_bytes():
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise ProviderError(
                            f"the response is over the limit of {max_bytes:,} bytes",
                            retryable=True,
                            status=response.status_code,
                        )
                return Fetched(response.status_code, response.headers.get("content-type", ""), bytes(buf))
    except TimeoutError:
        raise ProviderError(f"timed out after {timeout:g}s", retryable=True) from None
    except httpx.TimeoutException:
        raise ProviderError(f"timed out after {timeout:g}s", retryable=True) from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"connection failed: {exc.__class__.__name__}: {exc}", retryable=True) from None


async def _head(response: httpx.Response, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf[:limit])


def _reason(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    if isinstance(err, str):
        return err
    return body.decode("utf-8", "replace")[:200]
