"""`GET /metrics`: numbers read back exactly after real worker processes ran real jobs."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.deadletters import DeadLetters
from switchyard import metrics
from switchyard.standin import StandIn
from tests.conftest import Gateway, admin_headers, chat_body, eventually, process_env
from tests.test_worker_processes import WorkerProcesses


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def processes(env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(env, tmp_path)
    yield procs
    procs.stop_all()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gw: Gateway) -> Samples:
    response = await gw.client.get("/metrics", headers=admin_headers())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_jobs_created_finished_and_histograms_across_two_worker_processes(
    gw: Gateway, key: str, processes: WorkerProcesses
) -> None:
    processes.start("interactive")
    processes.start("interactive")

    async def both_up() -> bool:
        return value(await scrape(gw), "switchyard_workers", queues="interactive") == 2

    await eventually(both_up, timeout=20, what="two workers' heartbeats")
    calls = [
        gw.client.post("/api/v1/completion", json=chat_body(f"n{i}"), headers={"X-API-Key": key})
        for i in range(12)
    ]
    responses = await asyncio.gather(*calls)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    failed = await gw.client.post(
        "/api/v1/completion", json=chat_body("[400] no"), headers={"X-API-Key": key}
    )
    assert failed.status_code >= 400

    chat = {"kind": "chat_completion", "priority": "interactive"}

    async def persisted() -> Samples | None:
        s = await scrape(gw)
        done = (
            value(s, "switchyard_jobs_finished_total", **chat, status="succeeded", provider="standin") or 0
        ) + (value(s, "switchyard_jobs_finished_total", **chat, status="failed", provider="") or 0)
        return s if done == 13 else None

    s = await eventually(persisted, timeout=20, what="13 finished jobs in /metrics")
    assert value(s, "switchyard_jobs_created_total", **chat) == 13
    assert value(s, "switchyard_jobs_finished_total", **chat, status="succeeded", provider="standin") == 12
    assert value(s, "switchyard_jobs_finished_total", **chat, status="failed", provider="") == 1
    # every job was waited for and run once: the histograms count each one
    assert value(s, "switchyard_job_wait_seconds_count", **chat) == 13
    assert value(s, "switchyard_job_wait_seconds_bucket", **chat, le="+Inf") == 13
    assert value(s, "switchyard_job_run_seconds_count", **chat, provider="standin") == 12
    assert value(s, "switchyard_job_run_seconds_bucket", **chat, provider="standin", le="+Inf") == 12
    assert value(s, "switchyard_credits_charged_total", **chat) == 13  # 1 each (a 400 is the caller's: kept)
    assert value(s, "switchyard_persist_lag_jobs", set="sy:persist") == 0
    assert value(s, "switchyard_queue_depth", queue="interactive") == 0


async def test_queue_depth_and_age_with_no_worker_then_drained(
    gw: Gateway, key: str, processes: WorkerProcesses
) -> None:
    for i in range(5):
        r = await gw.client.post(
            "/api/v1/completion?batch=1", json=chat_body(f"b{i}"), headers={"X-API-Key": key}
        )
        assert r.status_code == 202, r.text
    await asyncio.sleep(0.3)
    s = await scrape(gw)
    assert value(s, "switchyard_queue_depth", queue="interactive") == 0
    assert value(s, "switchyard_queue_depth", queue="batch") == 5
    assert value(s, "switchyard_queue_running", queue="batch") == 0
    age = value(s, "switchyard_queue_oldest_age_seconds", queue="batch")
    assert age is not None and 0.3 <= age < 10
    assert value(s, "switchyard_jobs_created_total", kind="chat_completion", priority="batch") == 5
    assert value(s, "switchyard_workers", queues="batch") is None

    processes.start("batch")

    async def drained() -> Samples | None:
        s = await scrape(gw)
        done = value(s, "switchyard_jobs_finished_total", kind="chat_completion", priority="batch",
                     status="succeeded", provider="standin")  # fmt: skip
        return s if done == 5 else None

    s = await eventually(drained, timeout=20, what="the batch queue drained into /metrics")
    assert value(s, "switchyard_queue_depth", queue="batch") == 0
    assert value(s, "switchyard_queue_oldest_age_seconds", queue="batch") == 0
    assert value(s, "switchyard_persist_lag_jobs", set="sy:persist:batch") == 0
    assert value(s, "switchyard_credits_charged_total", kind="chat_completion", priority="batch") == 10


async def test_refusals_dead_letters_provider_errors_and_cooldowns(gw: Gateway, standin: StandIn) -> None:
    limited = await gw.create_key("limited", limits={"hourly": 2})
    gw.start_worker("interactive")
    for _ in range(2):
        r = await gw.client.post("/api/v1/completion", json=chat_body(), headers={"X-API-Key": limited})
        assert r.status_code == 200, r.text
    for _ in range(3):
        r = await gw.client.post("/api/v1/completion", json=chat_body(), headers={"X-API-Key": limited})
        assert r.status_code == 429
    redis = gw.workers[0][0].pool
    await DeadLetters(redis).add("test", "unreadable", job_id="j1")
    await DeadLetters(redis).add("test", "unreadable", job_id="j2")
    await redis.set("sy:provider:cooldown:standin", b"1", px=60_000)
    await redis.hincrby(metrics.PROVIDER_ERRORS_KEY, "standin", 0)

    s = await scrape(gw)
    assert value(s, "switchyard_admission_refusals_total", reason="hourly") == 3
    assert value(s, "switchyard_jobs_created_total", kind="chat_completion", priority="interactive") == 2
    assert value(s, "switchyard_dead_letters") == 2
    assert value(s, "switchyard_provider_cooldown", provider="standin") == 1


async def test_provider_errors_are_counted(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker("interactive")
    r = await gw.client.post("/api/v1/completion", json=chat_body("[fail] x"), headers={"X-API-Key": key})
    assert r.status_code == 502, r.text
    s = await scrape(gw)
    assert value(s, "switchyard_provider_errors_total", provider="standin") == 2  # two attempts


async def test_metrics_need_the_admin_key(gw: Gateway, key: str) -> None:
    assert (await gw.client.get("/metrics")).status_code == 401
    assert (await gw.client.get("/metrics", headers={"X-API-Key": key})).status_code == 403


@pytest.mark.settings(SWITCHYARD_METRICS_PUBLIC="true")
async def test_metrics_public_when_configured(gw: Gateway) -> None:
    r = await gw.client.get("/metrics")
    assert r.status_code == 200
    assert "switchyard_queue_depth" in r.text


# --- switchyard status ---------------------------------------------------------------------------
def run_status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "status", *args],
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_status_shows_queues_workers_lag_and_dead_letters(
    gw: Gateway, key: str, env: dict[str, str], processes: WorkerProcesses
) -> None:
    for i in range(3):
        r = await gw.client.post(
            "/api/v1/completion?batch=1", json=chat_body(f"s{i}"), headers={"X-API-Key": key}
        )
        assert r.status_code == 202, r.text
    proc = processes.start("interactive")

    async def up() -> bool:
        return value(await scrape(gw), "switchyard_workers", queues="interactive") == 1

    await eventually(up, timeout=20, what="the worker's heartbeat")
    from redis.asyncio import Redis

    async with Redis.from_url(env["REDIS_URL"]) as r:
        await DeadLetters(r).add("test", "unreadable", job_id="j1")

    done = await asyncio.to_thread(run_status, env, "--json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    queues = {q["queue"]: q for q in view["queues"]}
    assert queues["batch"]["waiting"] == 3 and queues["batch"]["running"] == 0
    assert queues["batch"]["oldest_age_s"] > 0
    assert queues["interactive"]["waiting"] == 0 and queues["interactive"]["oldest_age_s"] is None
    assert [(w["pid"], w["queues"]) for w in view["workers"]] == [(proc.pid, "interactive")]
    assert {p["set"]: p["jobs"] for p in view["persist"]} == {"sy:persist": 0, "sy:persist:batch": 0}
    assert view["dead_letters"] == 1

    table = await asyncio.to_thread(run_status, env)
    assert table.returncode == 0, table.stderr
    assert re.search(r"^batch\s+3\s+0\s+\d+\.\d+s$", table.stdout, re.M), table.stdout
    assert f":{proc.pid}  interactive" in table.stdout
    assert "DEAD LETTERS  1" in table.stdout

    # a worker stopped cleanly leaves the list at once
    proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proc.wait, 20)
    view = json.loads((await asyncio.to_thread(run_status, env, "--json")).stdout)
    assert view["workers"] == []


def test_status_without_redis_url_says_so(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "REDIS_URL"}
    done = run_status(env)
    assert done.returncode == 2
    assert "REDIS_URL is not set" in done.stderr


def test_the_grafana_dashboard_uses_only_metrics_that_exist() -> None:
    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json").read_text())
    names = {
        v
        for k, v in vars(metrics).items()
        if k.isupper() and isinstance(v, str) and v.startswith("switchyard_")
    }
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"switchyard_[a-z_]+", target["expr"]))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    unknown = {
        u
        for u in used
        if u not in names and not any(u.endswith(s) and u[: -len(s)] in names for s in suffixes)
    }
    assert used and not unknown
