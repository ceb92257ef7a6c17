"""`python -m tests.console_screenshots`: /playground and /admin at desktop width into
docs/screenshots/playground.png and admin.png: `tests.screenshots.main` (its throwaway gateway
and Debian's chromium) with these pages. A user streams a chat in the playground; the admin
sees the queues, the worker, the provider, a failed job and the user, and grants the user's key
some credits."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests import screenshots
from tests.conftest import admin_headers
from tests.dashboard_support import PASSWORD, create_key, sign_up
from tests.screenshots import DESKTOP, OUT


async def _pages(base: str, browser: object) -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    context = await browser.new_context(viewport=DESKTOP)  # type: ignore[attr-defined]
    page = await context.new_page()

    async def snap(name: str) -> None:
        path = OUT / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    await sign_up(page, base, "ada@example.com")
    secret = await create_key(page, base, "laptop")
    await page.goto(f"{base}/playground")
    await page.locator("#pg-model option[value='mock/echo']").wait_for(state="attached")
    await page.get_by_label("Message").fill("Tell me what a switchyard does, in a few words")
    await page.get_by_role("button", name="Send").click()
    await page.locator("#pg-job").wait_for()
    await page.wait_for_function("document.getElementById('pg-answer').getAttribute('aria-busy') === 'false'")
    await snap("playground")

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        made = await client.post(
            "/api/admin/users",
            json={"email": "root@example.com", "password": PASSWORD, "role": "admin"},
            headers=admin_headers(),
        )
        made.raise_for_status()
        refused = {"model": "mock/echo", "messages": [{"role": "user", "content": "refused [400]"}]}
        await client.post("/v1/chat/completions", json=refused, headers={"Authorization": f"Bearer {secret}"})
    await context.clear_cookies()
    await page.goto(f"{base}/signin")
    await page.get_by_label("Email").fill("root@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/dashboard")
    await page.goto(f"{base}/admin")
    for _ in range(50):  # the failed job reaches the database within the persister's delay
        if await page.locator("#failures").count():
            break
        await page.wait_for_timeout(100)
        await page.reload()
    row = page.locator("#users tr[data-user='ada@example.com']")
    await row.get_by_label("Credits for laptop of ada@example.com").fill("500")
    await row.get_by_role("button", name="Grant").click()
    await page.locator("#admin-done").wait_for()
    await snap("admin")
    await context.close()
    return shots


def main() -> None:
    screenshots.main(_pages)


if __name__ == "__main__":
    main()
