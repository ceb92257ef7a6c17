"""The process's one pooled HTTP client for providers.

An `httpx.AsyncClient` for general calls (model discovery and the like), and for the hot
path — a provider call per job — the connection pool of httpcore, the engine under httpx,
used directly: provider calls need no cookies, auth flows, redirects or URL merging, and
skipping httpx's request and response models halves the CPU per call, which is most of a
worker's CPU per job. Its sockets are asyncio's own (`workers.netstream`), not anyio's,
which takes another quarter off a worker's CPU per job. Its HTTP/1.1 connections parse with
httptools (`workers.h1`), not h11: under half the CPU per call (`python -m bench.provider_call`;
`SWITCHYARD_PROVIDER_CLIENT=httpcore` brings back httpcore's own, to compare).

The hot path spreads its calls over several small pools: httpcore's pool walks every one of
its connections (a readability check each) for every request it places (encode/httpcore#1035),
which with 64 jobs in flight on one pool costs more than the calls themselves.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from switchyard.logs import REQUEST_ID
from switchyard.settings import Settings
from workers.h1 import HttptoolsPool
from workers.netstream import AsyncioBackend


@dataclass(slots=True)
class UpstreamResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes


@dataclass(slots=True)
class UpstreamStream:
    """A response whose body is read as it arrives (a provider's event stream)."""

    status_code: int
    headers: dict[str, str]
    _response: httpcore.Response

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_stream():
                yield chunk
        except httpcore.TimeoutException as exc:
            raise UpstreamTimeout(str(exc) or exc.__class__.__name__) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            raise UpstreamConnectionError(f"{exc.__class__.__name__}: {exc}") from None

    async def read(self, limit: int = 65536) -> bytes:
        """The body (of an error answer), up to about `limit` bytes."""
        body = b""
        async for chunk in self.chunks():
            body += chunk
            if len(body) >= limit:
                break
        return body


POOL_SHARDS = 16


class UpstreamTimeout(Exception):
    pass


class UpstreamConnectionError(Exception):
    pass


class Upstream:
    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        ssl_context: ssl.SSLContext | None = None,  # None: the system's CAs (certifi's)
    ) -> None:
        backend = AsyncioBackend()
        h11 = settings.provider_client == "httpcore"
        pool_class = httpcore.AsyncConnectionPool if h11 else HttptoolsPool
        self.pools = [
            pool_class(
                max_connections=64,
                max_keepalive_connections=32,
                keepalive_expiry=60,
                retries=0,
                ssl_context=ssl_context,
                network_backend=backend,
            )
            for _ in range(POOL_SHARDS)
        ]
        self._next = 0
        self.client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.provider_timeout_s, connect=10.0),
            follow_redirects=False,
            trust_env=False,
        )
        self._urls: dict[str, httpcore.URL] = {}

    def _url(self, raw: str) -> httpcore.URL:
        url = self._urls.get(raw)
        if url is None:
            parsed = httpx.URL(raw)  # validate and normalise once per distinct URL
            url = self._urls[raw] = httpcore.URL(
                scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
            )
        return url

    def _request(
        self, url: str, content: bytes, headers: list[tuple[bytes, bytes]], timeout: float
    ) -> tuple[httpcore.AsyncConnectionPool, httpcore.URL, list[tuple[bytes, bytes]], dict[str, Any]]:
        target = self._url(url)
        all_headers = [
            (b"host", target.host if target.port is None else b"%s:%d" % (target.host, target.port))
        ]
        all_headers += headers
        all_headers.append((b"content-length", str(len(content)).encode()))
        request_id = REQUEST_ID.get()
        if request_id is not None:  # the job's (switchyard.logs): the provider's logs can name it
            all_headers.append((b"x-request-id", request_id.encode()))
        ext = {"timeout": {"connect": min(10.0, timeout), "read": timeout, "write": timeout, "pool": timeout}}
        self._next = (self._next + 1) % POOL_SHARDS
        return self.pools[self._next], target, all_headers, ext

    @asynccontextmanager
    async def stream_post(
        self, url: str, content: bytes, headers: list[tuple[bytes, bytes]], timeout: float
    ) -> AsyncIterator[UpstreamStream]:
        """POST and hand over the response before its body is read; `timeout` bounds each read.
        Leaving the block early closes the connection (a canceled stream stops the provider)."""
        pool, target, all_headers, ext = self._request(url, content, headers, timeout)
        try:
            async with pool.stream(
                b"POST", target, headers=all_headers, content=content, extensions=ext
            ) as r:
                yield UpstreamStream(
                    r.status, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in r.headers}, r
                )
        except httpcore.TimeoutException as exc:
            raise UpstreamTimeout(str(exc) or exc.__class__.__name__) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
            raise UpstreamConnectionError(f"{exc.__class__.__name__}: {exc}") from None

    async def post(
        self, url: str, content: bytes, headers: list[tuple[bytes, bytes]], timeout: float
    ) -> UpstreamResponse:
        pool, target, all_headers, ext = self._request(url, content, headers, timeout)
        try:
            response = await pool.request(
                b"POST", target, headers=all_headers, content=content, extensions=ext
            )
        except httpcore.TimeoutException as exc:
            raise UpstreamTimeout(str(exc) or exc.__class__.__name__) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as exc:
            raise UpstreamConnectionError(exc.__class__.__name__) from None
        return UpstreamResponse(
            response.status,
            {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers},
            response.content,
        )

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()
        await self.client.aclose()
