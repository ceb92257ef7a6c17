"""`switchyard doctor`: can this machine run Switchyard with these settings? Each check answers
ok, warn or fail with a reason: Redis reachable and persistent, the clocks of this machine, Redis
and the workers agreeing, the database reachable and migrated to head, the blob store writable
and readable, and every provider of the providers file answering.

Every check has its own time bound, so a dependency that stalls costs that bound, not a hang.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx

from switchyard.errors import ConfigError
from switchyard.settings import Settings, settings_problems

Status = Literal["ok", "warn", "fail"]

SKEW_WARN_S = 1.0  # heartbeats, job timestamps and expiry read clocks of several machines
SKEW_FAIL_S = 30.0  # past this, worker heartbeats and leases are misread


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


async def _bounded(name: str, timeout_s: float, run: Callable[[], Awaitable[list[Check]]]) -> list[Check]:
    try:
        async with asyncio.timeout(timeout_s):
            return await run()
    except TimeoutError:
        return [Check(name, "fail", f"no answer within {timeout_s:g}s")]
    except Exception as exc:  # noqa: BLE001 (every failure is this check's answer)
        return [Check(name, "fail", _reason(exc))]


# --- Redis and the clocks ---------------------------------------------------------------------------
async def check_redis(settings: Settings, timeout_s: float) -> list[Check]:
    if not settings.redis_url:
        return [
            Check(
                "redis",
                "warn",
                "REDIS_URL is not set: `switchyard up` starts an embedded Redis on this machine;"
                " set REDIS_URL to the URL it printed (or your Redis) to check it",
            )
        ]
    from jobs.durability import check as durability
    from switchyard import redis_client

    async def run() -> list[Check]:
        async with redis_client.connect(
            settings.redis_url,  # type: ignore[arg-type]
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
        ) as redis:
            checks = await _sentinel(redis, settings.redis_url or "")
            await redis.ping()
            persistence = await durability(redis)
            checks += [
                Check("redis", "warn", " ".join(persistence.warnings))
                if persistence.warnings
                else Check("redis", "ok", "reachable, appendonly yes")
            ]
            checks += await _clocks(redis)
            return checks

    return await _bounded("redis", timeout_s, run)


async def _sentinel(redis: Any, url: str) -> list[Check]:
    """For a `redis+sentinel://` URL: the master the Sentinels name now, and its replicas."""
    from switchyard import redis_client

    if not redis_client.is_sentinel(url):
        return []
    target = redis_client.parse_sentinel_url(url)
    host, port = await redis_client.master_address(redis) or ("?", 0)
    found = await redis_client.replicas(redis)
    seen = ", ".join(f"{h}:{p}" for h, p in found) if found else "none"
    detail = f"master '{target.service}' at {host}:{port} (replicas up: {seen}; asked {target})"
    # No replica: a failover has nowhere to go, so the Redis does not outlive its machine.
    return [Check("redis sentinel", "ok" if found else "warn", detail)]


async def _clocks(redis: Any) -> list[Check]:
    from switchyard.metrics import WORKER_INFO_KEY, WORKER_SEEN_S, WORKERS_KEY

    before = time.time()
    seconds, micros = await redis.time()
    after = time.time()
    redis_now = int(seconds) + int(micros) / 1e6
    skew = (before + after) / 2 - redis_now
    rtt = after - before
    detail = (
        f"this machine is {abs(skew):.3f}s {'ahead of' if skew >= 0 else 'behind'} Redis (±{rtt / 2:.3f}s)"
    )
    status: Status = "ok" if abs(skew) < SKEW_WARN_S else "warn" if abs(skew) < SKEW_FAIL_S else "fail"
    checks = [Check("clock", status, detail)]

    # Each worker's heartbeat is scored with the worker's own clock, written every few seconds.
    beats = await redis.zrangebyscore(WORKERS_KEY, (redis_now - 86_400) * 1000, "+inf", withscores=True)
    info = await redis.hgetall(WORKER_INFO_KEY)
    recent, ahead = [], []
    for member, score in beats:
        offset = float(score) / 1000 - redis_now  # <= 0 for a heartbeat written in the past
        if offset > SKEW_WARN_S:
            ahead.append((member.decode() if isinstance(member, bytes) else str(member), offset))
        if -WORKER_SEEN_S <= offset:
            recent.append(member)
    if ahead:
        named = ", ".join(f"{w} (+{o:.1f}s)" for w, o in ahead)
        worst = max(o for _, o in ahead)
        checks.append(
            Check("worker clocks", "fail" if worst >= SKEW_FAIL_S else "warn", f"ahead of Redis: {named}")
        )
    elif recent:
        checks.append(
            Check(
                "worker clocks",
                "ok",
                f"{len(recent)} worker(s) seen in the last {WORKER_SEEN_S:g}s, none ahead",
            )
        )
    else:
        stale = f" ({len(info)} known, none recent: stopped, or clocks behind)" if info else ""
        checks.append(Check("worker clocks", "warn", f"no worker seen in the last {WORKER_SEEN_S:g}s{stale}"))
    return checks


# --- the database -----------------------------------------------------------------------------------
async def check_database(settings: Settings, timeout_s: float) -> list[Check]:
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from storage.db import Database
    from storage.migrate import alembic_config

    url = settings.database_url_or_default

    async def run() -> list[Check]:
        db = Database(url)
        try:
            await db.ping()
            try:
                async with db.connect() as conn:
                    rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
                current = {str(r[0]) for r in rows}
            except Exception:  # noqa: BLE001 (no such table: never migrated)
                current = set()
        finally:
            await db.dispose()
        script = await asyncio.to_thread(ScriptDirectory.from_config, alembic_config(url))
        heads = set(script.get_heads())
        kind = url.split("://", 1)[0]
        head = ", ".join(sorted(heads))
        if current == heads:
            return [Check("database", "ok", f"{kind} reachable, migrations at head ({head})")]
        if not current:
            return [
                Check(
                    "database", "fail", f"{kind} reachable, no migrations applied: run `switchyard migrate`"
                )
            ]
        at = ", ".join(sorted(current))
        if not current <= {r.revision for r in script.walk_revisions()}:
            reason = f"at {at}, which this build does not know (head {head}): a newer Switchyard migrated it"
        else:
            reason = f"migrations at {at}, head is {head}: run `switchyard migrate`"
        return [Check("database", "fail", f"{kind} reachable, {reason}")]

    return await _bounded("database", timeout_s, run)


# --- the blob store ---------------------------------------------------------------------------------
async def check_blob_store(settings: Settings, timeout_s: float) -> list[Check]:
    from storage.blobs import open_blob_store

    async def run() -> list[Check]:
        store = open_blob_store(settings)
        data = f"switchyard doctor {time.time()} {secrets.token_hex(16)}".encode()
        started = time.perf_counter()
        blob = await store.put(data)
        try:
            if blob.key != hashlib.sha256(data).hexdigest() or await store.read(blob.key) != data:
                return [
                    Check("blob store", "fail", f"{store.describe()}: what was read is not what was written")
                ]
        finally:
            await store.delete(blob.key)
        if await store.exists(blob.key):
            return [Check("blob store", "fail", f"{store.describe()}: a deleted blob is still there")]
        elapsed = (time.perf_counter() - started) * 1000
        return [Check("blob store", "ok", f"{store.describe()}: write, read, delete in {elapsed:.0f} ms")]

    return await _bounded("blob store", timeout_s, run)


# --- providers --------------------------------------------------------------------------------------
async def check_providers(settings: Settings, timeout_s: float) -> list[Check]:
    from switchyard.providers import CONTENT_KINDS, ProviderConfig, load_providers

    try:
        config = load_providers(settings.providers_file)
    except ConfigError as exc:
        return [Check("providers file", "fail", str(exc))]

    async def probe(client: httpx.AsyncClient, provider: ProviderConfig) -> Check:
        name = f"provider {provider.name}"
        # What model discovery asks (GET /models); a content service: its base URL answering at all.
        listing = provider.kind not in CONTENT_KINDS
        url = provider.base_url.rstrip("/") + ("/models" if listing else "")
        headers = {}
        key = provider.resolved_api_key()
        if key and listing:
            headers["Authorization"] = f"Bearer {key}"
        started = time.perf_counter()
        try:
            response = await client.get(url, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            return Check(name, "fail", f"{provider.base_url}: unreachable ({_reason(exc)})")
        elapsed = (time.perf_counter() - started) * 1000
        if listing and response.status_code >= 400:
            return Check(name, "warn", f"{url}: HTTP {response.status_code} in {elapsed:.0f} ms")
        if response.status_code >= 500:
            return Check(name, "warn", f"{url}: HTTP {response.status_code} in {elapsed:.0f} ms")
        return Check(name, "ok", f"{url}: HTTP {response.status_code} in {elapsed:.0f} ms")

    async with httpx.AsyncClient(follow_redirects=True) as client:
        return list(await asyncio.gather(*(probe(client, p) for p in config.providers)))


# --- all of it --------------------------------------------------------------------------------------
async def run_checks(settings: Settings, timeout_s: float = 5.0) -> list[Check]:
    problems = settings_problems(settings)
    checks = [Check("settings", "fail", p) for p in problems] or [Check("settings", "ok", "consistent")]
    # One after another: each bound then measures its own dependency, not the others' work.
    for check in (check_redis, check_database, check_blob_store, check_providers):
        checks += await check(settings, timeout_s)
    return checks


def failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": not failed(checks), "checks": [asdict(c) for c in checks]}


def table(checks: list[Check]) -> str:
    width = max([len(c.name) for c in checks] + [5]) + 2
    lines = [f"{'CHECK':<{width}}{'STATUS':<8}DETAIL"]
    lines += [f"{c.name:<{width}}{c.status:<8}{c.detail}" for c in checks]
    fails = sum(c.status == "fail" for c in checks)
    warns = sum(c.status == "warn" for c in checks)
    lines += ["", f"{fails} failed, {warns} warning(s), {len(checks) - fails - warns} ok"]
    return "\n".join(lines)
