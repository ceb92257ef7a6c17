"""Usage recorded for every finished job (in batches, off the request path) and the status endpoints
computed from it: a key's limits and usage, health, per-model statistics, overview; estimated cost
from the providers file's price table."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.accounting import DAY_MS, hour_reset_ms
from jobs.records import iso_s
from storage.db import Database
from storage.models import Usage
from switchyard.standin import StandIn
from tests.accounts_support import (  # noqa: F401
    SQLITE_ONLY,
    clear_of_window_edge,
    create_key_full,
    db_url,
    write_priced_providers,
    xkey,
)
from tests.conftest import ADMIN_KEY, Gateway, admin_headers, chat_body, eventually

# US dollars per million tokens; "mock/other" has no price: its cost is 0.
PROMPT_PRICE, COMPLETION_PRICE = 1000.0, 2000.0


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn) -> Path:
    return write_priced_providers(
        tmp_path / "providers.toml",
        standin.base_url,
        standin.models,
        {"mock/echo": (PROMPT_PRICE, COMPLETION_PRICE)},
    )


def cost(prompt: int, completion: int) -> float:
    return (PROMPT_PRICE * prompt + COMPLETION_PRICE * completion) / 1_000_000


async def status_of(gw: Gateway, secret: str, path: str = "/api/v1/status", **params: Any) -> dict[str, Any]:
    response = await gw.client.get(path, params=params, headers=xkey(secret))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]  # type: ignore[no-any-return]


async def recorded(gw: Gateway, secret: str, n: int) -> dict[str, Any]:
    """The key's status once the workers' persister has written `n` usage rows for it."""

    async def check() -> dict[str, Any] | None:
        data = await status_of(gw, secret)
        return data if data["usage"]["today"]["requests"] >= n else None

    data = await eventually(check, what=f"{n} usage rows")
    assert data["usage"]["today"]["requests"] == n
    return data  # type: ignore[no-any-return]


@pytest.mark.settings(SWITCHYARD_PROVIDER_ATTEMPTS="1")
async def test_status_reports_limits_and_recorded_usage(gw: Gateway) -> None:
    await clear_of_window_edge(DAY_MS, 20_000)
    gw.start_worker()
    alice = await create_key_full(gw.client, name="alice", limits={"hourly": 50})
    bob = await create_key_full(gw.client, name="bob")
    a = alice["key"]

    for text in ("one", "two", "three"):  # 1 prompt + 2 completion tokens each ("echo: one")
        ok = await gw.client.post("/api/v1/completion", json=chat_body(text), headers=xkey(a))
        assert ok.status_code == 200, ok.text
        assert ok.json()["usage"]["estimated_cost"] == pytest.approx(cost(1, 2))
    other = await gw.client.post(
        "/api/v1/completion", json=chat_body("unpriced", model="mock/other"), headers=xkey(a)
    )
    assert other.status_code == 200
    assert other.json()["usage"]["estimated_cost"] == 0
    failed = await gw.client.post("/api/v1/completion", json=chat_body("[fail] no"), headers=xkey(a))
    assert failed.status_code == 502
    assert (
        await gw.client.post("/api/v1/chat", json=chat_body("bob's"), headers=xkey(bob["key"]))
    ).status_code == 200

    data = await recorded(gw, a, 5)
    now_ms = int(time.time() * 1000)
    assert data["api_key"]["id"] == alice["id"]
    assert data["api_key"]["name"] == "alice"
    assert data["api_key"]["key_prefix"] == a[:7]
    assert data["api_key"]["is_active"] is True
    assert data["api_key"]["expires_at"] is None and data["api_key"]["days_until_expiration"] is None
    assert data["limits"]["hourly"] == {
        "limit": 50,
        "used": 5,
        "remaining": 45,
        "reset_at": iso_s(hour_reset_ms(now_ms)),
    }
    assert data["limits"]["daily"]["requests"] == {"limit": 1000, "used": 5, "remaining": 995}
    # Tokens settled at finish: 3 tokens per successful call, nothing for the failed one (each reserved 1000).
    assert data["limits"]["daily"]["tokens"] == {"limit": 50_000, "used": 12, "remaining": 49_988}
    assert data["limits"]["daily"]["reset_at"] == iso_s((now_ms // DAY_MS + 1) * DAY_MS)

    today = data["usage"]["today"]
    assert today == {
        "requests": 5,
        "successful_requests": 4,
        "failed_requests": 1,
        "total_tokens": 12,
        "estimated_cost": pytest.approx(3 * cost(1, 2)),
    }
    for period in ("last_7_days", "last_30_days"):
        assert data["usage"][period] == {
            "requests": 5,
            "total_tokens": 12,
            "estimated_cost": pytest.approx(3 * cost(1, 2)),
            "success_rate": 80.0,
        }
    assert data["health"] == {
        "api_key_status": "active",
        "expiration_status": "no_expiration",
        "usage_status": "healthy",
    }
    assert "chart" not in data

    # A key sees only its own usage; the admin key sees everyone's.
    bob_data = await recorded(gw, bob["key"], 1)
    assert bob_data["usage"]["today"]["successful_requests"] == 1
    assert bob_data["usage"]["today"]["estimated_cost"] == pytest.approx(cost(1, 2))
    admin = await status_of(gw, ADMIN_KEY)
    assert admin["usage"]["today"]["requests"] == 6
    assert admin["limits"] is None

    charted = await status_of(gw, a, include_chart="true")
    daily = charted["chart"]["daily"]
    assert len(daily) == 30
    today_iso = datetime.now(UTC).date().isoformat()
    assert daily[-1]["date"] == today_iso
    assert daily[0]["date"] == (datetime.now(UTC).date() - timedelta(days=29)).isoformat()
    assert daily[-1]["requests"] == 5 and daily[-1]["successful_requests"] == 4
    assert daily[-1]["failed_requests"] == 1 and daily[-1]["success_rate"] == 80.0
    assert all(day["requests"] == 0 for day in daily[:-1])


@SQLITE_ONLY
@pytest.mark.parametrize(("param", "value"), [("include_chart", "maybe")])
async def test_bad_status_flags_are_400(gw: Gateway, param: str, value: str) -> None:
    secret = (await create_key_full(gw.client, name="flags"))["key"]
    response = await gw.client.get("/api/v1/status", params={param: value}, headers=xkey(secret))
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == param


async def test_usage_rows_record_each_finished_job(gw: Gateway) -> None:
    gw.start_worker()
    created = await create_key_full(gw.client, name="rows", credits=10)
    secret = created["key"]
    ok = await gw.client.post("/api/v1/chat", json=chat_body("two words"), headers=xkey(secret))
    batch = await gw.client.post(
        "/api/v1/chat?batch=1", json=chat_body("x", model="mock/other"), headers=xkey(secret)
    )
    assert ok.status_code == 200 and batch.status_code == 202
    await recorded(gw, secret, 2)
    db = Database(gw.settings.database_url_or_default)
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(Usage.__table__.select().order_by(Usage.__table__.c.credits))).all()
    finally:
        await db.dispose()
    assert len(rows) == 2
    first, second = rows
    assert first.job_id == ok.headers["x-job-id"] and first.key_id == created["id"]
    assert first.model == "mock/echo" and first.kind == "chat_completion"
    assert (first.prompt_tokens, first.completion_tokens, first.total_tokens) == (2, 3, 5)
    assert first.success is True and first.credits == 1
    assert first.estimated_cost == pytest.approx(cost(2, 3))
    assert 0 <= first.latency_ms < 10_000
    assert second.job_id == batch.json()["data"]["job_id"]
    assert second.model == "mock/other" and second.credits == 2 and second.estimated_cost == 0


@pytest.mark.settings(SWITCHYARD_PROVIDER_ATTEMPTS="1")
async def test_model_statistics(gw: Gateway) -> None:
    gw.start_worker()
    a = (await create_key_full(gw.client, name="models-a"))["key"]
    b = (await create_key_full(gw.client, name="models-b"))["key"]
    for body in (
        chat_body("e1"),
        chat_body("e2"),
        chat_body("[fail] e3"),
        chat_body("o1", model="mock/other"),
    ):
        await gw.client.post("/api/v1/completion", json=body, headers=xkey(a))
    await gw.client.post("/api/v1/completion", json=chat_body("b", model="mock/other"), headers=xkey(b))
    await recorded(gw, a, 4)
    await recorded(gw, b, 1)

    stats = await status_of(gw, a, "/api/v1/status/models", days="7")
    assert stats["days"] == 7
    by_model = {m["model"]: m for m in stats["models"]}
    assert [m["model"] for m in stats["models"]] == ["mock/echo", "mock/other"]  # most used first
    echo = by_model["mock/echo"]
    assert echo["requests"] == 3 and echo["successful_requests"] == 2 and echo["failed_requests"] == 1
    assert echo["success_rate"] == pytest.approx(66.7)
    assert echo["total_tokens"] == 6
    assert echo["estimated_cost"] == pytest.approx(2 * cost(1, 2))
    assert echo["avg_latency_ms"] >= 0
    assert by_model["mock/other"]["requests"] == 1 and by_model["mock/other"]["estimated_cost"] == 0
    everyone = await status_of(gw, ADMIN_KEY, "/api/v1/status/models")
    assert {m["model"]: m["requests"] for m in everyone["models"]} == {"mock/echo": 3, "mock/other": 2}
    assert everyone["days"] == 30

    detail = await status_of(gw, a, "/api/v1/status/mock/echo", days="7")
    assert detail["model"] == "mock/echo" and detail["days"] == 7
    assert detail["requests"] == 3 and detail["success_rate"] == pytest.approx(66.7)
    assert len(detail["daily"]) == 7
    assert detail["daily"][-1]["date"] == datetime.now(UTC).date().isoformat()
    assert detail["daily"][-1]["requests"] == 3 and detail["daily"][-1]["failed_requests"] == 1
    assert sum(day["requests"] for day in detail["daily"]) == 3
    unused = await status_of(gw, b, "/api/v1/status/mock/echo")  # served, but not by this key
    assert unused["requests"] == 0 and len(unused["daily"]) == 30

    overview = await status_of(gw, a, "/api/v1/status/overview")
    assert overview["total_requests"] == 4
    assert overview["success_rate"] == 75.0
    assert overview["total_tokens"] == 9
    assert overview["today"]["requests"] == 4 and overview["last_7_days"]["requests"] == 4
    assert [m["model"] for m in overview["top_models"]] == ["mock/echo", "mock/other"]
    assert (await status_of(gw, ADMIN_KEY, "/api/v1/status/overview"))["total_requests"] == 5


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/status/models", "days=0"),
        ("/api/v1/status/models", "days=abc"),
        ("/api/v1/status/models", "days=366"),
        ("/api/v1/status/mock/echo", "days=-1"),
        ("/api/v1/status/mock/echo", "days=1.5"),
    ],
)
async def test_bad_days_are_400_naming_days(gw: Gateway, path: str, query: str) -> None:
    secret = (await create_key_full(gw.client, name="days"))["key"]
    response = await gw.client.get(f"{path}?{query}", headers=xkey(secret))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["error"] == "Bad Request"
    assert body["details"][0]["field"] == "days"
    assert "days" in body["message"]


@SQLITE_ONLY
async def test_unknown_model_status_is_404(gw: Gateway) -> None:
    secret = (await create_key_full(gw.client, name="unknown"))["key"]
    response = await gw.client.get("/api/v1/status/mock/nothing", headers=xkey(secret))
    assert response.status_code == 404
    assert response.json()["success"] is False
    assert "mock/nothing" in response.json()["message"]


@SQLITE_ONLY
async def test_status_endpoints_need_a_key(gw: Gateway) -> None:
    for path in (
        "/api/v1/status",
        "/api/v1/status/health",
        "/api/v1/status/models",
        "/api/v1/status/overview",
        "/api/v1/status/mock/echo",
    ):
        response = await gw.client.get(path)
        assert response.status_code == 401, path
        assert response.json()["success"] is False


async def test_health_checks_redis_and_the_database(gw: Gateway) -> None:
    secret = (await create_key_full(gw.client, name="health"))["key"]
    response = await gw.client.get("/api/v1/status/health", headers=xkey(secret))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["data"]["status"] == "healthy"
    assert body["data"]["checks"] == {"redis": "ok", "database": "ok"}
    assert (await gw.client.get("/api/v1/status/health", headers=admin_headers())).status_code == 200


@SQLITE_ONLY
async def test_expiring_key_status(gw: Gateway) -> None:
    expires = datetime.now(UTC) + timedelta(days=3, hours=1)
    secret = (await create_key_full(gw.client, name="soon", expires_at=expires.isoformat()))["key"]
    data = await status_of(gw, secret)
    assert data["api_key"]["days_until_expiration"] == 3
    assert data["health"]["expiration_status"] == "expiring_soon"
