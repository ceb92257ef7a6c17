"""Fixtures and helpers shared by the accounts tests (keys, limits, credits, usage, status).

`db_url` here shadows conftest's in the modules that import it: the same SQLite/PostgreSQL
pair, but the PostgreSQL tables emptied include `usage`, which the accounts tests read back.
A test that is about Redis or processes rather than SQL narrows it with `SQLITE_ONLY`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs.accounting import HOUR_MS, MINUTE_MS
from storage.db import Database
from storage.keys import KeyRecord, credit_balances, get_key
from switchyard.settings import Settings
from tests.conftest import _pg_exec, admin_headers

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    url = request.getfixturevalue("pg_database")
    asyncio.run(_pg_exec(url, "TRUNCATE TABLE jobs, api_keys, usage"))
    return str(url)


def write_priced_providers(
    path: Path, base_url: str, models: list[str], prices: dict[str, tuple[float, float]]
) -> Path:
    """A providers file with a price table (US dollars per million prompt/completion tokens)."""
    table = ", ".join(f'"{m}" = {{ prompt = {p!r}, completion = {c!r} }}' for m, (p, c) in prices.items())
    path.write_text(
        "[[providers]]\n"
        'name = "standin"\n'
        'kind = "openai"\n'
        f'base_url = "{base_url}"\n'
        f"models = [{', '.join(f'{m!r}'.replace(chr(39), chr(34)) for m in models)}]\n"
        f"prices = {{ {table} }}\n"
    )
    return path


async def clear_of_window_edge(window_ms: int = MINUTE_MS, margin_ms: int = 3000) -> None:
    """Fixed windows reset on the clock: a test that counts inside one window starts far enough
    from its end that the count cannot be split across two windows."""
    now = time.time() * 1000
    left = window_ms - now % window_ms
    if left < margin_ms:
        await asyncio.sleep(left / 1000 + 0.05)


async def clear_of_hour_edge() -> None:
    await clear_of_window_edge(HOUR_MS, 5000)


async def create_key_full(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """POST /api/keys as the admin; the created key's view, with its secret under `key`."""
    body.setdefault("name", "acct")
    response = await client.post("/api/keys", json=body, headers=admin_headers())
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def db_key(settings: Settings, key_id: str) -> KeyRecord | None:
    db = Database(settings.database_url_or_default)
    try:
        return await get_key(db, key_id)
    finally:
        await db.dispose()


async def db_balance(settings: Settings, key_id: str) -> int | None:
    """The balance the database would seed Redis with: credits granted less credits charged."""
    db = Database(settings.database_url_or_default)
    try:
        return (await credit_balances(db, [key_id])).get(key_id)
    finally:
        await db.dispose()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def xkey(secret: str) -> dict[str, str]:
    return {"X-API-Key": secret}
