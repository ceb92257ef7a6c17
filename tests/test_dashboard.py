"""The dashboard in a real browser: Debian's chromium driven by Playwright against the app
served over loopback HTTP (real Redis, SQLite, a worker, the stand-in provider). Sign up, see
the dashboard, create a key and read it once, call the API with it, find the job in /jobs and
its detail, see the dashboard's count move, revoke the key, sign out; a bad sign-in shows the
API's message; keyboard-only sign-in; no page scrolls sideways at 375 px; another user's job is
a 404 page. Skipped only where /usr/bin/chromium is absent."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Page, expect

from api.pages.jobs import user_jobs
from api.state import Services
from storage.keys import list_keys
from switchyard.settings import Settings
from tests.accounts_support import bearer
from tests.conftest import Gateway, chat_body
from tests.dashboard_support import (
    CHROMIUM,
    NARROW,
    PASSWORD,
    batch_file,
    create_key,
    no_sideways_scroll,
    served_site,
    sign_up,
)

pytestmark = [
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.settings(SWITCHYARD_SIGNUP="open"),
    pytest.mark.timeout(60),
]
browser = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")


async def period_requests(page: Page, base_url: str) -> int:
    await page.goto(f"{base_url}/dashboard?range=today")
    return int(await page.locator("#period-requests").text_content() or "0")


@browser
async def test_sign_up_to_first_call_and_back_out(settings: Settings) -> None:
    async with served_site(settings) as site:
        context = await site.browser.new_context(viewport=NARROW)
        page = await context.new_page()
        base = site.base_url
        await page.goto(f"{base}/keys")  # not signed in: sent to sign in, and back after
        assert page.url.startswith(f"{base}/signin")
        await sign_up(page, base, "ada@example.com")
        await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        before = await period_requests(page, base)
        per_model = page.get_by_role("img", name=re.compile("^Requests per model"))
        assert await per_model.count() == 0  # no usage yet: no chart drawn

        secret = await create_key(page, base, "laptop")
        await no_sideways_scroll(page)
        await page.reload()  # shown once: a reload is a GET that never shows it again
        assert await page.locator("#new-key").count() == 0
        assert secret not in await page.content()

        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            answer = await client.post(
                "/v1/chat/completions", json=chat_body("hi from the browser test"),
                headers={"Authorization": f"Bearer {secret}"},
            )  # fmt: skip
        assert answer.status_code == 200, answer.text

        await page.goto(f"{base}/jobs")
        await no_sideways_scroll(page)
        link = page.locator("#jobs a").first
        job_id = (await link.text_content() or "").strip()
        await link.click()
        await expect(page.locator("#job-status")).to_have_text("succeeded")
        assert "hi from the browser test" in (await page.locator("#job-result").text_content() or "")
        await no_sideways_scroll(page)

        for _ in range(50):  # the worker records usage just after the job: the count moves soon
            if await period_requests(page, base) > before:
                break
            await page.wait_for_timeout(100)
        assert await period_requests(page, base) == before + 1
        assert await page.locator(".chart svg rect").count() > 0
        # the chart drew the call: its bar for the model, named in the chart's text alternative
        assert await per_model.get_attribute("aria-label") == "Requests per model: mock/echo 1"
        await no_sideways_scroll(page)
        for path in ("/batches", "/keys"):
            await page.goto(base + path)
            await no_sideways_scroll(page)

        await page.get_by_role("button", name="Revoke key laptop").click()
        await expect(page.locator("#keys .badge").first).to_have_text("revoked")
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            refused = await client.get("/api/v1/status", headers={"Authorization": f"Bearer {secret}"})
        assert refused.status_code == 401

        # Another user's job is a 404 page, as a job that does not exist.
        other = await site.browser.new_context(viewport=NARROW)
        stranger = await other.new_page()
        await sign_up(stranger, base, "bob@example.com")
        response = await stranger.goto(f"{base}/jobs/{job_id}")
        assert response is not None and response.status == 404
        await expect(stranger.get_by_role("heading", name="Not found")).to_be_visible()
        await no_sideways_scroll(stranger)
        await other.close()

        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(re.compile(r".*/signin"))
        await page.goto(f"{base}/dashboard")
        assert page.url.startswith(f"{base}/signin")
        await no_sideways_scroll(page)
        await context.close()


@browser
async def test_bad_sign_in_says_why_and_the_keyboard_signs_in(settings: Settings) -> None:
    async with served_site(settings) as site:
        base = site.base_url
        context = await site.browser.new_context(viewport=NARROW)
        page = await context.new_page()
        await sign_up(page, base, "kay@example.com")
        await context.clear_cookies()

        await page.goto(f"{base}/signin")
        await page.get_by_label("Email").fill("kay@example.com")
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#form-error")).to_have_text("Invalid email or password")
        await no_sideways_scroll(page)

        await page.goto(f"{base}/signin")  # only the keyboard from here
        await page.keyboard.press("Tab")  # the skip link comes first
        await page.keyboard.press("Tab")
        for _ in range(10):  # past the header's links to the email field
            if await page.evaluate("document.activeElement.id") == "email":
                break
            await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "email"
        await page.keyboard.type("kay@example.com")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "password"
        await page.keyboard.type(PASSWORD)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{base}/dashboard")
        outline = await page.evaluate(
            "(() => { const a = document.querySelector('nav a'); a.focus();"
            " return getComputedStyle(a).outlineStyle; })()"
        )
        assert outline != "none"  # focus is visible
        await context.close()


@browser
async def test_signup_form_shows_the_apis_message(settings: Settings) -> None:
    async with served_site(settings) as site:
        page = await (await site.browser.new_context(viewport=NARROW)).new_page()
        await page.goto(f"{site.base_url}/signup")
        await page.get_by_label("Email").fill("short@example.com")
        await page.get_by_label("Password").fill("short")
        await page.get_by_role("button", name="Create account").click()
        await expect(page.locator("#form-error")).to_have_text("password: must be at least 8 characters")
        await no_sideways_scroll(page)


@browser
async def test_a_batch_page_follows_its_batch_live(settings: Settings) -> None:
    """The page is opened while the batch waits (no worker yet); a worker then runs it, and the
    page shows it completed, with its counts, without a reload (app.js polls /progress)."""
    async with served_site(settings, worker=False) as site:
        base = site.base_url
        page = await (await site.browser.new_context(viewport=NARROW)).new_page()
        await sign_up(page, base, "bea@example.com")
        secret = await create_key(page, base, "batch")
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=bearer(secret)) as client:
            upload = await client.post(
                "/v1/files", files={"file": ("in.jsonl", batch_file(4))}, data={"purpose": "batch"}
            )
            created = await client.post(
                "/v1/batches",
                json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"},
            )  # fmt: skip
        batch_id = created.json()["id"]
        await page.goto(f"{base}/batches")
        await page.get_by_role("link", name=batch_id).click()
        await expect(page.locator('[data-field="status"]')).to_have_text("validating")
        await expect(page.get_by_role("button", name="Cancel batch")).to_be_visible()
        await no_sideways_scroll(page)
        site.start_worker()
        await expect(page.locator('[data-field="status"]')).to_have_text("completed", timeout=15_000)
        await expect(page.locator('[data-field="completed"]')).to_have_text("4")
        assert await page.evaluate("document.getElementById('batch-progress').value") == 4
        await expect(page.get_by_role("button", name="Cancel batch")).to_be_hidden()


# --- without a browser: what the forms refuse -----------------------------------------------------
def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


async def signed_up(gw: Gateway, email: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(transport=gw.client._transport, base_url=str(gw.client.base_url))
    form = csrf_of((await client.get("/signup")).text)  # the form's own token (and its cookie)
    made = await client.post("/signup", data={"email": email, "password": PASSWORD, "csrf_token": form})
    assert made.status_code == 303 and made.headers["location"] == "/dashboard", made.text
    return client


async def test_forms_need_the_csrf_token_and_others_ids_are_404(gw: Gateway) -> None:
    gw.start_worker()
    ada = await signed_up(gw, "ada@example.com")
    bob = await signed_up(gw, "bob@example.com")
    try:
        refused = await ada.post("/keys", data={"name": "no token"})
        assert refused.status_code == 403 and "CSRF token missing or wrong" in refused.text
        assert refused.headers["content-type"].startswith("text/html")
        token = csrf_of((await ada.get("/keys")).text)
        made = await ada.post("/keys", data={"name": "laptop", "csrf_token": token})
        assert made.status_code == 303
        shown = (await ada.get("/keys")).text
        secret = re.search(r'<code id="new-key">([^<]+)</code>', shown)
        assert secret is not None
        assert 'id="new-key"' not in (await ada.get("/keys")).text  # once
        blank = await ada.post("/keys", data={"name": "  ", "csrf_token": token})
        assert blank.status_code == 400 and "name: must not be blank" in blank.text

        answer = await ada.post(
            "/v1/chat/completions?batch=1", json=chat_body(), headers={"Authorization": f"Bearer {secret[1]}"}
        )
        job_id = answer.json()["id"]
        assert (await ada.get(f"/jobs/{job_id}")).status_code == 200
        assert job_id in (await ada.get("/jobs")).text
        assert job_id not in (await bob.get("/jobs")).text
        assert (await bob.get(f"/jobs/{job_id}")).status_code == 404
        bob_token = csrf_of((await bob.get("/keys")).text)
        assert (await bob.post(f"/jobs/{job_id}/cancel", data={"csrf_token": bob_token})).status_code == 404
        key_id = re.search(r'data-key-id="([^"]+)"', (await ada.get("/keys")).text)
        assert key_id is not None
        stolen = await bob.post(f"/keys/{key_id[1]}/revoke", data={"csrf_token": bob_token})
        assert stolen.status_code == 404
        assert (await bob.get("/batches/batch_00000000000000000000000000000000")).status_code == 404
        assert (await bob.get("/jobs?status=nonsense")).status_code == 400
        out = await ada.post("/signout", data={"csrf_token": token})
        assert out.status_code == 303 and (await ada.get("/dashboard")).status_code == 303
    finally:
        await ada.aclose()
        await bob.aclose()


@pytest.mark.settings(SWITCHYARD_SIGNUP="invite")
async def test_invite_mode_asks_for_the_code(gw: Gateway) -> None:
    page = await gw.client.get("/signup")
    assert 'name="invite"' in page.text
    form = {"email": "c@example.com", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
    refused = await gw.client.post("/signup", data=form)
    assert refused.status_code == 400 and "invite: is required" in refused.text


@pytest.mark.settings(SWITCHYARD_SIGNUP="off")
async def test_sign_up_off_says_so(gw: Gateway) -> None:
    page = await gw.client.get("/signup")
    assert "Sign-up is off" in page.text and '<form method="post" action="/signup"' not in page.text
    refused = await gw.client.post("/signup", data={"email": "c@example.com", "password": PASSWORD})
    assert refused.status_code == 403 and "SWITCHYARD_SIGNUP=off" in refused.text


async def test_jobs_of_all_a_users_keys_page_in_order_and_filter(gw: Gateway) -> None:
    """`user_jobs` merges the pages of each key: every job once, newest first, across pages of 2,
    and the kind and model filters leave pages that still reach every match."""
    ada = await signed_up(gw, "ada@example.com")
    try:
        token = csrf_of((await ada.get("/keys")).text)
        secrets = []
        for name in ("one", "two"):
            made = await ada.post("/api/keys", json={"name": name}, headers={"x-csrf-token": token})
            secrets.append(made.json()["key"])
        ids = []
        for i in range(7):  # queued (no worker): live jobs from Redis, of two keys and two models
            model = "mock/echo" if i % 3 else "mock/other"
            answer = await ada.post(
                "/v1/chat/completions?batch=1",
                json=chat_body(f"job {i}", model=model),
                headers={"Authorization": f"Bearer {secrets[i % 2]}"},
            )
            ids.append((answer.json()["id"], model))
        svc: Services = gw.client._transport.app.state.services  # type: ignore[attr-defined]
        owners = [k.id for k in await list_keys(svc.db)]

        async def walk(model: str | None) -> list[str]:
            seen, cursor = [], None
            for _ in range(10):
                page, cursor = await user_jobs(
                    svc, owners, status=None, kind=None, model=model, cursor=cursor, limit=2
                )
                seen += [r.id for r in page]
                if cursor is None:
                    return seen
            raise AssertionError("paging did not end")

        assert await walk(None) == [job_id for job_id, _ in reversed(ids)]
        other = [job_id for job_id, model in reversed(ids) if model == "mock/other"]
        assert await walk("mock/other") == other
        filtered = (await ada.get("/jobs?model=mock/other")).text
        assert all(job_id in filtered for job_id in other)
        assert not any(job_id in filtered for job_id, model in ids if model != "mock/other")
    finally:
        await ada.aclose()


async def test_the_admin_credits_form_refuses_what_is_not_an_amount(gw: Gateway) -> None:
    """The admin page's grant/revoke form: anything but ASCII digits from 1 to the maximum is a
    400 page naming `amount` ('²' passes `str.isdigit` but not `int`), and the balance stays."""
    from tests.conftest import admin_headers

    made = await gw.client.post(
        "/api/admin/users",
        json={"email": "root@example.com", "password": PASSWORD, "role": "admin"},
        headers=admin_headers(),
    )
    assert made.status_code == 201, made.text
    key = await gw.client.post("/api/keys", json={"name": "metered", "credits": 10}, headers=admin_headers())
    key_id = key.json()["id"]
    root = httpx.AsyncClient(transport=gw.client._transport, base_url=str(gw.client.base_url))
    try:
        form = csrf_of((await root.get("/signin")).text)
        signed = await root.post(
            "/signin", data={"email": "root@example.com", "password": PASSWORD, "csrf_token": form}
        )
        assert signed.status_code == 303, signed.text
        token = csrf_of((await root.get("/admin")).text)
        url = f"/admin/keys/{key_id}/credits"
        for amount in ("²", "٣", "-5", "0", "1e3", "", " ", "99999999999", "1" * 400):
            refused = await root.post(url, data={"amount": amount, "action": "grant", "csrf_token": token})
            assert refused.status_code == 400, (amount, refused.text[:300])
            assert "amount: must be a whole number" in refused.text
        odd = await root.post(url, data={"amount": "5", "action": "steal", "csrf_token": token})
        assert odd.status_code == 400 and "action: must be grant or revoke" in odd.text
        granted = await root.post(url, data={"amount": "5", "action": "grant", "csrf_token": token})
        assert granted.status_code == 303, granted.text[:300]
        listed = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]
        assert [k["credits"] for k in listed if k["id"] == key_id] == [15]
    finally:
        await root.aclose()
