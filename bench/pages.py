"""The dashboard's pages: the median time of 20 GETs of each page for a signed-in user with
some data (a key, 30 chat calls, their jobs and usage), over loopback HTTP with a kept-alive
connection (the client's share is a fraction of a millisecond), on the cluster's database
(SQLite; `BENCH_DATABASE_URL` runs it on another, e.g. PostgreSQL).

`pages` is a phase of `make bench` (`--only pages`)."""

from __future__ import annotations

import statistics
import time

import httpx
import orjson

from bench.cluster import MODEL
from bench.phases import Bench

GETS = 20
CALLS = 30
TARGET_MS = 50.0
EMAIL, PASSWORD = "bench-pages@example.com", "bench pages password"


async def _signed_in(http: httpx.AsyncClient, admin_key: str) -> str:
    """A user with a key and some calls behind it; the session is in `http`'s cookies. The key."""
    admin = {"authorization": f"Bearer {admin_key}"}
    made = await http.post("/api/admin/users", json={"email": EMAIL, "password": PASSWORD}, headers=admin)
    if made.status_code not in (201, 409):
        made.raise_for_status()
    session = await http.post("/api/auth/signin", json={"email": EMAIL, "password": PASSWORD})
    session.raise_for_status()
    csrf = session.json()["csrf_token"]
    key = await http.post("/api/keys", json={"name": "bench pages"}, headers={"x-csrf-token": csrf})
    key.raise_for_status()
    return str(key.json()["key"])


async def pages(b: Bench) -> None:
    fig = b.report["pages"]
    base = f"http://127.0.0.1:{b.cluster.web_port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        secret = await _signed_in(http, b.cluster.admin_key)
        chat = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        auth = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
        for _ in range(CALLS):
            (await http.post("/v1/chat/completions", content=chat, headers=auth)).raise_for_status()
        listed = await http.get("/api/v1/jobs?limit=1", headers=auth)
        listed.raise_for_status()
        job_id = listed.json()["data"][0]["id"]
        paths = ["/dashboard", "/dashboard?range=30d", "/keys", "/jobs", f"/jobs/{job_id}", "/batches"]
        medians: dict[str, float] = {}
        for path in paths:
            for _ in range(2):  # warm: templates compiled, connections pooled
                (await http.get(path)).raise_for_status()
            samples = []
            for _ in range(GETS):
                started = time.perf_counter()
                response = await http.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path} answered {response.status_code}")
            name = path.replace(job_id, "{id}")
            medians[name] = round(statistics.median(samples), 2)
            b.progress(f"  {name}: median {medians[name]} ms of {GETS}")
    fig.measured = ", ".join(f"{p} {ms:.1f} ms" for p, ms in medians.items())
    fig.passed = all(ms <= TARGET_MS for ms in medians.values())
    fig.data.update(median_ms=medians, gets=GETS, calls_behind=CALLS)
