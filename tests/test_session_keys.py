"""A signed-in browser calls the API as one of its user's keys: the session cookie plus
`X-Switchyard-Key: <key id>` (and the CSRF token on a state-changing call). The call acts as
that key (jobs, credits, usage); another user's key id is a 404; a plain key is unchanged and
costs the database nothing once cached. Also the admin overview and credit grants/revocations.
"""

from __future__ import annotations

import io
import json
from contextlib import aclosing
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import event

from tests.accounts_support import SQLITE_ONLY
from tests.conftest import Gateway, admin_headers, chat_body, eventually
from tests.llm_support import assert_openai_error
from tests.test_self_keys import bearer, signed_in

CHAT = "/v1/chat/completions"


async def own_key(client: httpx.AsyncClient, csrf: dict[str, str], name: str = "browser") -> dict[str, Any]:
    made = await client.post("/api/keys", json={"name": name}, headers=csrf)
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def as_key(key_id: str, csrf: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Switchyard-Key": key_id, **(csrf or {})}


def sse_data(text: str) -> list[Any]:
    return [
        "[DONE]" if line == "data: [DONE]" else orjson.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


async def test_a_session_chats_as_its_users_key_with_credits_and_jobs(gw: Gateway) -> None:
    gw.start_worker()
    alice, csrf = await signed_in(gw, "sk1@example.com")
    async with aclosing(alice):
        key = await own_key(alice, csrf)
        topped = await gw.client.post(
            f"/api/keys/{key['id']}/credits", json={"amount": 5}, headers=admin_headers()
        )
        assert topped.status_code == 200, topped.text

        answer = await alice.post(CHAT, json=chat_body("hello there"), headers=as_key(key["id"], csrf))
        assert answer.status_code == 200, answer.text
        assert answer.json()["object"] == "chat.completion"
        assert answer.headers["x-ratelimit-limit"] == "100"  # the key's own hourly window
        streamed = await alice.post(
            CHAT, json=chat_body("stream it", stream=True), headers=as_key(key["id"], csrf)
        )
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith(
            "text/event-stream"
        )
        events = sse_data(streamed.text)
        assert events[-1] == "[DONE]" and "stream it" in "".join(
            e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]
        )

        # The jobs are the key's: its Bearer secret sees them, and so does the session.
        by_secret = (await gw.client.get("/api/v1/jobs", headers=bearer(key["key"]))).json()["data"]
        by_session = (await alice.get("/api/v1/jobs", headers=as_key(key["id"]))).json()["data"]
        assert {j["id"] for j in by_secret} == {j["id"] for j in by_session} and len(by_session) == 2
        one = await alice.get(f"/api/v1/jobs/{by_session[0]['id']}", headers=as_key(key["id"]))
        assert one.status_code == 200 and one.json()["data"]["status"] == "succeeded"

        async def charged() -> bool:
            listed = (await alice.get("/api/keys")).json()["data"]
            return listed[0]["credits"] == 3

        await eventually(charged, what="two calls charged to the key's credits")
        models = await alice.get("/v1/models", headers=as_key(key["id"]))
        assert models.status_code == 200 and {m["id"] for m in models.json()["data"]} >= {"mock/echo"}


async def test_csrf_is_required_on_every_state_changing_call(gw: Gateway) -> None:
    alice, csrf = await signed_in(gw, "sk2@example.com")
    async with aclosing(alice):
        key = await own_key(alice, csrf)
        missing = await alice.post(CHAT, json=chat_body(), headers=as_key(key["id"]))
        assert assert_openai_error(missing, 403)["code"] == "csrf_failed"
        wrong = await alice.post(
            CHAT, json=chat_body(), headers=as_key(key["id"], {"X-CSRF-Token": "x" * 43})
        )
        assert assert_openai_error(wrong, 403)["code"] == "csrf_failed"
        # A form field is no token for the API: its body is the API's own.
        form = await alice.post(CHAT, data={"csrf_token": csrf["X-CSRF-Token"]}, headers=as_key(key["id"]))
        assert form.status_code == 403
        cancel = await alice.delete("/api/v1/jobs/job_nope", headers=as_key(key["id"]))
        assert cancel.status_code == 403 and cancel.json()["success"] is False  # the native shape
        assert (
            await alice.get("/api/v1/jobs", headers=as_key(key["id"]))
        ).status_code == 200  # GET needs none


async def test_one_user_cannot_act_as_anothers_key(gw: Gateway) -> None:
    alice, a_csrf = await signed_in(gw, "sk3a@example.com")
    bob, b_csrf = await signed_in(gw, "sk3b@example.com")
    async with aclosing(alice), aclosing(bob):
        a_key = await own_key(alice, a_csrf)
        b_key = await own_key(bob, b_csrf)
        stolen = await bob.post(CHAT, json=chat_body(), headers=as_key(a_key["id"], b_csrf))
        error = assert_openai_error(stolen, 404)
        assert a_key["id"] in error["message"]
        jobs = await bob.get("/api/v1/jobs", headers=as_key(a_key["id"]))
        assert jobs.status_code == 404 and jobs.json()["success"] is False
        unknown = await bob.get("/api/v1/jobs", headers=as_key("key_" + "0" * 16))
        assert unknown.status_code == 404
        too_long = await bob.get("/api/v1/jobs", headers=as_key("k" * 5000))
        assert too_long.status_code == 404 and len(too_long.text) < 500
        # A cookie alone is not a key, nor is the header without a session.
        cookie_only = await bob.get("/api/v1/jobs")
        assert cookie_only.status_code == 401 and "X-Switchyard-Key" in cookie_only.json()["message"]
        bob.cookies.clear()
        header_only = await bob.get("/api/v1/jobs", headers=as_key(b_key["id"]))
        assert header_only.status_code == 401
        # A revoked key of one's own no longer acts.
        assert (await alice.delete(f"/api/keys/{a_key['id']}", headers=a_csrf)).status_code == 200
        revoked = await alice.get("/api/v1/jobs", headers=as_key(a_key["id"]))
        assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]


async def test_an_admin_session_may_act_as_any_key(gw: Gateway) -> None:
    alice, a_csrf = await signed_in(gw, "sk4a@example.com")
    boss, boss_csrf = await signed_in(gw, "sk4boss@example.com", role="admin")
    async with aclosing(alice), aclosing(boss):
        a_key = await own_key(alice, a_csrf)
        loose = (await gw.client.post("/api/keys", json={"name": "no one's"}, headers=admin_headers())).json()
        for key_id in (a_key["id"], loose["id"]):
            listed = await boss.get("/api/v1/jobs", headers=as_key(key_id))
            assert listed.status_code == 200, listed.text
        not_boss = await alice.get("/api/v1/jobs", headers=as_key(loose["id"]))
        assert not_boss.status_code == 404


async def test_batches_are_read_and_cancelled_through_the_session(gw: Gateway) -> None:
    alice, csrf = await signed_in(gw, "sk5@example.com")
    async with aclosing(alice):
        key = await own_key(alice, csrf)
        line = {"custom_id": "a", "method": "POST", "url": CHAT, "body": chat_body()}
        upload = await alice.post(
            "/v1/files",
            files={"file": ("in.jsonl", io.BytesIO(json.dumps(line).encode() + b"\n"))},
            data={"purpose": "batch"},
            headers=as_key(key["id"], csrf),
        )
        assert upload.status_code == 200, upload.text
        body = {"input_file_id": upload.json()["id"], "endpoint": CHAT, "completion_window": "24h"}
        made = await alice.post("/v1/batches", json=body, headers=as_key(key["id"], csrf))
        assert made.status_code == 200, made.text
        batch_id = made.json()["id"]
        got = await alice.get(f"/v1/batches/{batch_id}", headers=as_key(key["id"]))
        assert got.status_code == 200 and got.json()["id"] == batch_id
        no_csrf = await alice.post(f"/v1/batches/{batch_id}/cancel", headers=as_key(key["id"]))
        assert no_csrf.status_code == 403
        cancelled = await alice.post(f"/v1/batches/{batch_id}/cancel", headers=as_key(key["id"], csrf))
        assert cancelled.status_code == 200 and cancelled.json()["status"] in ("cancelling", "cancelled")


@SQLITE_ONLY
async def test_a_plain_key_costs_no_database_query_once_cached(gw: Gateway, key: str) -> None:
    """The key path is hot: a Bearer key is read from the database once per cache period, and
    the session path adds nothing to it (no cookie read, no extra query)."""
    app = gw.client._transport.app  # type: ignore[attr-defined]
    engine = app.state.services.db.engine.sync_engine
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    assert (await gw.client.get("/api/v1/jobs", headers=bearer(key))).status_code == 200  # cached now
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            response = await gw.client.get("/api/v1/jobs", headers=bearer(key))
            assert response.status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements and all("FROM jobs" in s for s in statements), statements  # the listing's own


async def test_the_admin_overview(gw: Gateway) -> None:
    gw.start_worker()
    alice, csrf = await signed_in(gw, "sk6@example.com")
    boss, boss_csrf = await signed_in(gw, "sk6boss@example.com", role="admin")
    async with aclosing(alice), aclosing(boss):
        key = await own_key(alice, csrf)
        await gw.client.post(f"/api/keys/{key['id']}/credits", json={"amount": 7}, headers=admin_headers())
        failed = await gw.client.post(CHAT, json=chat_body("boom [400]"), headers=bearer(key["key"]))
        assert failed.status_code >= 400
        job_id = failed.headers.get("x-job-id")

        async def seen() -> dict[str, Any] | None:
            body = (await gw.client.get("/api/admin/overview", headers=admin_headers())).json()
            return body if body["recent_failures"] and body["workers"] else None

        body = await eventually(seen, what="the failure and the worker in the overview")
        queues = {q["queue"]: q for q in body["queues"]}
        assert {"interactive", "batch"} <= set(queues) and queues["interactive"]["waiting"] == 0
        assert body["workers"][0]["seen_s_ago"] < 30
        assert set(body["providers"]) == {"standin"} and "cooldown_until" in body["providers"]["standin"]
        failure = body["recent_failures"][0]
        assert failure["kind"] == "chat_completion" and failure["model"] == "mock/echo"
        assert failure["key_id"] == key["id"] and failure["error"]["message"] and failure["finished_at"]
        if job_id:
            assert failure["id"] == job_id
        assert body["dead_letters"] == 0
        users = {u["email"]: u for u in body["users"]}
        me = (await alice.get("/api/auth/me")).json()
        assert users["sk6@example.com"]["credits"] == me["credits"] in (6, 7)  # as /api/auth/me sums them
        assert users["sk6@example.com"]["keys"][0]["id"] == key["id"]
        assert (
            users["sk6boss@example.com"]["credits"] is None
            and users["sk6boss@example.com"]["role"] == "admin"
        )

        by_session = await boss.get("/api/admin/overview")
        assert by_session.status_code == 200 and by_session.json()["users"] == body["users"]
        refused = await alice.get("/api/admin/overview")
        assert assert_openai_error(refused, 403)["message"] == "only an admin may read the admin overview"
        by_users_key = await gw.client.get("/api/admin/overview", headers=bearer(key["key"]))
        assert_openai_error(by_users_key, 403)
        alice.cookies.clear()
        assert_openai_error(await alice.get("/api/admin/overview"), 401)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_admin_grants_and_revokes_credits_never_below_zero(gw: Gateway) -> None:
    alice, csrf = await signed_in(gw, "sk7@example.com")
    boss, boss_csrf = await signed_in(gw, "sk7boss@example.com", role="admin")
    async with aclosing(alice), aclosing(boss):
        key = await own_key(alice, csrf)
        url = f"/api/keys/{key['id']}/credits"
        nothing = await gw.client.post(url, json={"amount": -1}, headers=admin_headers())
        assert "below 0" in assert_openai_error(nothing, 400, "amount")["message"]  # unmetered: 0 left
        granted = await boss.post(url, json={"amount": 10}, headers=boss_csrf)
        assert granted.json() == {"id": key["id"], "added": 10, "credits": 10}
        revoked = await gw.client.post(url, json={"amount": -4}, headers=admin_headers())
        assert revoked.json()["credits"] == 6
        too_much = await boss.post(url, json={"amount": -7}, headers=boss_csrf)
        assert "at most 6" in assert_openai_error(too_much, 400, "amount")["message"]
        assert_openai_error(await boss.post(url, json={"amount": 0}, headers=boss_csrf), 400, "amount")
        assert (await boss.post(url, json={"amount": 1})).status_code == 403  # no CSRF token
        by_user = await alice.post(url, json={"amount": 5}, headers=csrf)
        assert_openai_error(by_user, 403)
        assert (await alice.get("/api/auth/me")).json()["credits"] == 6
        # What the database holds agrees with Redis: losing Redis' copy keeps the balance.
        all_gone = await boss.post(url, json={"amount": -6}, headers=boss_csrf)
        assert all_gone.json()["credits"] == 0
