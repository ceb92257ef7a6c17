"""API keys: created by the admin and shown once, listed by prefix, revoked and expired; every way
of presenting a key, and every way of presenting a wrong one, in each dialect's error shape."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from storage.db import Database
from storage.keys import create_key, hash_key
from tests.conftest import ADMIN_KEY, Gateway, admin_headers, chat_body


async def test_admin_creates_a_key_shown_once_and_listed_by_prefix(gw: Gateway) -> None:
    gw.start_worker()
    response = await gw.client.post("/api/keys", json={"name": "alice"}, headers=admin_headers())
    assert response.status_code == 201
    created = response.json()
    secret = created["key"]
    assert secret.startswith("ck_") and len(secret) > 20
    assert created["name"] == "alice"
    assert created["prefix"] == secret[:7]
    assert created["id"].startswith("key_")
    assert created["expires_at"] is None

    chat = await gw.client.post(
        "/api/v1/chat", json=chat_body(), headers={"Authorization": f"Bearer {secret}"}
    )
    assert chat.status_code == 200, chat.text

    listing = await gw.client.get("/api/keys", headers=admin_headers())
    assert listing.status_code == 200
    assert secret not in listing.text and hash_key(secret) not in listing.text
    (row,) = listing.json()["data"]
    assert row["id"] == created["id"]
    assert row["prefix"] == secret[:7]
    assert row["status"] == "active"
    assert "key" not in row
    assert isinstance(row["lastUsed"], int)


async def test_revoked_key_is_refused_at_once(gw: Gateway) -> None:
    gw.start_worker()
    secret = await gw.create_key("bob")
    key_id = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"][0]["id"]
    ok = await gw.client.post("/api/v1/chat", json=chat_body(), headers={"Authorization": f"Bearer {secret}"})
    assert ok.status_code == 200  # the key is now in the web process' key cache

    revoked = await gw.client.delete(f"/api/keys/{key_id}", headers=admin_headers())
    assert revoked.status_code == 200
    assert revoked.json() == {"deleted": True, "id": key_id}

    refused = await gw.client.post(
        "/api/v1/chat", json=chat_body(), headers={"Authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 401
    assert refused.json() == {"error": "Invalid API key"}
    jobs = await gw.client.get("/api/v1/jobs", headers={"X-API-Key": secret})
    assert jobs.status_code == 401
    assert jobs.json()["success"] is False

    listing = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]
    assert listing[0]["status"] == "revoked"
    again = await gw.client.delete(f"/api/keys/{key_id}", headers=admin_headers())
    assert again.status_code == 404
    assert again.json()["error"]["type"] == "not_found_error"


async def test_expired_key_is_forbidden(gw: Gateway) -> None:
    gw.start_worker()
    soon = datetime.now(UTC) + timedelta(seconds=1)
    response = await gw.client.post(
        "/api/keys", json={"name": "brief", "expires_at": soon.isoformat()}, headers=admin_headers()
    )
    assert response.status_code == 201, response.text
    secret = response.json()["key"]
    assert response.json()["expires_at"] == int(soon.timestamp())

    ok = await gw.client.post("/api/v1/completion", json=chat_body(), headers={"X-API-Key": secret})
    assert ok.status_code == 200, ok.text
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)

    expired = await gw.client.post("/api/v1/completion", json=chat_body(), headers={"X-API-Key": secret})
    assert expired.status_code == 403
    body = expired.json()
    assert body["success"] is False and body["error"] == "Forbidden"
    assert "expired" in body["message"]
    openai_shape = await gw.client.post(
        "/v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {secret}"}
    )
    assert openai_shape.status_code == 403
    assert openai_shape.json()["error"]["type"] == "permission_error"
    listing = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]
    assert listing[0]["status"] == "expired"


async def test_key_that_expired_before_this_process_saw_it(gw: Gateway) -> None:
    db = Database(gw.settings.database_url_or_default)
    try:
        _, secret = await create_key(db, "old", datetime.now(UTC) - timedelta(minutes=1))
    finally:
        await db.dispose()
    response = await gw.client.post(
        "/api/v1/chat", json=chat_body(), headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 403
    assert response.json() == {"error": "API key has expired"}


@pytest.mark.parametrize("how", ["x-api-key", "query", "bearer"])
async def test_a_key_is_accepted_in_each_documented_place(gw: Gateway, key: str, how: str) -> None:
    gw.start_worker()
    headers, params = {}, {}
    if how == "x-api-key":
        headers["X-API-Key"] = key
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    else:
        params["api_key"] = key
    response = await gw.client.post(
        "/api/v1/completion", json=chat_body("auth"), headers=headers, params=params
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["choices"][0]["message"]["content"] == "echo: auth"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/v1/completion", {}),
        ("/api/v1/completion", {"X-API-Key": "ck_not_a_real_key"}),
        ("/api/v1/chat", {}),
        ("/api/v1/chat", {"Authorization": "Bearer ck_not_a_real_key"}),
        ("/v1/chat/completions", {}),
        ("/openai/v1/chat/completions", {"Authorization": "Bearer ck_not_a_real_key"}),
        ("/v1/chat/completions", {"Authorization": "Basic Zm9vOmJhcg=="}),
    ],
)
async def test_missing_or_invalid_key_is_401_in_the_dialect_shape(
    gw: Gateway, path: str, headers: dict[str, str]
) -> None:
    response = await gw.client.post(path, json=chat_body(), headers=headers)
    assert response.status_code == 401
    body = response.json()
    if path == "/api/v1/completion":
        assert body["success"] is False and body["error"] == "Unauthorized" and body["message"]
        assert isinstance(body["details"], list)
    elif path == "/api/v1/chat":
        assert set(body) == {"error"} and isinstance(body["error"], str)
    else:
        assert body["error"]["type"] == "authentication_error"
        assert set(body["error"]) >= {"message", "type", "code", "param"}


async def test_only_the_admin_key_manages_keys(gw: Gateway, key: str) -> None:
    no_key = await gw.client.get("/api/keys")
    assert no_key.status_code == 401
    wrong = await gw.client.get("/api/keys", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    user = await gw.client.post("/api/keys", json={"name": "x"}, headers={"Authorization": f"Bearer {key}"})
    assert user.status_code == 403
    assert user.json()["error"]["type"] == "permission_error"
    assert (
        await gw.client.get("/api/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    ).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 3}, "name"),
        ({"name": "x", "expires_at": "yesterday"}, "expires_at"),
        ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ],
)
async def test_bad_key_requests_are_400_naming_the_field(
    gw: Gateway, body: dict[str, object], field: str
) -> None:
    response = await gw.client.post("/api/keys", json=body, headers=admin_headers())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == field
    assert field in error["message"]


@pytest.mark.settings(SWITCHYARD_ADMIN_KEY="")
async def test_without_an_admin_key_key_management_is_disabled(gw: Gateway) -> None:
    response = await gw.client.post(
        "/api/keys", json={"name": "x"}, headers={"Authorization": "Bearer anything"}
    )
    assert response.status_code == 403
    assert "SWITCHYARD_ADMIN_KEY" in response.json()["error"]["message"]
