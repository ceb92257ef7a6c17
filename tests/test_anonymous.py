"""api-reference 001's anonymous tier: off by default; when on, 001's routes answer callers without
a key within 10 chat calls a minute per client address, with the `X-RateLimit-*` headers;
X-Forwarded-For counts only from trusted proxies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.accounts_support import clear_of_window_edge
from tests.conftest import Gateway, chat_body

ON = pytest.mark.settings(SWITCHYARD_ANONYMOUS="true")


@asynccontextmanager
async def from_address(gw: Gateway, host: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests reach the app from `host` (the ASGI peer address)."""
    app = gw.client._transport.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, client=(host, 50000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver.local", timeout=30
    ) as client:
        yield client


async def test_off_by_default(gw: Gateway) -> None:
    response = await gw.client.post("/api/chat", json=chat_body())
    assert response.status_code == 401
    assert (await gw.client.get("/api/models/chat")).status_code == 401


@ON
async def test_ten_chat_calls_a_minute_per_address_with_headers(gw: Gateway) -> None:
    gw.start_worker()
    await clear_of_window_edge(margin_ms=15_000)
    async with from_address(gw, "198.51.100.7") as client:
        remaining = []
        for _ in range(10):
            response = await client.post("/api/chat", json=chat_body())
            assert response.status_code == 200, response.text
            assert response.headers["x-ratelimit-limit"] == "10"
            assert int(response.headers["x-ratelimit-reset"]) % 60 == 0
            remaining.append(int(response.headers["x-ratelimit-remaining"]))
        assert remaining == list(range(9, -1, -1))
        refused = await client.post("/api/chat", json=chat_body())
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-ratelimit-remaining"] == "0"
    async with from_address(gw, "198.51.100.8") as other:  # another address: a count of its own
        assert (await other.post("/api/chat", json=chat_body())).status_code == 200
    key = await gw.create_key("keyed")
    async with from_address(gw, "198.51.100.7") as client:  # a key is never the anonymous tier
        keyed = await client.post("/api/chat", json=chat_body(), headers={"Authorization": f"Bearer {key}"})
        assert keyed.status_code == 200 and keyed.headers["x-ratelimit-limit"] == "100"


@ON
async def test_only_001s_routes_and_only_waited_calls(gw: Gateway) -> None:
    assert (await gw.client.post("/api/v1/chat", json=chat_body())).status_code == 401
    assert (await gw.client.post("/api/v1/completion", json=chat_body())).status_code == 401
    batch = await gw.client.post("/api/chat?batch=1", json=chat_body())
    assert batch.status_code == 401 and "batch" in batch.json()["error"]["message"]
    assert (await gw.client.get("/api/models/chat")).status_code == 200
    bad = await gw.client.post("/api/chat", json={"messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"]


async def _exhaust(gw: Gateway, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for _ in range(10):
        assert (await client.post("/api/chat", json=chat_body(), headers=headers)).status_code == 200


@ON
async def test_forwarded_for_is_ignored_from_an_untrusted_peer(gw: Gateway) -> None:
    gw.start_worker()
    await clear_of_window_edge(margin_ms=15_000)
    async with from_address(gw, "192.0.2.10") as client:
        await _exhaust(gw, client, {"X-Forwarded-For": "203.0.113.1"})
        spoofed = await client.post("/api/chat", json=chat_body(), headers={"X-Forwarded-For": "203.0.113.2"})
        assert spoofed.status_code == 429  # the peer is the client: its count is spent


@pytest.mark.settings(SWITCHYARD_ANONYMOUS="true", SWITCHYARD_TRUSTED_PROXIES="192.0.2.0/24, 10.0.0.0/8")
async def test_forwarded_for_names_the_client_behind_a_trusted_proxy(gw: Gateway) -> None:
    gw.start_worker()
    await clear_of_window_edge(margin_ms=15_000)
    async with from_address(gw, "192.0.2.10") as proxy:
        # the client, then a second trusted proxy: the nearest untrusted hop is the client
        await _exhaust(gw, proxy, {"X-Forwarded-For": "203.0.113.1, 10.1.2.3"})
        again = await proxy.post("/api/chat", json=chat_body(), headers={"X-Forwarded-For": "203.0.113.1"})
        assert again.status_code == 429
        other = await proxy.post("/api/chat", json=chat_body(), headers={"X-Forwarded-For": "203.0.113.2"})
        assert other.status_code == 200
        # a hop the client wrote before the proxy's own does not move its count elsewhere
        forged = await proxy.post(
            "/api/chat", json=chat_body(), headers={"X-Forwarded-For": "198.18.0.1, 203.0.113.1"}
        )
        assert forged.status_code == 429
