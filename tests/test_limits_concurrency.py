"""Rate limits per key: hourly, daily requests, daily tokens (reserved at submission, settled at
finish), the per-request token cap and the per-minute limit; windows on clock edges; exact admission
under concurrent bursts, in one process and across two real web processes; a Redis restart in the
middle of a window."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from api.accounts import rate_headers
from jobs.accounting import ADMIT, DAY_MS, HOUR_MS, MINUTE_MS, USAGE, day_reset_ms, hour_reset_ms
from jobs.records import iso_s
from switchyard.redis_server import EmbeddedRedis, free_port
from tests.accounts_support import (  # noqa: F401
    bearer,
    clear_of_hour_edge,
    clear_of_window_edge,
    create_key_full,
    db_balance,
    db_key,
    xkey,
)
from tests.conftest import (
    Gateway,
    chat_body,
    eventually,
    make_settings,
    process_env,
    running_gateway,
    wait_for_status,
)


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """Redis does the counting here; the database kind is not what these tests are about."""
    return sqlite_url


def next_hour_s() -> int:
    return (int(time.time()) // 3600 + 1) * 3600


def assert_window(window: dict[str, Any], limit: int, used: int, reset_ms: int) -> None:
    assert window == {
        "limit": limit,
        "used": used,
        "remaining": max(limit - used, 0),
        "reset_at": iso_s(reset_ms),
    }


# --- hourly --------------------------------------------------------------------------------------
async def test_hourly_limit_passes_k_then_429_in_every_dialect(gw: Gateway) -> None:
    await clear_of_hour_edge()
    gw.start_worker()
    secret = (await create_key_full(gw.client, name="hourly", limits={"hourly": 3}))["key"]
    reset_s = next_hour_s()

    first = await gw.client.post(
        "/api/v1/completion", json=chat_body("one", max_tokens=10), headers=xkey(secret)
    )
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit"] == "3"
    assert first.headers["x-ratelimit-remaining"] == "2"
    assert first.headers["x-ratelimit-reset"] == str(reset_s)
    assert first.json()["limits"] == {
        "remaining": {"hourly": 2, "daily_requests": 999, "daily_tokens": 49_997}  # after the call's 3 tokens
    }
    for remaining in (1, 0):
        batch = await gw.client.post("/api/v1/chat?batch=1", json=chat_body(), headers=bearer(secret))
        assert batch.status_code == 202
        assert batch.headers["x-ratelimit-remaining"] == str(remaining)
        assert batch.headers["x-ratelimit-reset"] == str(reset_s)

    native = await gw.client.post("/api/v1/completion", json=chat_body(), headers=xkey(secret))
    assert native.status_code == 429
    assert native.headers["x-ratelimit-limit"] == "3"
    assert native.headers["x-ratelimit-remaining"] == "0"
    assert native.headers["x-ratelimit-reset"] == str(reset_s)
    retry_after = int(native.headers["retry-after"])
    assert 1 <= retry_after <= 3600 and abs(retry_after - (reset_s - time.time())) <= 2
    body = native.json()
    assert body["success"] is False
    assert body["error"] == "Rate limit exceeded"
    assert body["message"] == "Hourly rate limit exceeded"
    assert_window(body["limits"]["hourly"], 3, 3, reset_s * 1000)

    credits = await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(secret))
    assert credits.status_code == 429 and "retry-after" in credits.headers
    assert set(credits.json()) == {"error", "limits"}
    assert credits.json()["error"] == "Hourly rate limit exceeded"
    assert_window(credits.json()["limits"]["hourly"], 3, 3, reset_s * 1000)

    openai = await gw.client.post("/v1/chat/completions?batch=1", json=chat_body(), headers=bearer(secret))
    assert openai.status_code == 429 and "retry-after" in openai.headers
    assert openai.json()["error"]["type"] == "rate_limit_exceeded"
    assert openai.json()["error"]["code"] == "hourly"
    assert openai.json()["limits"]["hourly"]["remaining"] == 0

    # Refusals are not counted.
    status = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
    assert_window(status["limits"]["hourly"], 3, 3, reset_s * 1000)
    assert status["health"]["usage_status"] == "exceeded"


async def test_daily_request_limit_resets_at_utc_midnight(gw: Gateway) -> None:
    await clear_of_window_edge(DAY_MS, 5000)
    secret = (await create_key_full(gw.client, name="daily", limits={"daily_requests": 2}))["key"]
    for _ in range(2):
        assert (
            await gw.client.post("/api/v1/completion?batch=1", json=chat_body(), headers=xkey(secret))
        ).status_code == 202
    refused = await gw.client.post("/api/v1/completion?batch=1", json=chat_body(), headers=xkey(secret))
    assert refused.status_code == 429
    midnight_ms = day_reset_ms(int(time.time() * 1000))
    assert refused.json()["message"] == "Daily request limit exceeded"
    assert_window(refused.json()["limits"]["daily_requests"], 2, 2, midnight_ms)
    assert refused.headers["x-ratelimit-reset"] == str(midnight_ms // 1000)
    assert abs(int(refused.headers["retry-after"]) - (midnight_ms / 1000 - time.time())) <= 2
    status = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]["limits"]["daily"]
    assert status["requests"] == {"limit": 2, "used": 2, "remaining": 0}
    assert status["reset_at"] == iso_s(midnight_ms)


# --- tokens --------------------------------------------------------------------------------------
async def test_daily_tokens_are_reserved_at_submission_and_settled_at_finish(gw: Gateway) -> None:
    await clear_of_window_edge(DAY_MS, 10_000)
    secret = (await create_key_full(gw.client, name="tokens", limits={"daily_tokens": 2500}))["key"]
    # The native dialect reserves its default max_tokens (1000) when the request names none.
    jobs = []
    for text in ("one", "two"):
        submitted = await gw.client.post(
            "/api/v1/completion?batch=1", json=chat_body(text), headers=xkey(secret)
        )
        assert submitted.status_code == 202, submitted.text
        jobs.append(submitted.json()["data"]["job_id"])
    refused = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("three"), headers=xkey(secret)
    )
    assert refused.status_code == 429
    assert refused.json()["message"] == "Daily token limit exceeded"
    assert refused.json()["limits"]["daily_tokens"]["used"] == 2004  # 2 x (1000 + 2 for the prompt)
    assert refused.json()["limits"]["daily_tokens"]["limit"] == 2500

    async def tokens_used() -> int:
        data = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
        return int(data["limits"]["daily"]["tokens"]["used"])

    assert await tokens_used() == 2004
    gw.start_worker()
    for job_id in jobs:
        await wait_for_status(gw.client, secret, job_id, "succeeded")
    # Settled: each call used 1 prompt + 2 completion tokens ("echo: one"), not the 1000 reserved.
    assert await tokens_used() == 6

    response = await gw.client.post(
        "/api/v1/completion", json=chat_body("four", max_tokens=1000), headers=xkey(secret)
    )
    assert response.status_code == 200, response.text
    # What is left after the call (000's example: 50,000 less the call's tokens), not at admission.
    assert response.json()["limits"]["remaining"]["daily_tokens"] == 2500 - 6 - 3
    assert response.json()["usage"]["total_tokens"] == 3
    assert await tokens_used() == 9


@pytest.mark.settings(SWITCHYARD_PROVIDER_ATTEMPTS="1")
async def test_a_failed_job_gives_its_reserved_tokens_back(gw: Gateway) -> None:
    await clear_of_window_edge(DAY_MS, 10_000)
    gw.start_worker()
    secret = (await create_key_full(gw.client, name="fail-tokens", limits={"daily_tokens": 1500}))["key"]
    failed = await gw.client.post(
        "/api/v1/completion", json=chat_body("[fail] x", max_tokens=1000), headers=xkey(secret)
    )
    assert failed.status_code == 502
    status = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
    assert status["limits"]["daily"]["tokens"]["used"] == 0
    again = await gw.client.post(
        "/api/v1/completion", json=chat_body("ok", max_tokens=1000), headers=xkey(secret)
    )
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    ("path", "headers", "dialect"),
    [
        ("/api/v1/completion", "x", "native"),
        ("/api/v1/chat", "bearer", "credits"),
        ("/v1/chat/completions", "bearer", "openai"),
    ],
)
async def test_max_tokens_over_the_key_cap_is_400_naming_max_tokens(
    gw: Gateway, path: str, headers: str, dialect: str
) -> None:
    secret = (
        await create_key_full(gw.client, name="cap", limits={"max_tokens_per_request": 200}, credits=5)
    )["key"]
    auth = xkey(secret) if headers == "x" else bearer(secret)
    over = await gw.client.post(path + "?batch=1", json=chat_body(max_tokens=201), headers=auth)
    assert over.status_code == 400, over.text
    body = over.json()
    if dialect == "native":
        assert body["details"][0]["field"] == "max_tokens" and "200" in body["message"]
    elif dialect == "credits":
        assert "max_tokens" in body["error"] and "200" in body["error"]
    else:
        assert body["error"]["param"] == "max_tokens"
    completion_tokens = await gw.client.post(
        path + "?batch=1", json=chat_body(max_completion_tokens=500), headers=auth
    )
    assert completion_tokens.status_code == 400
    at_cap = await gw.client.post(path + "?batch=1", json=chat_body(max_tokens=200), headers=auth)
    assert at_cap.status_code == 202, at_cap.text
    # The refusals took nothing.
    data = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
    assert data["limits"]["hourly"]["used"] == 1
    assert data["limits"]["daily"]["tokens"]["used"] == 200 + 3  # and the prompt: "user" + "hello"


@pytest.mark.parametrize(("path", "headers"), [("/api/v1/completion", "x"), ("/api/v1/chat", "bearer")])
async def test_a_dialect_default_max_tokens_over_the_key_cap_is_not_an_error(
    gw: Gateway, path: str, headers: str
) -> None:
    """The native dialect defaults max_tokens to 1000 and the credits one to 150: a request that
    names no max_tokens is not the caller's fault when the key's cap is lower; it is capped."""
    secret = (await create_key_full(gw.client, name="small", limits={"max_tokens_per_request": 100}))["key"]
    auth = xkey(secret) if headers == "x" else bearer(secret)

    async def tokens_used() -> int:
        data = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
        return int(data["limits"]["daily"]["tokens"]["used"])

    queued = await gw.client.post(path + "?batch=1", json=chat_body("no max_tokens"), headers=auth)
    assert queued.status_code == 202, queued.text
    # The cap, reserved in place of the dialect's default, and the prompt ("user" + "no max_tokens")
    assert await tokens_used() == 100 + 5
    gw.start_worker()
    await wait_for_status(gw.client, secret, queued.json()["data"]["job_id"], "succeeded")
    response = await gw.client.post(path, json=chat_body("no max_tokens"), headers=auth)
    assert response.status_code == 200, response.text
    assert await tokens_used() == 2 * (2 + 3)  # settled: what the calls used


# --- per minute ----------------------------------------------------------------------------------
async def test_per_minute_chat_limit(gw: Gateway) -> None:
    await clear_of_window_edge(MINUTE_MS, 3000)
    secret = (await create_key_full(gw.client, name="minute", limits={"per_minute": {"chat": 2}}))["key"]
    for remaining in (99, 98):
        ok = await gw.client.post("/api/v1/completion?batch=1", json=chat_body(), headers=xkey(secret))
        assert ok.status_code == 202
        assert ok.headers["x-ratelimit-remaining"] == str(remaining)  # the headers speak of the hour
    refused = await gw.client.post("/api/v1/completion?batch=1", json=chat_body(), headers=xkey(secret))
    now_ms = int(time.time() * 1000)
    assert refused.status_code == 429
    assert refused.json()["message"] == "Per-minute rate limit exceeded"
    minute_end = (now_ms // MINUTE_MS + 1) * MINUTE_MS
    assert_window(refused.json()["limits"]["per_minute"], 2, 2, minute_end)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit"] == "2"
    assert refused.headers["x-ratelimit-reset"] == str(minute_end // 1000)


# --- windows on clock edges (the admission script, with the clock as an argument) -----------------
class Admit:
    def __init__(self, redis: Redis) -> None:
        self.script = redis.register_script(ADMIT)
        self.usage = redis.register_script(USAGE)

    async def __call__(
        self,
        key: str,
        now: int,
        *,
        hourly: int = -1,
        daily: int = -1,
        tokens: int = -1,
        minute: int = -1,
        reserve: int = 0,
    ) -> list[Any]:
        raw = await self.script(args=[key, now, 0, reserve, "chat", hourly, daily, tokens, minute])
        return [x.decode() if isinstance(x, bytes) else x for x in raw]

    async def counts(self, key: str, now: int) -> list[int]:
        return [int(x) for x in await self.usage(args=[key, now])]


@pytest.fixture
async def admit(redis_url: str) -> Any:
    async with Redis.from_url(redis_url) as redis:
        yield Admit(redis)


def future_boundary(unit: int, *, not_multiple_of: int | None = None) -> int:
    """A boundary of `unit` ms a day or more ahead (so key expiries lie in the future)."""
    b = (int(time.time() * 1000) // DAY_MS + 2) * DAY_MS + 5 * unit
    b = b // unit * unit
    while not_multiple_of and b % not_multiple_of == 0:
        b += unit
    return b


async def test_hour_window_resets_on_the_hour_and_the_day_does_not(admit: Admit) -> None:
    b = future_boundary(HOUR_MS, not_multiple_of=DAY_MS)
    assert await admit("k1", b - 2, hourly=2, daily=3) == [
        "ok",
        1,
        2,
        -1,
        -1,
        f"sy:rl:k1:t:{(b - 2) // DAY_MS}",
        -1,  # per minute: unlimited
    ]
    assert (await admit("k1", b - 1, hourly=2, daily=3))[:3] == ["ok", 0, 1]
    assert await admit("k1", b - 1, hourly=2, daily=3) == ["hourly", 2, 2, b]
    assert hour_reset_ms(b - 1) == b
    assert rate_headers(2, 0, b)["x-ratelimit-reset"] == str(b // 1000)
    assert await admit.counts("k1", b - 1) == [2, 2, 0]
    # One millisecond later it is a new hour of the same day.
    assert await admit.counts("k1", b) == [0, 2, 0]
    assert (await admit("k1", b, hourly=2, daily=3))[:3] == ["ok", 1, 0]
    day_end = (b // DAY_MS + 1) * DAY_MS
    assert await admit("k1", b + 1, hourly=2, daily=3) == ["daily_requests", 3, 3, day_end]


async def test_day_window_resets_at_midnight_utc(admit: Admit) -> None:
    d = future_boundary(DAY_MS)
    assert datetime.fromtimestamp(d / 1000, UTC).strftime("%H:%M:%S.%f") == "00:00:00.000000"
    assert (await admit("k2", d - 1, daily=1, tokens=100, reserve=60))[0] == "ok"
    assert await admit("k2", d - 1, daily=5, tokens=100, reserve=60) == ["daily_tokens", 60, 100, d]
    assert await admit("k2", d - 1, daily=1) == ["daily_requests", 1, 1, d]
    assert day_reset_ms(d - 1) == d
    assert await admit.counts("k2", d - 1) == [1, 1, 60]
    assert await admit.counts("k2", d) == [0, 0, 0]
    assert await admit("k2", d, daily=1, tokens=100, reserve=60) == [
        "ok",
        -1,
        0,
        40,
        -1,
        f"sy:rl:k2:t:{d // DAY_MS}",
        -1,
    ]


async def test_minute_window_resets_on_the_minute(admit: Admit) -> None:
    m = future_boundary(MINUTE_MS, not_multiple_of=HOUR_MS)
    first = await admit("k3", m - 1, minute=1)
    assert first[0] == "ok" and first[6] == 0  # what the minute has left
    assert await admit("k3", m - 1, minute=1) == ["per_minute", 1, 1, m]
    assert (await admit("k3", m, minute=1))[0] == "ok"
    assert await admit("k3", m + MINUTE_MS - 1, minute=1) == ["per_minute", 1, 1, m + MINUTE_MS]


@pytest.mark.parametrize("reserve", [10, 0])
async def test_window_counters_expire_after_their_window(admit: Admit, redis_url: str, reserve: int) -> None:
    """The call that creates a window's counter gives it its expiry (a later call leaves it as
    it is), also a token counter created by a call that reserves nothing."""
    m = future_boundary(MINUTE_MS, not_multiple_of=HOUR_MS)
    k = f"k4-{reserve}"
    for _ in range(2):
        await admit(k, m - 1, hourly=5, daily=5, tokens=50, minute=5, reserve=reserve)
    hour, day, minute = (m - 1) // HOUR_MS, (m - 1) // DAY_MS, (m - 1) // MINUTE_MS
    expected = {
        f"sy:rl:{k}:h:{hour}": (hour + 1) * HOUR_MS + MINUTE_MS,
        f"sy:rl:{k}:d:{day}": (day + 1) * DAY_MS + MINUTE_MS,
        f"sy:rl:{k}:t:{day}": (day + 1) * DAY_MS + MINUTE_MS,
        f"sy:rl:{k}:m:chat:{minute}": m + MINUTE_MS,
    }
    async with Redis.from_url(redis_url) as r:
        assert await r.get(f"sy:rl:{k}:t:{day}") == str(2 * reserve).encode()
        for name, expires_at in expected.items():
            assert abs(time.time() * 1000 + await r.pttl(name) - expires_at) < 1000, name


# --- concurrency ---------------------------------------------------------------------------------
async def test_a_concurrent_burst_admits_exactly_the_remaining(gw: Gateway) -> None:
    await clear_of_hour_edge()
    limited = (await create_key_full(gw.client, name="burst", limits={"hourly": 10}))["key"]
    paid = (await create_key_full(gw.client, name="paid", credits=9))["key"]
    # Three calls already in this hour: 7 remain.
    for _ in range(3):
        assert (
            await gw.client.post("/api/v1/completion?batch=1", json=chat_body(), headers=xkey(limited))
        ).status_code == 202

    async def call(secret: str, path: str, i: int) -> int:
        response = await gw.client.post(path, json=chat_body(f"burst {i}"), headers=bearer(secret))
        return response.status_code

    limited_calls = [call(limited, "/api/v1/completion?batch=1", i) for i in range(25)]
    paid_calls = [call(paid, "/api/v1/chat?batch=1", i) for i in range(12)]  # 2 credits each: 4 fit in 9
    codes = await asyncio.gather(*limited_calls, *paid_calls)
    assert Counter(codes[:25]) == {202: 7, 429: 18}
    assert Counter(codes[25:]) == {202: 4, 402: 8}
    listed = (await gw.client.get("/api/keys", headers=bearer(paid))).json()["data"][0]
    assert listed["credits"] == 1
    data = (await gw.client.get("/api/v1/status", headers=xkey(limited))).json()["data"]
    assert data["limits"]["hourly"]["used"] == 10


class WebProcesses:
    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env = process_env(env)
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> str:
        port = free_port()
        log = open(self.tmp_path / f"web-{port}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "switchyard"), "web"],
            env={**self.env, "SWITCHYARD_PORT": str(port)},
            cwd=self.tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return f"http://127.0.0.1:{port}"

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.tmp_path.glob("web-*.log"))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def web_processes(env: dict[str, str], tmp_path: Path) -> Iterator[WebProcesses]:
    procs = WebProcesses(env, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


async def test_two_web_processes_share_one_count(gw: Gateway, web_processes: WebProcesses) -> None:
    await clear_of_hour_edge()
    limited = await create_key_full(gw.client, name="shared", limits={"hourly": 10})
    paid = await create_key_full(gw.client, name="shared-paid", credits=7)
    urls = [web_processes.start(), web_processes.start()]
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:

        async def healthy(url: str) -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return (await client.get(url + "/health")).status_code == 200
            return False

        for url in urls:
            try:
                await eventually(lambda url=url: healthy(url), timeout=20, interval=0.1, what=f"{url}/health")
            except AssertionError:
                raise AssertionError(web_processes.logs()) from None

        async def call(i: int, secret: str, path: str) -> int:
            url = urls[i % 2]
            response = await client.post(url + path, json=chat_body(f"two {i}"), headers=bearer(secret))
            return response.status_code

        n = 40
        codes = await asyncio.gather(
            *(call(i, limited["key"], "/api/v1/completion?batch=1") for i in range(n)),
            *(call(i, paid["key"], "/api/v1/chat?batch=1") for i in range(n)),
        )
    assert Counter(codes[:n]) == {202: 10, 429: n - 10}, web_processes.logs()
    assert Counter(codes[n:]) == {202: 3, 402: n - 3}, web_processes.logs()  # 2 credits each out of 7
    listed = (await gw.client.get("/api/keys", headers=bearer(paid["key"]))).json()["data"][0]
    assert listed["credits"] == 1
    assert (await gw.client.get("/api/v1/jobs?limit=100", headers=xkey(limited["key"]))).json()[
        "data"
    ].__len__() == 10


# --- Redis restarting in the middle of a window --------------------------------------------------
async def test_a_redis_restart_mid_window(env: dict[str, str], tmp_path: Path) -> None:
    await clear_of_hour_edge()
    redis = EmbeddedRedis(tmp_path / "own-redis", persistent=False).start()
    try:
        settings = make_settings({**env, "REDIS_URL": redis.url})
        async with running_gateway(settings) as gw:
            gw.start_worker()
            created = await create_key_full(gw.client, name="restart", limits={"hourly": 5}, credits=20)
            secret = created["key"]
            for left in (19, 18):
                response = await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(secret))
                assert response.status_code == 200, response.text
                assert response.json()["credits_remaining"] == left
            assert response.headers["x-ratelimit-remaining"] == "3"

            async def persisted() -> bool:
                return await db_balance(settings, created["id"]) == 18

            await eventually(persisted, what="the balance to reach the database")

            redis.stop()
            down = await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(secret))
            assert down.status_code == 503, down.text
            assert "Redis" in down.json()["error"]
            native_down = await gw.client.post(
                "/api/v1/completion?batch=1", json=chat_body(), headers=xkey(secret)
            )
            assert native_down.status_code == 503
            assert native_down.json()["success"] is False
            status_down = await gw.client.get("/api/v1/status", headers=xkey(secret))
            assert status_down.status_code == 503

            redis.start()  # the same port, and none of its data
            codes: list[int] = []

            async def answered() -> httpx.Response | None:
                response = await gw.client.post(
                    "/api/v1/chat", json=chat_body("after"), headers=bearer(secret)
                )
                codes.append(response.status_code)
                return response if response.status_code != 503 else None

            after = await eventually(
                answered, timeout=15, interval=0.1, what="a call to be served after the restart"
            )
            assert after.status_code == 200, after.text
            assert set(codes) <= {200, 503}
            # A fresh count for the window, and the balance the database last recorded, less this call.
            assert after.headers["x-ratelimit-remaining"] == "4"
            assert after.json()["credits_remaining"] == 17
            status = await gw.client.get("/api/v1/status", headers=xkey(secret))
            assert status.status_code == 200
            assert status.json()["data"]["limits"]["hourly"]["used"] == 1
            for _ in range(4):
                assert (
                    await gw.client.post("/api/v1/chat?batch=1", json=chat_body(), headers=bearer(secret))
                ).status_code == 202
            over = await gw.client.post("/api/v1/chat?batch=1", json=chat_body(), headers=bearer(secret))
            assert over.status_code == 429
    finally:
        redis.stop()


@pytest.mark.parametrize(
    ("path", "headers", "stream"),
    [
        ("/api/v1/completion", "x", False),
        ("/v1/chat/completions", "bearer", False),
        ("/v1/chat/completions", "bearer", True),
    ],
)
async def test_a_huge_prompt_cannot_pass_the_daily_token_limit(
    gw: Gateway, path: str, headers: str, stream: bool
) -> None:
    """A 750 KB prompt is ~190,000 tokens: admission reserves the prompt's estimate as well as
    `max_tokens`, so it is refused against a 50,000 daily-token limit before any work is done."""
    await clear_of_window_edge(DAY_MS, 10_000)
    secret = (await create_key_full(gw.client, name="huge", limits={"daily_tokens": 50_000}))["key"]
    auth = xkey(secret) if headers == "x" else bearer(secret)
    huge = chat_body("x" * 750_000, max_tokens=10, **({"stream": True} if stream else {}))
    refused = await gw.client.post(path, json=huge, headers=auth)
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"]
    data = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
    assert data["limits"]["daily"]["tokens"]["used"] == 0
    assert data["limits"]["hourly"]["used"] == 0
    # A prompt within the limit still passes, and reserves about its size.
    fits = chat_body("y" * 40_000, max_tokens=10)
    accepted = await gw.client.post(path + "?batch=1", json=fits, headers=auth)
    assert accepted.status_code == 202, accepted.text
    data = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
    assert data["limits"]["daily"]["tokens"]["used"] == 10 + (40_000 + 4) // 4
