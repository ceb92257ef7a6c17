"""Key management with limits, credits, expiry and model lists (API and CLI), and credits: charged at
submission, refunded when a job fails through no fault of the caller, topped up by the admin."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.accounting import CREDITS_KEY
from jobs.queues import persist_set
from storage.db import Database
from storage.keys import create_key, hash_key
from switchyard import cli
from switchyard.settings import get_settings
from tests.accounts_support import SQLITE_ONLY, bearer, create_key_full, db_balance, db_key, db_url, xkey  # noqa: F401
from tests.conftest import ADMIN_KEY, Gateway, admin_headers, chat_body, eventually, get_job, wait_for_status

DEFAULT_LIMITS = {
    "hourly": 100,
    "daily_requests": 1000,
    "daily_tokens": 50_000,
    "max_tokens_per_request": 4000,
    "per_minute": {"chat": 60, "image": 30, "video": 10},
}


def assert_cloudgpt_400(response: Any, field: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == field
    assert field.split(".")[-1].split("[")[0] in error["message"]
    return error  # type: ignore[no-any-return]


# --- creating keys -------------------------------------------------------------------------------
async def test_key_created_with_every_field_carries_them(gw: Gateway) -> None:
    expires = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    limits = {
        "hourly": 7,
        "daily_requests": 70,
        "daily_tokens": 7000,
        "max_tokens_per_request": 700,
        "per_minute": {"chat": 6, "image": 5, "video": 4},
    }
    created = await create_key_full(
        gw.client,
        name="full",
        limits=limits,
        credits=12,
        expires_at=expires.isoformat(),
        models=["mock/echo"],
    )
    secret = created["key"]
    assert secret.startswith("ck_") and created["prefix"] == secret[:7]
    assert created["limits"] == limits
    assert created["credits"] == 12
    assert created["models"] == ["mock/echo"]
    assert created["expires_at"] == int(expires.timestamp())
    assert created["status"] == "active"
    assert abs(created["created"] - time.time()) < 60
    assert created["lastUsed"] is None

    stored = await db_key(gw.settings, created["id"])
    assert stored is not None
    assert stored.limits.to_dict() == limits and stored.credits == 12 and stored.models == ("mock/echo",)

    # The limits are the key's own from its first request on.
    status = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
    assert status["limits"]["hourly"]["limit"] == 7
    assert status["limits"]["daily"]["requests"]["limit"] == 70
    assert status["limits"]["daily"]["tokens"]["limit"] == 7000
    assert status["limits"]["per_minute"] == limits["per_minute"]
    assert status["limits"]["max_tokens_per_request"] == 700
    assert status["api_key"]["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert status["api_key"]["days_until_expiration"] == 2  # 2 days and 23 h 59 min
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body(max_tokens=10), headers=xkey(secret)
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.headers["x-ratelimit-limit"] == "7"
    assert submitted.headers["x-ratelimit-remaining"] == "6"
    reset = submitted.headers["x-ratelimit-reset"]

    # Responses that admit nothing carry the same window: reads, and errors after authentication.
    job_id = submitted.json()["data"]["job_id"]
    for response in (
        await gw.client.get(f"/api/v1/jobs/{job_id}", headers=xkey(secret)),
        await gw.client.get("/api/v1/status", headers=xkey(secret)),
        await gw.client.get("/api/v1/jobs?limit=0", headers=xkey(secret)),
        await gw.client.post("/api/v1/completion", json={"model": "mock/echo"}, headers=xkey(secret)),
    ):
        assert response.headers["x-ratelimit-limit"] == "7", response.request.url
        assert response.headers["x-ratelimit-remaining"] == "6", response.request.url
        assert response.headers["x-ratelimit-reset"] == reset
    # The admin key has no limits, so no window to report.
    assert "x-ratelimit-limit" not in (await gw.client.get("/api/keys", headers=admin_headers())).headers


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (None, DEFAULT_LIMITS),
        ({}, DEFAULT_LIMITS),
        ({"hourly": 5}, {**DEFAULT_LIMITS, "hourly": 5}),
        (
            {"per_minute": {"chat": 3}},
            {**DEFAULT_LIMITS, "per_minute": {"chat": 3, "image": 30, "video": 10}},
        ),
        ({"daily_tokens": 0}, {**DEFAULT_LIMITS, "daily_tokens": 0}),
    ],
)
async def test_omitted_limits_take_the_documented_defaults(
    gw: Gateway, limits: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"name": "defaults"}
    if limits is not None:
        body["limits"] = limits
    created = await create_key_full(gw.client, **body)
    assert created["limits"] == expected
    assert created["credits"] is None  # not credit-metered
    assert created["models"] is None  # every model
    listed = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]
    assert listed[0]["limits"] == expected


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limits": {"hourly": -1}}, "limits.hourly"),
        ({"limits": {"daily_requests": "many"}}, "limits.daily_requests"),
        ({"limits": {"daily_tokens": 1.5}}, "limits.daily_tokens"),
        ({"limits": {"max_tokens_per_request": True}}, "limits.max_tokens_per_request"),
        ({"limits": {"per_minute": {"chat": -2}}}, "limits.per_minute.chat"),
        ({"limits": {"per_minute": {"video": "ten"}}}, "limits.per_minute.video"),
        ({"limits": {"per_minute": 5}}, "limits.per_minute"),
        ({"limits": {"burst": 5}}, "limits.burst"),
        ({"limits": {"per_minute": {"audio": 5}}}, "limits.per_minute.audio"),
        ({"limit": {"hourly": 5}}, "limit"),  # a typo must not make a key with default limits
        ({"limits": "fast"}, "limits"),
        ({"credits": -1}, "credits"),
        ({"credits": "ten"}, "credits"),
        ({"models": []}, "models"),
        ({"models": "mock/echo"}, "models"),
        ({"models": [""]}, "models[0]"),
    ],
)
async def test_invalid_key_fields_are_400_naming_the_field(
    gw: Gateway, body: dict[str, Any], field: str
) -> None:
    response = await gw.client.post("/api/keys", json={"name": "bad", **body}, headers=admin_headers())
    error = assert_cloudgpt_400(response, field)
    for unknown in ("burst", "audio"):
        if unknown in str(body):
            assert unknown in error["message"]
    assert (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"] == []


# --- listing, revoking, expiry, model lists ------------------------------------------------------
async def test_admin_lists_every_key_and_a_key_sees_only_itself(gw: Gateway) -> None:
    alice = await create_key_full(gw.client, name="alice", credits=3)
    bob = await create_key_full(gw.client, name="bob")
    used = await gw.client.post("/api/v1/completion?batch=1", json=chat_body(), headers=xkey(alice["key"]))
    assert used.status_code == 202

    listing = await gw.client.get("/api/keys", headers=admin_headers())
    assert listing.status_code == 200
    rows = {row["name"]: row for row in listing.json()["data"]}
    assert set(rows) == {"alice", "bob"}
    for row, created in ((rows["alice"], alice), (rows["bob"], bob)):
        assert row["id"] == created["id"]
        assert row["prefix"] == created["key"][:7]
        assert row["created"] == created["created"]
        assert "key" not in row
    assert abs(rows["alice"]["lastUsed"] - time.time()) < 60
    assert rows["bob"]["lastUsed"] is None
    assert rows["alice"]["credits"] == 1  # 3 less the batch call's 2
    for secret in (alice["key"], bob["key"]):
        assert secret not in listing.text and hash_key(secret) not in listing.text

    own = await gw.client.get("/api/keys", headers=bearer(bob["key"]))
    assert own.status_code == 200
    assert [row["id"] for row in own.json()["data"]] == [bob["id"]]
    assert bob["key"] not in own.text and alice["id"] not in own.text


@SQLITE_ONLY
async def test_a_key_cannot_manage_keys(gw: Gateway) -> None:
    user = await create_key_full(gw.client, name="user")
    other = await create_key_full(gw.client, name="other")
    for method, path, body in (
        ("POST", "/api/keys", {"name": "mine"}),
        ("DELETE", f"/api/keys/{other['id']}", None),
        ("DELETE", f"/api/keys/{user['id']}", None),
        ("POST", f"/api/keys/{user['id']}/credits", {"amount": 100}),
    ):
        response = await gw.client.request(method, path, json=body, headers=bearer(user["key"]))
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["type"] == "permission_error"
    assert len((await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]) == 2
    ok = await gw.client.post("/api/v1/completion?batch=1", json=chat_body(), headers=xkey(other["key"]))
    assert ok.status_code == 202
    missing = await gw.client.delete("/api/keys/key_nothing", headers=admin_headers())
    assert missing.status_code == 404


@SQLITE_ONLY
async def test_deleting_a_key_revokes_it(gw: Gateway) -> None:
    created = await create_key_full(gw.client, name="short-lived")
    before = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body(), headers=xkey(created["key"])
    )
    assert before.status_code == 202
    deleted = await gw.client.delete(f"/api/keys/{created['id']}", headers=admin_headers())
    assert deleted.json() == {"deleted": True, "id": created["id"]}
    for path, headers in (
        ("/api/v1/completion?batch=1", xkey(created["key"])),
        ("/api/v1/chat", bearer(created["key"])),
    ):
        response = await gw.client.post(path, json=chat_body(), headers=headers)
        assert response.status_code == 401, response.text
    assert (await gw.client.get("/api/v1/status", headers=xkey(created["key"]))).status_code == 401


@SQLITE_ONLY
async def test_expired_key_is_403_everywhere(gw: Gateway) -> None:
    db = Database(gw.settings.database_url_or_default)
    try:
        _, secret = await create_key(db, "old", datetime.now(UTC) - timedelta(seconds=1), credits=5)
    finally:
        await db.dispose()
    for path, headers in (
        ("/api/v1/completion", xkey(secret)),
        ("/api/v1/chat?batch=1", bearer(secret)),
        ("/v1/chat/completions", bearer(secret)),
    ):
        response = await gw.client.post(path, json=chat_body(), headers=headers)
        assert response.status_code == 403, response.text
        assert "expired" in response.text
    assert (await gw.client.get("/api/v1/status", headers=xkey(secret))).status_code == 403
    listed = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]
    assert listed[0]["status"] == "expired"


@SQLITE_ONLY
async def test_a_key_limited_to_models_is_refused_the_others(gw: Gateway) -> None:
    gw.start_worker()
    created = await create_key_full(gw.client, name="echo-only", models=["mock/echo"], credits=5)
    secret = created["key"]
    allowed = await gw.client.post("/api/v1/chat", json=chat_body(model="mock/echo"), headers=bearer(secret))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["credits_remaining"] == 4

    native = await gw.client.post(
        "/api/v1/completion", json=chat_body(model="mock/other"), headers=xkey(secret)
    )
    assert native.status_code == 403
    assert native.json()["success"] is False and "mock/other" in native.json()["message"]
    credits = await gw.client.post(
        "/api/v1/chat?batch=1", json=chat_body(model="mock/other"), headers=bearer(secret)
    )
    assert credits.status_code == 403
    assert "mock/other" in credits.json()["error"]
    openai = await gw.client.post(
        "/v1/chat/completions", json=chat_body(model="mock/other"), headers=bearer(secret)
    )
    assert openai.status_code == 403
    assert openai.json()["error"]["type"] == "permission_error"
    # A refused request takes nothing: no credits, no count.
    status = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
    assert status["limits"]["hourly"]["used"] == 1
    again = await gw.client.post("/api/v1/chat", json=chat_body(model="mock/echo"), headers=bearer(secret))
    assert again.json()["credits_remaining"] == 3


# --- the CLI -------------------------------------------------------------------------------------
async def run_cli(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`switchyard.cli.main` in a thread (it runs its own event loop), with this test's settings."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(cli.main, argv)
    finally:
        get_settings.cache_clear()


@SQLITE_ONLY
async def test_cli_creates_lists_and_revokes_keys(
    gw: Gateway,
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw.start_worker()
    # The console script, as an operator runs it.
    inherited = ("SWITCHYARD_", "DATABASE_URL", "REDIS_URL")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "switchyard"),
        "keys", "create", "cli-key", "--credits", "5",
        "--limits", '{"hourly": 9, "per_minute": {"chat": 8}}', "--models", "mock/echo, mock/other",
        env={**clean, "DATABASE_URL": env["DATABASE_URL"], "SWITCHYARD_LOG_LEVEL": "WARNING"},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    key_id, name = lines[0].split()
    secret = lines[1].strip()
    assert name == "cli-key" and key_id.startswith("key_") and secret.startswith("ck_")
    assert out.decode().count(secret) == 1

    chat = await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(secret))
    assert chat.status_code == 200, chat.text
    assert chat.json()["credits_remaining"] == 4  # Redis had no balance: seeded from the database
    assert chat.headers["x-ratelimit-limit"] == "9"
    status = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
    assert status["limits"]["per_minute"] == {"chat": 8, "image": 30, "video": 10}
    refused = await gw.client.post("/api/v1/chat", json=chat_body(model="mock/nope"), headers=bearer(secret))
    assert refused.status_code == 404
    listed = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]
    assert listed[0]["models"] == ["mock/echo", "mock/other"]

    capsys.readouterr()
    assert await run_cli(["keys", "list"], env, monkeypatch) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and secret[:7] in listing and "cli-key" in listing and "active" in listing
    assert secret not in listing

    assert await run_cli(["keys", "create", "spare"], env, monkeypatch) == 0
    spare_id, _ = capsys.readouterr().out.splitlines()[0].split()
    assert await run_cli(["keys", "revoke", spare_id], env, monkeypatch) == 0
    assert f"revoked {spare_id}" in capsys.readouterr().out
    assert await run_cli(["keys", "revoke", spare_id], env, monkeypatch) == 1
    capsys.readouterr()
    listed = {r["id"]: r for r in (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]}
    assert listed[spare_id]["status"] == "revoked" and listed[key_id]["status"] == "active"

    assert await run_cli(["keys", "create", "bad", "--limits", '{"hourly": -1}'], env, monkeypatch) == 2
    assert "hourly" in capsys.readouterr().err
    assert await run_cli(["keys", "create", "bad", "--limits", "{not json"], env, monkeypatch) == 2
    assert "--limits" in capsys.readouterr().err
    assert await run_cli(["keys", "create", "bad", "--credits", "-5"], env, monkeypatch) == 2
    assert "--credits" in capsys.readouterr().err
    assert await run_cli(["keys", "create", "bad", "--expires-at", "yesterday"], env, monkeypatch) == 2
    assert "--expires-at" in capsys.readouterr().err
    assert (
        await run_cli(["keys", "create", "bad", "--expires-at", "2001-01-01T00:00:00"], env, monkeypatch) == 2
    )
    assert "--expires-at" in capsys.readouterr().err
    assert len((await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]) == 2


# --- credits -------------------------------------------------------------------------------------
async def test_credits_are_charged_per_call_until_402(gw: Gateway) -> None:
    gw.start_worker()
    created = await create_key_full(gw.client, name="three", credits=3)
    secret = created["key"]
    for left in (2, 1, 0):
        response = await gw.client.post(
            "/api/v1/chat", json=chat_body(f"call {left}"), headers=bearer(secret)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["credits_charged"] == 1
        assert body["credits_remaining"] == left
        assert body["batch_request"] is False
        assert response.headers["x-ratelimit-remaining"] == str(100 - (3 - left))

    broke = await gw.client.post("/api/v1/chat", json=chat_body("one more"), headers=bearer(secret))
    assert broke.status_code == 402
    assert broke.json() == {
        "error": "Insufficient credits. Required: 1, Available: 0",
        "credits_required": 1,
        "credits_available": 0,
    }
    # Every response says where the key stands, a 402 too (the refused call is not counted).
    assert broke.headers["x-ratelimit-limit"] == "100"
    assert broke.headers["x-ratelimit-remaining"] == "97"
    native = await gw.client.post("/api/v1/completion", json=chat_body(), headers=xkey(secret))
    assert native.status_code == 402
    assert native.json()["success"] is False
    assert native.json()["credits_required"] == 1 and native.json()["credits_available"] == 0
    # A refused call is not counted against the limits either.
    status = (await gw.client.get("/api/v1/status", headers=xkey(secret))).json()["data"]
    assert status["limits"]["hourly"]["used"] == 3

    # The database's figure (credits granted less the charges of recorded jobs) agrees.
    async def persisted() -> bool:
        return await db_balance(gw.settings, created["id"]) == 0

    await eventually(persisted, what="the balance to reach the database")


@SQLITE_ONLY
async def test_a_batch_call_costs_two_credits(gw: Gateway) -> None:
    created = await create_key_full(gw.client, name="batch", credits=5)
    secret = created["key"]
    submitted = await gw.client.post("/api/v1/chat?batch=1", json=chat_body("later"), headers=bearer(secret))
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["data"]["job"]
    assert job["credits_charged"] == 2
    second = await gw.client.post("/api/v1/chat?batch=1", json=chat_body("later too"), headers=bearer(secret))
    assert second.status_code == 202
    short = await gw.client.post("/api/v1/chat?batch=1", json=chat_body("no"), headers=bearer(secret))
    assert short.status_code == 402
    assert short.json() == {
        "error": "Insufficient credits. Required: 2, Available: 1",
        "credits_required": 2,
        "credits_available": 1,
    }
    gw.start_worker()
    done = await wait_for_status(gw.client, secret, job["id"], "succeeded")
    assert done["credits_charged"] == 2
    assert done["result"]["credits_charged"] == 2
    assert done["result"]["credits_remaining"] == 3
    assert done["result"]["batch_request"] is True
    sync = await gw.client.post("/api/v1/chat", json=chat_body("now"), headers=bearer(secret))
    assert sync.status_code == 200
    assert sync.json()["credits_remaining"] == 0


@pytest.mark.settings(SWITCHYARD_PROVIDER_ATTEMPTS="1")
async def test_a_provider_failure_refunds_the_credit(gw: Gateway) -> None:
    gw.start_worker()
    created = await create_key_full(gw.client, name="refund", credits=2)
    secret = created["key"]
    failed = await gw.client.post("/api/v1/chat", json=chat_body("[fail] no luck"), headers=bearer(secret))
    assert failed.status_code == 502, failed.text
    assert set(failed.json()) == {"error"}
    job = await get_job(gw.client, secret, failed.headers["x-job-id"])
    assert job["status"] == "failed"
    assert job["credits_charged"] == 0
    assert job["error"]["type"] == "provider_error"

    listed = (await gw.client.get("/api/keys", headers=bearer(secret))).json()["data"][0]
    assert listed["credits"] == 2
    ok = await gw.client.post("/api/v1/chat", json=chat_body("fine"), headers=bearer(secret))
    assert ok.json()["credits_remaining"] == 1

    # The refund reaches the database too, and the usage row records no charge.
    async def persisted() -> bool:
        return await db_balance(gw.settings, created["id"]) == 1

    await eventually(persisted, what="the balance to reach the database")
    persisted_job = await get_job(gw.client, secret, job["id"])
    assert persisted_job["credits_charged"] == 0


@SQLITE_ONLY
@pytest.mark.settings(SWITCHYARD_PROVIDER_ATTEMPTS="3")
async def test_a_retried_job_is_charged_once(gw: Gateway, standin: Any) -> None:
    gw.start_worker()
    secret = (await create_key_full(gw.client, name="retry", credits=4))["key"]
    response = await gw.client.post(
        "/api/v1/chat", json=chat_body("[fail:2] third time"), headers=bearer(secret)
    )
    assert response.status_code == 200, response.text
    assert response.json()["credits_charged"] == 1
    assert response.json()["credits_remaining"] == 3
    job = await get_job(gw.client, secret, response.headers["x-job-id"])
    assert job["attempts"] == 3
    assert standin.chat_calls == 3
    assert job["credits_charged"] == 1
    listed = (await gw.client.get("/api/keys", headers=bearer(secret))).json()["data"][0]
    assert listed["credits"] == 3


@SQLITE_ONLY
async def test_canceling_a_queued_job_refunds_it(gw: Gateway) -> None:
    created = await create_key_full(gw.client, name="cancel", credits=5, limits={"daily_tokens": 1000})
    secret = created["key"]
    submitted = await gw.client.post(
        "/api/v1/chat?batch=1", json=chat_body("never mind", max_tokens=600), headers=bearer(secret)
    )
    assert submitted.status_code == 202
    job_id = submitted.json()["data"]["job_id"]
    assert (await gw.client.get("/api/keys", headers=bearer(secret))).json()["data"][0]["credits"] == 3
    # A second reservation of 600 would pass the daily token limit.
    over = await gw.client.post(
        "/api/v1/chat?batch=1", json=chat_body("x", max_tokens=600), headers=bearer(secret)
    )
    assert over.status_code == 429

    canceled = await gw.client.delete(f"/api/v1/jobs/{job_id}", headers=xkey(secret))
    assert canceled.status_code == 200
    assert canceled.json()["data"]["status"] == "canceled"
    assert canceled.json()["data"]["credits_charged"] == 0
    assert (await gw.client.get("/api/keys", headers=bearer(secret))).json()["data"][0]["credits"] == 5
    # Its tokens came back with its credits.
    again = await gw.client.post(
        "/api/v1/chat?batch=1", json=chat_body("x", max_tokens=600), headers=bearer(secret)
    )
    assert again.status_code == 202, again.text
    # Canceling twice refunds once.
    assert (await gw.client.delete(f"/api/v1/jobs/{job_id}", headers=xkey(secret))).status_code == 200
    assert (await gw.client.get("/api/keys", headers=bearer(secret))).json()["data"][0]["credits"] == 3


async def test_admin_adds_credits(gw: Gateway) -> None:
    gw.start_worker()
    created = await create_key_full(gw.client, name="topped", credits=1)
    secret = created["key"]
    assert (await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(secret))).status_code == 200
    assert (await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(secret))).status_code == 402

    topped = await gw.client.post(
        f"/api/keys/{created['id']}/credits", json={"amount": 4}, headers=admin_headers()
    )
    assert topped.status_code == 200, topped.text
    assert topped.json() == {"id": created["id"], "added": 4, "credits": 4}
    record = await db_key(gw.settings, created["id"])
    assert record is not None and record.credits == 5  # granted: 1 at creation, 4 topped up

    async def seeded() -> bool:  # once the charged job's usage row is written (within ~100 ms)
        return await db_balance(gw.settings, created["id"]) == 4

    await eventually(seeded, what="the database's balance to count the charged job")
    after = await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(secret))
    assert after.status_code == 200
    assert after.json()["credits_remaining"] == 3

    # A key that was not metered becomes metered.
    free = await create_key_full(gw.client, name="free")
    unmetered = await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(free["key"]))
    assert unmetered.json()["credits_charged"] == 1
    assert unmetered.json()["credits_remaining"] is None
    topped = await gw.client.post(
        f"/api/keys/{free['id']}/credits", json={"amount": 2}, headers=admin_headers()
    )
    assert topped.json()["credits"] == 2
    metered = await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(free["key"]))
    assert metered.json()["credits_remaining"] == 1


@SQLITE_ONLY
@pytest.mark.parametrize(
    "body", [{"amount": -5}, {"amount": 0}, {"amount": "5"}, {"amount": 2.5}, {"amount": None}, {}]
)
async def test_bad_credit_amounts_are_400_naming_amount(gw: Gateway, body: dict[str, Any]) -> None:
    created = await create_key_full(gw.client, name="amounts", credits=3)
    response = await gw.client.post(f"/api/keys/{created['id']}/credits", json=body, headers=admin_headers())
    assert_cloudgpt_400(response, "amount")
    listed = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"][0]
    assert listed["credits"] == 3
    unknown = await gw.client.post("/api/keys/key_nope/credits", json={"amount": 1}, headers=admin_headers())
    assert unknown.status_code == 404


@SQLITE_ONLY
async def test_credits_survive_redis_losing_them(gw: Gateway) -> None:
    """The database's copy of a balance seeds Redis when Redis has none (a flush, a restart)."""
    gw.start_worker()
    created = await create_key_full(gw.client, name="durable", credits=4)
    secret = created["key"]
    assert (await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(secret))).json()[
        "credits_remaining"
    ] == 3

    async def persisted() -> bool:
        return await db_balance(gw.settings, created["id"]) == 3

    await eventually(persisted, what="the balance to reach the database")
    await gw.client.get("/health")
    from redis.asyncio import Redis

    async with Redis.from_url(gw.settings.redis_url) as r:  # type: ignore[arg-type]
        await r.hdel(CREDITS_KEY, created["id"])
    response = await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(secret))
    assert response.status_code == 200
    assert response.json()["credits_remaining"] == 2


@SQLITE_ONLY
async def test_the_admin_key_is_not_metered(gw: Gateway) -> None:
    gw.start_worker()
    response = await gw.client.post(
        "/api/v1/chat", json=chat_body(), headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert response.status_code == 200
    assert response.json()["credits_remaining"] is None


@SQLITE_ONLY
@pytest.mark.settings(SWITCHYARD_RESULT_TTL_S="1")
async def test_a_persisted_job_keeps_its_credit_fields(gw: Gateway) -> None:
    gw.start_worker()
    secret = (await create_key_full(gw.client, name="persisted", credits=5))["key"]
    response = await gw.client.post("/api/v1/chat", json=chat_body("keep me"), headers=bearer(secret))
    assert response.status_code == 200
    expected = response.json()
    assert expected["credits_remaining"] == 4
    job_id = response.headers["x-job-id"]
    from redis.asyncio import Redis

    async with Redis.from_url(gw.settings.redis_url) as r:  # type: ignore[arg-type]

        async def gone_from_redis() -> bool:
            waiting = await r.zscore(persist_set("interactive"), job_id)
            return not waiting and not await r.exists(f"sy:job:{job_id}")

        await eventually(gone_from_redis, timeout=5, what="the job to leave Redis")
    job = await get_job(gw.client, secret, job_id)
    assert job["status"] == "succeeded"
    assert job["result"] == expected
