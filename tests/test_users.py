"""Users and sign-in: sign-up modes, wrong passwords, the sign-in rate limit, CSRF, sessions that
end, the admin's user routes, and bad input named by field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, admin_headers

PASSWORD = "correct horse battery"


async def signup(client: httpx.AsyncClient, email: str, **extra: Any) -> httpx.Response:
    return await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD, **extra})


async def admin_user(gw: Gateway, email: str, role: str = "user") -> dict[str, Any]:
    body = {"email": email, "password": PASSWORD, "role": role}
    response = await gw.client.post("/api/admin/users", json=body, headers=admin_headers())
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def signin(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/auth/signin", json={"email": email, "password": password})


async def test_signup_is_off_by_default(gw: Gateway) -> None:
    response = await signup(gw.client, "a@example.com")
    assert response.status_code == 403
    assert "SWITCHYARD_SIGNUP" in response.json()["error"]["message"]


@pytest.mark.settings(SWITCHYARD_SIGNUP="open")
async def test_open_signup_signs_in_with_a_session_cookie(gw: Gateway) -> None:
    response = await signup(gw.client, "  Alice@Example.COM ")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"]["email"] == "alice@example.com" and body["user"]["role"] == "user"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("sy_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # the public URL is not https here
    me = await gw.client.get("/api/auth/me")
    assert me.status_code == 200
    assert me.json()["user"]["email"] == "alice@example.com"
    assert me.json()["csrf_token"] == body["csrf_token"]
    assert me.json()["credits"] is None and me.json()["usage"]["requests"] == 0

    again = await signup(httpx_client_without_cookies(gw), "alice@example.com")
    assert again.status_code == 409


def httpx_client_without_cookies(gw: Gateway) -> httpx.AsyncClient:
    gw.client.cookies.clear()
    return gw.client


@pytest.mark.settings(SWITCHYARD_SIGNUP="open", SWITCHYARD_PUBLIC_URL="https://gw.example.com")
async def test_session_cookie_is_secure_behind_https(gw: Gateway) -> None:
    response = await signup(gw.client, "s@example.com")
    assert "Secure" in response.headers["set-cookie"]


@pytest.mark.settings(SWITCHYARD_SIGNUP="invite")
async def test_invite_only_signup(gw: Gateway) -> None:
    missing = await signup(gw.client, "b@example.com")
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "invite"
    wrong = await signup(gw.client, "b@example.com", invite="inv_nope")
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "invite"
    code = (await gw.client.post("/api/admin/invites", headers=admin_headers())).json()["code"]
    ok = await signup(gw.client, "b@example.com", invite=code)
    assert ok.status_code == 201, ok.text
    gw.client.cookies.clear()
    reused = await signup(gw.client, "c@example.com", invite=code)
    assert reused.status_code == 400 and "already used" in reused.json()["error"]["message"]


async def test_wrong_password_and_unknown_email_are_the_same_401(gw: Gateway) -> None:
    await admin_user(gw, "u@example.com")
    for email, password in (("u@example.com", "wrong password"), ("nobody@example.com", PASSWORD)):
        response = await signin(gw.client, email, password)
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "Invalid email or password"
        assert "set-cookie" not in response.headers
    assert (await signin(gw.client, "U@example.com")).status_code == 200


@pytest.mark.settings(SWITCHYARD_SIGNIN_PER_EMAIL="3")
async def test_signin_attempts_are_rate_limited_per_email(gw: Gateway) -> None:
    await admin_user(gw, "r@example.com")
    for _ in range(3):
        assert (await signin(gw.client, "r@example.com", "bad password")).status_code == 401
    limited = await signin(gw.client, "r@example.com")  # even the right password, for now
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_exceeded"
    assert (await signin(gw.client, "other@example.com", "bad password")).status_code == 401


@pytest.mark.settings(SWITCHYARD_SIGNIN_PER_IP="2", SWITCHYARD_SIGNIN_PER_EMAIL="100")
async def test_signin_attempts_are_rate_limited_per_address(gw: Gateway) -> None:
    for i in range(2):
        assert (await signin(gw.client, f"n{i}@example.com", "bad password")).status_code == 401
    assert (await signin(gw.client, "n9@example.com", "bad password")).status_code == 429


async def test_csrf_refused_without_token_and_accepted_with_it(gw: Gateway) -> None:
    await admin_user(gw, "c@example.com")
    token = (await signin(gw.client, "c@example.com")).json()["csrf_token"]
    refused = await gw.client.post("/api/keys", json={"name": "mine"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    wrong = await gw.client.post("/api/keys", json={"name": "mine"}, headers={"X-CSRF-Token": "x" + token})
    assert wrong.status_code == 403
    ok = await gw.client.post("/api/keys", json={"name": "mine"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201, ok.text
    form = await gw.client.post("/api/auth/signout", data={"csrf_token": token})
    assert form.status_code == 200


async def test_signout_ends_the_session(gw: Gateway) -> None:
    await admin_user(gw, "o@example.com")
    signed = await signin(gw.client, "o@example.com")
    old_cookie = gw.client.cookies["sy_session"]
    token = signed.json()["csrf_token"]
    assert (await gw.client.post("/api/auth/signout")).status_code == 403  # CSRF
    out = await gw.client.post("/api/auth/signout", headers={"X-CSRF-Token": token})
    assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
    # the old cookie no longer means anything
    gw.client.cookies.set("sy_session", old_cookie, domain="testserver.local")
    assert (await gw.client.get("/api/auth/me")).status_code == 401


@pytest.mark.settings(SWITCHYARD_SESSION_TTL_S="60")
async def test_session_expires_in_redis(gw: Gateway) -> None:
    await admin_user(gw, "e@example.com")
    await signin(gw.client, "e@example.com")
    assert (await gw.client.get("/api/auth/me")).status_code == 200
    svc = gw_services(gw)
    keys = [k async for k in svc.redis.scan_iter("sy:session:*")]
    assert len(keys) == 1 and 0 < await svc.redis.ttl(keys[0]) <= 60
    await svc.redis.delete(keys[0])  # what the TTL does when it runs out
    assert (await gw.client.get("/api/auth/me")).status_code == 401


def gw_services(gw: Gateway) -> Any:
    transport = gw.client._transport
    return transport.app.state.services  # type: ignore[attr-defined]


async def test_signing_in_makes_a_new_session_id(gw: Gateway) -> None:
    await admin_user(gw, "f@example.com")
    gw.client.cookies.set("sy_session", "planted-by-someone", domain="testserver.local")
    await signin(gw.client, "f@example.com")
    assert gw.client.cookies["sy_session"] != "planted-by-someone"


async def test_disabled_user_cannot_sign_in_and_their_session_ends(gw: Gateway) -> None:
    user = await admin_user(gw, "d@example.com")
    await signin(gw.client, "d@example.com")
    disabled = await gw.client.post(f"/api/admin/users/{user['id']}/disable", headers=admin_headers())
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert (await gw.client.get("/api/auth/me")).status_code == 401
    assert (await signin(gw.client, "d@example.com")).status_code == 403


async def test_admin_routes_need_the_admin(gw: Gateway) -> None:
    await admin_user(gw, "plain@example.com")
    token = (await signin(gw.client, "plain@example.com")).json()["csrf_token"]
    body = {"email": "x@example.com", "password": PASSWORD}
    refused = await gw.client.post("/api/admin/users", json=body, headers={"X-CSRF-Token": token})
    assert refused.status_code == 403
    await admin_user(gw, "boss@example.com", role="admin")
    gw.client.cookies.clear()
    token = (await signin(gw.client, "boss@example.com")).json()["csrf_token"]
    made = await gw.client.post("/api/admin/users", json=body, headers={"X-CSRF-Token": token})
    assert made.status_code == 201, made.text
    listed = (await gw.client.get("/api/admin/users")).json()["data"]
    assert {u["email"] for u in listed} == {"plain@example.com", "boss@example.com", "x@example.com"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": PASSWORD}, "email"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": 5, "password": PASSWORD}, "email"),
        ({"email": "a@example.com"}, "password"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com", "password": "x" * 2000}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "role": "root"}, "role"),
        ({"email": "a@example.com", "password": PASSWORD, "extra": 1}, "extra"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(gw: Gateway, body: dict[str, Any], field: str) -> None:
    response = await gw.client.post("/api/admin/users", json=body, headers=admin_headers())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field


async def test_cli_creates_the_first_admin(gw: Gateway, env: dict[str, str]) -> None:
    import asyncio
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchyard.cli", "users", "create", "First@Example.com", "--admin",
        "--password-stdin",
        env={**os.environ, **env}, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(PASSWORD.encode() + b"\n"), 60)
    assert proc.returncode == 0, err.decode()
    assert "first@example.com" in out.decode()
    signed = await signin(gw.client, "first@example.com")
    assert signed.status_code == 200 and signed.json()["user"]["role"] == "admin"


# --- login CSRF: another site cannot sign a visitor's browser into an account of its choosing ----
@pytest.mark.settings(SWITCHYARD_SIGNUP="open")
@pytest.mark.parametrize("route", ["/api/auth/signin", "/api/auth/signup"])
@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},  # a sibling subdomain is another site too
        {"origin": "https://attacker.example"},  # an older browser: no Sec-Fetch-Site
        {"origin": "null"},  # a sandboxed frame or a redirect chain
    ],
)
async def test_sign_in_and_up_from_another_site_are_refused(
    gw: Gateway, route: str, headers: dict[str, str]
) -> None:
    await admin_user(gw, "victim-of-csrf@example.com")
    body = {"email": "victim-of-csrf@example.com", "password": PASSWORD}
    for send in ({"data": body}, {"json": body}):  # a form post, and a text/plain-ish fetch
        response = await gw.client.post(route, headers=headers, **send)  # type: ignore[arg-type]
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "csrf_failed"
        assert "set-cookie" not in response.headers  # no session was made


@pytest.mark.settings(SWITCHYARD_SIGNUP="open")
async def test_sign_in_from_our_own_origin_or_no_browser_works(gw: Gateway) -> None:
    await admin_user(gw, "own-origin@example.com")
    host = gw.client.base_url.netloc.decode()
    for headers in ({}, {"sec-fetch-site": "same-origin"}, {"origin": f"http://{host}"}):
        gw.client.cookies.clear()
        response = await gw.client.post(
            "/api/auth/signin",
            json={"email": "own-origin@example.com", "password": PASSWORD},
            headers=headers,
        )
        assert response.status_code == 200, (headers, response.text)


@pytest.mark.settings(SWITCHYARD_SIGNUP="open")
async def test_the_sign_in_and_up_forms_need_their_own_token(gw: Gateway) -> None:
    await admin_user(gw, "form-user@example.com")
    signin_form = {"email": "form-user@example.com", "password": PASSWORD}
    # Posted without the page (as another site's form would be): refused, the form shown again.
    refused = await gw.client.post("/signin", data=signin_form)
    assert refused.status_code == 403 and "sent from another site" in refused.text
    assert "sy_session=" not in refused.headers.get("set-cookie", "")
    # A token that is not the one in this browser's cookie: refused too.
    gw.client.cookies.clear()
    page = await gw.client.get("/signin")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("sy_form=") and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    forged = await gw.client.post("/signin", data={**signin_form, "csrf_token": "x" * 32})
    assert forged.status_code == 403
    # The page's own token: signed in.
    page = await gw.client.get("/signin")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed = await gw.client.post("/signin", data={**signin_form, "csrf_token": token})
    assert signed.status_code == 303 and "sy_session=" in signed.headers["set-cookie"]

    gw.client.cookies.clear()
    up = {"email": "new-form-user@example.com", "password": PASSWORD}
    assert (await gw.client.post("/signup", data=up)).status_code == 403
    page = await gw.client.get("/signup")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    made = await gw.client.post("/signup", data={**up, "csrf_token": token})
    assert made.status_code == 303 and "sy_session=" in made.headers["set-cookie"]
