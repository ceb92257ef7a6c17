"""The process's one pooled HTTP client for providers.

An `httpx.AsyncClient` for general calls (model discovery and the like), and for the hot
path — a provider call per job — the connection pool of httpcore, the engine under httpx,
used directly: provider calls need no cookies, auth flows, redirects or URL merging, and
skipping httpx's request and response models halves the CPU per call, which is most of a
worker's CPU per job.

The hot path spreads its calls over several small pools: httpcore's pool walks every one of
its connections (a readability check each) for every request it places (encode/httpcore#1035),
which with 64 jobs in flight on one pool costs more than the calls themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpcore
import httpx

from switchyard.settings import Settings


@dataclass(slots=True)
class UpstreamResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes


POOL_SHARDS = 16


class UpstreamTimeout(Exception):
    pass


class UpstreamConnectionError(Exception):
    pass


class Upstream:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.pools = [
            httpcore.AsyncConnectionPool(
                max_connections=64, max_keepalive_connections=32, keepalive_expiry=60, retries=0
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

    async def post(
        self, url: str, content: bytes, headers: list[tuple[bytes, bytes]], timeout: float
    ) -> UpstreamResponse:
        target = self._url(url)
        all_headers = [
            (b"host", target.host if target.port is None else b"%s:%d" % (target.host, target.port))
        ]
        all_headers += headers
        all_headers.append((b"content-length", str(len(content)).encode()))
        ext = {"timeout": {"connect": min(10.0, timeout), "read": timeout, "write": timeout, "pool": timeout}}
        self._next = (self._next + 1) % POOL_SHARDS
        try:
            response = await self.pools[self._next].request(
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
