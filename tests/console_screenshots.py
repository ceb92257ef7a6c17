"""`python -m tests.console_screenshots`: /playground and /admin at desktop width into
docs/screenshots/playground.png and admin.png, as `tests.screenshots` makes the dashboard's
(the same throwaway gateway: embedded Redis, a migrated SQLite file, the stand-in provider, a
worker, Debian's chromium). A user streams a chat in the playground; the admin sees the queues,
the worker, the provider, a failed job and the user, and grants the user's key some credits."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx

from storage.migrate import upgrade
from switchyard.redis_server import EmbeddedRedis
from switchyard.standin import StandIn
from tests.conftest import admin_headers, base_env, make_settings, write_providers
from tests.dashboard_support import PASSWORD, create_key, served_site, sign_up
from tests.screenshots import DESKTOP, OUT


async def shoot(tmp: Path, redis_url: str) -> list[Path]:
    standin = await StandIn(models=["mock/echo", "mock/other"]).start()
    try:
        providers = write_providers(
            tmp / "providers.toml",
            [{"name": "standin", "kind": "openai", "base_url": standin.base_url, "models": standin.models}],
        )
        database = f"sqlite+aiosqlite:///{tmp / 'switchyard.db'}"
        await asyncio.to_thread(upgrade, database)
        env = base_env(redis_url, database, providers, tmp / "data") | {"SWITCHYARD_SIGNUP": "open"}
        async with served_site(make_settings(env)) as site:
            return await _pages(site.base_url, site.browser)
    finally:
        await standin.stop()


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
    with tempfile.TemporaryDirectory(prefix="switchyard-shots-") as raw:
        tmp = Path(raw)
        redis = EmbeddedRedis(tmp / "redis", persistent=False).start()
        try:
            shots = asyncio.run(shoot(tmp, redis.url))
        finally:
            redis.stop()
    for path in shots:
        print(f"{path.relative_to(OUT.parent.parent)}  {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
