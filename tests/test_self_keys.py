"""Self-service keys (api-reference 001 and 002): a signed-in user, or a key of that user, makes,
lists and deletes that user's keys only; the admin sees every key; credits and usage add up
per user."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import httpx

from tests.conftest import Gateway, admin_headers, chat_body, eventually
from tests.test_users import PASSWORD, admin_user, signin


async def signed_in(gw: Gateway, email: str, role: str = "user") -> tuple[httpx.AsyncClient, dict[str, str]]:
    """A client of its own (its own cookie jar) signed in as a new user, and its CSRF header."""
    await admin_user(gw, email, role)
    client = httpx.AsyncClient(transport=gw.client._transport, base_url="http://testserver.local", timeout=30)
    token = (await signin(client, email)).json()["csrf_token"]
    return client, {"X-CSRF-Token": token}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_a_signed_in_user_makes_uses_lists_and_deletes_a_key(gw: Gateway) -> None:
    gw.start_worker()
    alice, csrf = await signed_in(gw, "alice@example.com")
    async with aclosing(alice):
        made = await alice.post("/api/keys", json={"name": "My Production Key"}, headers=csrf)
        assert made.status_code == 201, made.text
        key = made.json()
        assert {"id", "key", "name", "created"} <= set(key) and key["name"] == "My Production Key"
        chat = await alice.post("/api/chat", json=chat_body(), headers=bearer(key["key"]))
        assert chat.status_code == 200, chat.text

        listed = await alice.get("/api/keys")
        (row,) = listed.json()["data"]
        assert row["id"] == key["id"] and row["prefix"] == key["key"][:7] and isinstance(row["lastUsed"], int)
        assert key["key"] not in listed.text

        deleted = await alice.delete(f"/api/keys/{key['id']}", headers=csrf)
        assert deleted.json() == {"deleted": True, "id": key["id"]}
        refused = await alice.post("/api/chat", json=chat_body(), headers=bearer(key["key"]))
        assert refused.status_code == 401


async def test_a_users_key_manages_that_users_keys(gw: Gateway) -> None:
    alice, csrf = await signed_in(gw, "a2@example.com")
    async with aclosing(alice):
        first = (await alice.post("/api/keys", json={"name": "first"}, headers=csrf)).json()
    alice.cookies.clear()
    made = await gw.client.post("/api/keys", json={"name": "second"}, headers=bearer(first["key"]))
    assert made.status_code == 201, made.text  # a Bearer key needs no CSRF token
    listed = await gw.client.get("/api/keys", headers=bearer(first["key"]))
    assert {r["name"] for r in listed.json()["data"]} == {"first", "second"}
    gone = await gw.client.delete(f"/api/keys/{made.json()['id']}", headers=bearer(first["key"]))
    assert gone.status_code == 200


async def test_one_user_cannot_see_or_delete_anothers_key(gw: Gateway) -> None:
    alice, a_csrf = await signed_in(gw, "a3@example.com")
    bob, b_csrf = await signed_in(gw, "b3@example.com")
    async with aclosing(alice), aclosing(bob):
        a_key = (await alice.post("/api/keys", json={"name": "alice's"}, headers=a_csrf)).json()
        b_key = (await bob.post("/api/keys", json={"name": "bob's"}, headers=b_csrf)).json()
        assert [r["id"] for r in (await bob.get("/api/keys")).json()["data"]] == [b_key["id"]]
        by_session = await bob.delete(f"/api/keys/{a_key['id']}", headers=b_csrf)
        assert by_session.status_code == 404
        by_key = await gw.client.delete(f"/api/keys/{a_key['id']}", headers=bearer(b_key["key"]))
        assert by_key.status_code == 404
        assert by_key.json()["error"]["type"] == "not_found_error" or by_key.json()["error"]["message"]
        assert a_key["id"] not in (await gw.client.get("/api/keys", headers=bearer(b_key["key"]))).text
        still = await alice.post("/api/chat", json=chat_body(), headers=bearer(a_key["key"]))
        assert still.status_code != 401


async def test_the_admin_sees_every_key(gw: Gateway) -> None:
    alice, csrf = await signed_in(gw, "a4@example.com")
    boss, boss_csrf = await signed_in(gw, "boss4@example.com", role="admin")
    async with aclosing(alice), aclosing(boss):
        a_key = (await alice.post("/api/keys", json={"name": "alice's"}, headers=csrf)).json()
        loose = await gw.create_key("no one's")  # an admin-made key of no user still works
        assert loose
        by_admin_key = {
            r["id"] for r in (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]
        }
        by_admin_user = {r["id"] for r in (await boss.get("/api/keys")).json()["data"]}
        assert a_key["id"] in by_admin_key and by_admin_key == by_admin_user and len(by_admin_key) == 2
        gone = await boss.delete(f"/api/keys/{a_key['id']}", headers=boss_csrf)
        assert gone.status_code == 200


async def test_a_user_may_not_give_their_key_limits_or_credits(gw: Gateway) -> None:
    alice, csrf = await signed_in(gw, "a5@example.com")
    async with aclosing(alice):
        for field, value in (("credits", 1000), ("limits", {"hourly": None})):
            response = await alice.post("/api/keys", json={"name": "k", field: value}, headers=csrf)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == field
        blank = await alice.post("/api/keys", json={"name": ""}, headers=csrf)
        assert blank.status_code == 400 and blank.json()["error"]["param"] == "name"
        assert (await alice.get("/api/keys")).json()["data"] == []


async def test_credits_and_usage_add_up_per_user(gw: Gateway) -> None:
    gw.start_worker()
    alice, csrf = await signed_in(gw, "a6@example.com")
    async with aclosing(alice):
        keys = [
            (await alice.post("/api/keys", json={"name": f"k{i}"}, headers=csrf)).json() for i in range(2)
        ]
        for key, amount in zip(keys, (5, 7), strict=True):
            topped = await gw.client.post(
                f"/api/keys/{key['id']}/credits", json={"amount": amount}, headers=admin_headers()
            )
            assert topped.status_code == 200, topped.text
        for key in keys:
            ok = await gw.client.post("/api/v1/chat", json=chat_body(), headers=bearer(key["key"]))
            assert ok.status_code == 200, ok.text

        async def me() -> dict[str, Any] | None:
            body: dict[str, Any] = (await alice.get("/api/auth/me")).json()
            return body if body["usage"]["requests"] == 2 else None

        body = await eventually(me, what="usage rows of both keys")
        assert body["credits"] == 5 + 7 - 2 and body["keys"] == 2
        assert body["usage"]["credits"] == 2 and body["usage"]["tokens"] > 0
        by_key = await gw.client.get("/api/auth/me", headers=bearer(keys[0]["key"]))
        assert by_key.json()["user"]["email"] == "a6@example.com" and by_key.json()["csrf_token"] is None


async def test_a_disabled_users_keys_stop_working(gw: Gateway) -> None:
    alice, csrf = await signed_in(gw, "a7@example.com")
    async with aclosing(alice):
        key = (await alice.post("/api/keys", json={"name": "k"}, headers=csrf)).json()
    users = (await gw.client.get("/api/admin/users", headers=admin_headers())).json()["data"]
    user_id = next(u["id"] for u in users if u["email"] == "a7@example.com")
    await gw.client.post(f"/api/admin/users/{user_id}/disable", headers=admin_headers())
    refused = await gw.client.get("/api/keys", headers=bearer(key["key"]))
    assert refused.status_code == 403


async def test_signed_out_callers_get_401(gw: Gateway) -> None:
    response = await gw.client.post("/api/keys", json={"name": "x"})
    assert response.status_code == 401
    assert (await gw.client.get("/api/keys")).status_code == 401
    assert PASSWORD  # the shared password of these tests' users
