"""/playground and /admin in a real browser (Debian's chromium driven by Playwright, the app on
loopback with real Redis, SQLite, a worker and the stand-in provider): a chat streamed into the
playground as one of the user's keys, its job in /jobs, the API's own error (402) in the page;
the admin page's queues, users and credits, a grant and a refused revocation; a user gets a 403
page at /admin; neither page scrolls sideways at 375 px. Skipped only without /usr/bin/chromium."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Page, expect

from switchyard.settings import Settings
from tests.conftest import admin_headers
from tests.dashboard_support import (
    CHROMIUM,
    NARROW,
    PASSWORD,
    create_key,
    no_sideways_scroll,
    served_site,
    sign_up,
)

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.settings(SWITCHYARD_SIGNUP="open"),
    pytest.mark.timeout(60),
]


async def sign_in(page: Page, base_url: str, email: str) -> None:
    await page.goto(f"{base_url}/signin")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}/dashboard")


async def key_id_of(base_url: str, secret: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        listed = await client.get("/api/keys", headers={"Authorization": f"Bearer {secret}"})
    return next(k["id"] for k in listed.json()["data"] if secret.startswith(k["prefix"]))


async def send(page: Page, text: str) -> None:
    await expect(page.locator("#pg-model option[value='mock/echo']")).to_have_count(1)
    await page.get_by_label("Message").fill(text)
    await page.get_by_role("button", name="Send").click()


async def test_playground_streams_a_chat_and_shows_the_apis_errors(settings: Settings) -> None:
    async with served_site(settings) as site:
        base = site.base_url
        context = await site.browser.new_context(viewport=NARROW)
        page = await context.new_page()
        await sign_up(page, base, "pia@example.com")
        secret = await create_key(page, base, "playground key")
        await page.goto(f"{base}/playground")
        await no_sideways_scroll(page)
        await send(page, "stream into the page please")
        await expect(page.locator("#pg-answer")).to_contain_text("stream into the page please")
        await expect(page.locator("#pg-answer")).to_have_attribute("aria-busy", "false")
        assert await page.locator("#pg-error").is_hidden()
        job_id = (await page.locator("#pg-job").text_content() or "").strip()
        assert job_id
        await no_sideways_scroll(page)

        await page.goto(f"{base}/jobs")
        await expect(page.locator("#jobs")).to_contain_text(job_id)

        # A key with no credits left: the API's 402 and its own message, in the page.
        key_id = await key_id_of(base, secret)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for amount in (1, -1):
                changed = await client.post(
                    f"/api/keys/{key_id}/credits", json={"amount": amount}, headers=admin_headers()
                )
                assert changed.status_code == 200, changed.text
        await page.goto(f"{base}/playground")
        await send(page, "no credits for this")
        await expect(page.locator("#pg-error")).to_contain_text("402: ")
        assert "credits" in (await page.locator("#pg-error").text_content() or "").lower()
        await context.close()


async def test_the_admin_page_shows_the_gateway_and_changes_credits(settings: Settings) -> None:
    async with served_site(settings) as site:
        base = site.base_url
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            made = await client.post(
                "/api/admin/users",
                json={"email": "root@example.com", "password": PASSWORD, "role": "admin"},
                headers=admin_headers(),
            )
            assert made.status_code == 201, made.text
        user_ctx = await site.browser.new_context(viewport=NARROW)
        user = await user_ctx.new_page()
        await sign_up(user, base, "una@example.com")
        await create_key(user, base, "una's key")
        forbidden = await user.goto(f"{base}/admin")
        assert forbidden is not None and forbidden.status == 403
        await expect(user.locator("main")).to_contain_text("only an admin may see the admin page")
        await expect(user.locator("nav a[href='/admin']")).to_have_count(0)

        admin_ctx = await site.browser.new_context(viewport=NARROW)
        admin = await admin_ctx.new_page()
        await sign_in(admin, base, "root@example.com")
        await admin.get_by_role("link", name="Admin").click()
        await admin.wait_for_url(f"{base}/admin")
        await expect(admin.locator("#queues tr[data-queue='interactive'] .waiting")).to_have_text("0")
        await expect(admin.locator("#providers tr[data-provider='standin']")).to_be_visible()
        await expect(admin.locator("#workers-alive")).not_to_have_text("0")  # the site's worker
        row = admin.locator("#users tr[data-user='una@example.com']")
        await expect(row.locator(".user-credits")).to_have_text("not metered")
        await no_sideways_scroll(admin)

        await row.get_by_label(re.compile("Credits for una's key")).fill("25")
        await row.get_by_role("button", name="Grant").click()
        await expect(admin.locator("#admin-done")).to_contain_text("its balance is now 25")
        await expect(row.locator(".user-credits")).to_have_text("25")
        await row.get_by_label(re.compile("Credits for una's key")).fill("30")
        await row.get_by_role("button", name="Revoke").click()
        await expect(admin.locator("#form-error")).to_contain_text("below 0: at most 25 can be revoked")
        await expect(row.locator(".user-credits")).to_have_text("25")
        await no_sideways_scroll(admin)
        await user_ctx.close()
        await admin_ctx.close()
