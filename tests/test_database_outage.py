"""The database unreachable at request time: 503 with a clear message wherever a request needs it,
and recovery without a restart once it is back.

PostgreSQL is reached through a TCP relay of the test's own on loopback; closing the relay (and
cutting its connections) is the outage. Skipped where no PostgreSQL is reachable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlmodel import col, select

from storage.db import Database
from storage.models import Job
from tests.conftest import (
    Gateway,
    admin_headers,
    base_env,
    chat_body,
    eventually,
    make_settings,
    running_gateway,
)
from tests.relay_support import Relay


@pytest.fixture
async def relay(pg_database: str) -> AsyncIterator[tuple[Relay, str]]:
    parts = urlsplit(pg_database)
    server = await Relay(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    netloc = f"{parts.username}@127.0.0.1:{server.port}" if parts.username else f"127.0.0.1:{server.port}"
    yield server, urlunsplit(parts._replace(netloc=netloc))
    await server.stop()


@pytest.fixture
async def outage_gw(
    relay: tuple[Relay, str], db_url: str, redis_url: str, providers_file: Path, tmp_path: Path
) -> AsyncIterator[Gateway]:
    if not db_url.startswith("postgresql"):
        pytest.skip("the outage is staged on PostgreSQL")
    settings = make_settings(base_env(redis_url, relay[1], providers_file, tmp_path / "data"))
    async with running_gateway(settings) as gw:
        gw.start_worker()
        yield gw


async def test_database_down_is_503_and_recovers(outage_gw: Gateway, relay: tuple[Relay, str]) -> None:
    gw = outage_gw
    server = relay[0]
    known = await gw.create_key("known")
    unseen = await gw.create_key("unseen")  # not yet looked up, so not in the key cache
    ok = await gw.client.post("/api/v1/completion", json=chat_body("up"), headers={"X-API-Key": known})
    assert ok.status_code == 200
    job_id = ok.headers["x-job-id"]

    await server.stop()
    # Authenticating a key the process has not seen needs the database.
    down = await gw.client.post("/api/v1/completion", json=chat_body("down"), headers={"X-API-Key": unseen})
    assert down.status_code == 503, down.text
    assert down.json()["success"] is False and "database" in down.json()["message"]
    down_credits = await gw.client.post(
        "/api/v1/chat", json=chat_body("down"), headers={"Authorization": f"Bearer {unseen}"}
    )
    assert down_credits.status_code == 503
    assert "database" in down_credits.json()["error"]
    # Listing reads finished jobs from the database.
    listing = await gw.client.get("/api/v1/jobs", headers={"X-API-Key": known})
    assert listing.status_code == 503
    # Key management is all database.
    for method, path, body in [("POST", "/api/keys", {"name": "x"}), ("GET", "/api/keys", None)]:
        response = await gw.client.request(method, path, json=body, headers=admin_headers())
        assert response.status_code == 503, (method, path, response.text)
        assert response.json()["error"]["type"] == "service_unavailable"
    # A key the process already knows still gets its work done: no write is on the request path.
    during = await gw.client.post("/api/v1/completion", json=chat_body("still"), headers={"X-API-Key": known})
    assert during.status_code == 200

    await server.start()

    async def recovered() -> bool:
        response = await gw.client.post(
            "/api/v1/completion", json=chat_body("back"), headers={"X-API-Key": unseen}
        )
        return response.status_code == 200

    await eventually(recovered, timeout=10, interval=0.2, what="the API to use the database again")
    assert (await gw.client.get("/api/v1/jobs", headers={"X-API-Key": known})).status_code == 200
    assert (
        await gw.client.post("/api/keys", json={"name": "after"}, headers=admin_headers())
    ).status_code == 201
    # The job finished during the outage reaches the database once it is back.
    ids = {job_id, during.headers["x-job-id"]}
    await eventually(
        lambda: _persisted(gw, ids), timeout=10, interval=0.2, what="the outage's job in the database"
    )


async def _persisted(gw: Gateway, ids: set[str]) -> bool:
    db = Database(gw.settings.database_url_or_default)
    try:
        async with db.session() as session:
            rows = (await session.exec(select(Job).where(col(Job.id).in_(ids)))).all()
    finally:
        await db.dispose()
    return {r.id for r in rows} == ids
