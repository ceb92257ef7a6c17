"""`python -m tests.screenshots`: the dashboard's pages at desktop width into
docs/screenshots/NAME.png, for the README. A throwaway gateway (embedded Redis, a migrated
SQLite file, the stand-in provider, a worker) with one user who made a key, a few chat calls and
a small Batch API batch; Debian's chromium draws the pages."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from storage.migrate import upgrade
from switchyard.redis_server import EmbeddedRedis
from switchyard.standin import StandIn
from tests.conftest import base_env, make_settings, write_providers
from tests.dashboard_support import PASSWORD, batch_file, create_key, served_site, sign_up

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DESKTOP = {"width": 1200, "height": 800}


Pages = Callable[[str, object], Awaitable[list[Path]]]  # (base URL, browser) -> the shots


async def shoot(tmp: Path, redis_url: str, pages: Pages) -> list[Path]:
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
            return await pages(site.base_url, site.browser)
    finally:
        await standin.stop()


async def _pages(base: str, browser: object) -> list[Path]:
    context = await browser.new_context(viewport=DESKTOP)  # type: ignore[attr-defined]
    page = await context.new_page()
    OUT.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []

    async def snap(name: str) -> None:
        path = OUT / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    await page.goto(f"{base}/signup")
    await snap("signup")
    await sign_up(page, base, "ada@example.com")
    secret = await create_key(page, base, "laptop")
    await snap("keys")
    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as client:
        for i, model in enumerate(["mock/echo"] * 5 + ["mock/other"] * 3):
            body = {"model": model, "messages": [{"role": "user", "content": f"hello {i}"}]}
            (await client.post("/v1/chat/completions", json=body)).raise_for_status()

        lines = batch_file(6)
        upload = await client.post(
            "/v1/files", files={"file": ("in.jsonl", lines)}, data={"purpose": "batch"}
        )
        upload.raise_for_status()
        batch = await client.post(
            "/v1/batches",
            json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
                  "completion_window": "24h"},
        )  # fmt: skip
        batch.raise_for_status()
        batch_id = batch.json()["id"]
        for _ in range(100):
            if (await client.get(f"/v1/batches/{batch_id}")).json()["status"] == "completed":
                break
            await asyncio.sleep(0.1)
    await page.goto(f"{base}/dashboard?range=7d")
    await snap("dashboard")
    await page.goto(f"{base}/jobs")
    await snap("jobs")
    await page.locator("#jobs a").first.click()
    await snap("job")
    await page.goto(f"{base}/batches")
    await snap("batches")
    await page.goto(f"{base}/batches/{batch_id}")
    await snap("batch")
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_label("Email").fill("ada@example.com")
    await page.get_by_label("Password").fill(PASSWORD + "?")
    await page.get_by_role("button", name="Sign in").click()
    await snap("signin")
    await context.close()
    return shots


def main(pages: Pages | None = None) -> None:
    """Shoot `pages` (the dashboard's by default) on a throwaway gateway; print what was written."""
    with tempfile.TemporaryDirectory(prefix="switchyard-shots-") as raw:
        tmp = Path(raw)
        redis = EmbeddedRedis(tmp / "redis", persistent=False).start()
        try:
            shots = asyncio.run(shoot(tmp, redis.url, pages or _pages))
        finally:
            redis.stop()
    for path in shots:
        print(f"{path.relative_to(OUT.parent.parent)}  {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
