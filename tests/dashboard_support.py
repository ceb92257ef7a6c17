"""The dashboard served for a browser: the app (real Redis, a real database, a worker in the
same loop, the stand-in provider) behind uvicorn on a loopback port, and Debian's chromium
driven by Playwright (never a downloaded browser). Used by tests/test_dashboard.py and
tests/screenshots.py."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import uvicorn
from playwright.async_api import Browser, Page, async_playwright

from api.app import create_app
from switchyard.settings import Settings
from tests.conftest import app_lifespan
from workers.settings import create_worker
from workers.worker import SwitchyardWorker

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "correct horse battery"


@dataclass
class Site:
    base_url: str
    browser: Browser
    settings: Settings
    workers: list[tuple[SwitchyardWorker, asyncio.Task[None]]]

    def start_worker(self) -> None:
        worker = create_worker(("interactive", "batch"), self.settings, handle_signals=False)
        self.workers.append((worker, asyncio.create_task(worker.async_run())))


@contextlib.asynccontextmanager
async def served_site(settings: Settings, *, worker: bool = True) -> AsyncIterator[Site]:
    """The app on a loopback port with one worker (or none until `start_worker`), and a
    headless chromium."""
    app = create_app(settings)
    async with app_lifespan(app):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        serving = asyncio.get_running_loop().create_task(server.main_loop())
        workers: list[tuple[SwitchyardWorker, asyncio.Task[None]]] = []
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
                )
                try:
                    site = Site(f"http://127.0.0.1:{port}", browser, settings, workers)
                    if worker:
                        site.start_worker()
                    yield site
                finally:
                    await browser.close()
        finally:
            for running, task in workers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await running.close()
            server.should_exit = True
            await asyncio.wait_for(serving, 10)
            await server.shutdown()
            sock.close()


NARROW = {"width": 375, "height": 740}  # a phone: every page must fit it


async def no_sideways_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= NARROW["width"], f"{page.url} is {width} px wide at 375 px"


async def sign_up(page: Page, base_url: str, email: str) -> None:
    await page.goto(f"{base_url}/signup")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_url(f"{base_url}/dashboard")


async def create_key(page: Page, base_url: str, name: str) -> str:
    """Create a key on /keys; its secret, read from the page (shown this once)."""
    await page.goto(f"{base_url}/keys")
    await page.get_by_label("Name").fill(name)
    await page.get_by_role("button", name="Create key").click()
    secret = (await page.locator("#new-key").text_content() or "").strip()
    assert re.fullmatch(r"[A-Za-z0-9_\-]{20,}", secret), secret
    return secret


def batch_file(lines: int) -> bytes:
    """A Batch API input file of chat requests."""
    rows = []
    for i in range(lines):
        body = {"model": "mock/echo", "messages": [{"role": "user", "content": f"line {i}"}]}
        rows.append(
            orjson.dumps(
                {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            )
        )
    return b"\n".join(rows)
