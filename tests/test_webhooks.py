"""Webhooks: a job (or its key) names a URL; when the job is over the deliverer POSTs the job
object, signed per Standard Webhooks with the key's secret, on its own queue, with retries.

A real loopback receiver verifies every signature with `standardwebhooks.Webhook(secret).verify`;
the deliverer runs in the test's loop against the test's Redis and database."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from redis.asyncio import Redis
from standardwebhooks import Webhook

from api.deliverer import make_deliverer
from storage.db import Database
from switchyard.standin import LoopbackServer, StandIn
from tests.conftest import Gateway, admin_headers, chat_body, eventually, process_env, wait_for_status
from tests.llm_support import write_llm_providers

pytestmark = pytest.mark.settings(SWITCHYARD_WEBHOOK_RETRY_SCHEDULE="0.2,0.2,0.2")


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn) -> Path:
    return write_llm_providers(tmp_path / "providers.toml", ("standin", standin.base_url))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver(LoopbackServer):
    """Answers each POST with the next of `answers` (then 200); `sleep` paths wait first."""

    host: str = "127.0.0.1"
    port: int = 0
    answers: list[int] = field(default_factory=list)
    slow_paths: dict[str, float] = field(default_factory=dict)
    slow_once: dict[str, float] = field(default_factory=dict)
    got: list[Received] = field(default_factory=list)
    calls: int = 0
    _server: Any = None

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                self.calls += 1
                if path in self.slow_paths:
                    await asyncio.sleep(self.slow_paths[path])
                elif path in self.slow_once:
                    await asyncio.sleep(self.slow_once.pop(path))
                status = self.answers.pop(0) if self.answers else 200
                self.got.append(Received(path, headers, body))
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 2\r\n\r\nok" % status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def on(self, path: str) -> list[Received]:
        return [r for r in self.got if r.path == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def deliverer(gw: Gateway) -> AsyncIterator[Any]:
    settings = gw.settings
    redis = Redis.from_url(settings.redis_url)  # type: ignore[arg-type]
    db = Database(settings.database_url_or_default)
    http = httpx.AsyncClient(follow_redirects=False)
    d = make_deliverer(settings, redis, db, http)
    d.idle_s = 0.05
    task = asyncio.create_task(d.run())
    try:
        yield d
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await d.close()
        await http.aclose()
        await redis.aclose()
        await db.dispose()


async def new_key(gw: Gateway, name: str = "hooked", **body: Any) -> tuple[str, str, str]:
    response = await gw.client.post("/api/keys", json={"name": name, **body}, headers=admin_headers())
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["webhook_secret"].startswith("whsec_")
    return data["key"], data["webhook_secret"], data["id"]


def verified(secret: str, r: Received) -> Any:
    """The payload, after the library checked its signature (raises when it does not hold)."""
    return Webhook(secret).verify(r.body, r.headers)


async def deliveries(gw: Gateway, key: str, **params: str) -> list[dict[str, Any]]:
    response = await gw.client.get("/api/v1/webhooks/deliveries", params=params, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def test_openai_batch_job_completion_is_delivered_signed(
    gw: Gateway, receiver: Receiver, deliverer: Any
) -> None:
    gw.start_worker()
    key, secret, _ = await new_key(gw)
    response = await gw.client.post(
        "/v1/chat/completions?batch=1",
        json=chat_body("hooked", webhook=receiver.url("/openai")),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    await eventually(lambda: _ready(receiver.on("/openai")), what="the webhook", timeout=15)
    got = receiver.on("/openai")[0]
    payload = verified(secret, got)
    assert payload["type"] == "job.completed"
    job = payload["data"]
    assert job["id"] == job_id and job["status"] == "succeeded"
    assert job["result"]["choices"][0]["message"]["content"]
    # the same object as GET /api/v1/jobs/{id}
    polled = await wait_for_status(gw.client, key, job_id, "succeeded")
    assert job == polled
    assert got.headers["webhook-id"] == f"msg_{job_id}_completed"
    with pytest.raises(Exception):  # noqa: B017 (the library's WebhookVerificationError)
        Webhook("whsec_" + "A" * 44).verify(got.body, got.headers)
    [d] = await eventually(lambda: _delivered(gw, key, job_id), what="delivered state")
    assert d["attempts"][0]["status_code"] == 200 and d["next_attempt_at"] is None


async def _ready(items: list[Any]) -> list[Any]:
    return items


async def _delivered(gw: Gateway, key: str, job_id: str) -> list[dict[str, Any]]:
    found = await deliveries(gw, key, job_id=job_id)
    return found if found and found[0]["status"] == "delivered" else []


async def test_native_job_header_form_key_default_and_start_filter(
    gw: Gateway, receiver: Receiver, deliverer: Any
) -> None:
    gw.start_worker()
    key, secret, key_id = await new_key(gw, webhook_url=receiver.url("/default"))
    # header form on the native route (synchronous call)
    response = await gw.client.post(
        "/api/v1/completion",
        json=chat_body("by header"),
        headers={"X-API-Key": key, "X-Webhook-URL": receiver.url("/header")},
    )
    assert response.status_code == 200, response.text
    header_job = response.headers["x-job-id"]
    # the key's default, no URL named
    response = await gw.client.post(
        "/api/v1/completion", json=chat_body("default"), headers={"X-API-Key": key}
    )
    default_job = response.headers["x-job-id"]
    # Replicate's filter: start and completed
    response = await gw.client.post(
        "/api/v1/completion?batch=1",
        json=chat_body(
            "filtered", webhook=receiver.url("/both"), webhook_events_filter=["start", "completed"]
        ),
        headers={"X-API-Key": key},
    )
    assert response.status_code == 202, response.text
    both_job = response.json()["data"]["job_id"]
    await eventually(
        lambda: _ready(receiver.on("/header") and receiver.on("/default") and len(receiver.on("/both")) >= 2),
        what="three webhooks",
        timeout=15,
    )
    assert verified(secret, receiver.on("/header")[0])["data"]["id"] == header_job
    assert verified(secret, receiver.on("/default")[0])["data"]["id"] == default_job
    kinds = sorted(verified(secret, r)["type"] for r in receiver.on("/both"))
    assert kinds == ["job.completed", "job.start"]
    # a rotated secret signs what follows; the old one no longer verifies it
    rotated = await gw.client.post(f"/api/keys/{key_id}/webhook-secret", headers=admin_headers())
    assert rotated.status_code == 200
    assert rotated.json()["webhook_secret"] != secret
    assert both_job


async def test_retries_until_2xx_and_410_stops(gw: Gateway, receiver: Receiver, deliverer: Any) -> None:
    gw.start_worker()
    key, secret, _ = await new_key(gw)
    receiver.answers = [500, 500]
    response = await gw.client.post(
        "/api/v1/completion?batch=1",
        json=chat_body("retry", webhook=receiver.url("/retry")),
        headers={"X-API-Key": key},
    )
    job_id = response.json()["data"]["job_id"]
    [d] = await eventually(lambda: _delivered(gw, key, job_id), what="delivered after retries", timeout=15)
    assert [a["status_code"] for a in d["attempts"]] == [500, 500, 200]
    assert len(receiver.on("/retry")) == 3
    verified(secret, receiver.on("/retry")[-1])

    receiver.answers = [410]
    response = await gw.client.post(
        "/api/v1/completion?batch=1",
        json=chat_body("gone", webhook=receiver.url("/gone")),
        headers={"X-API-Key": key},
    )
    gone_id = response.json()["data"]["job_id"]

    async def stopped() -> list[dict[str, Any]]:
        found = await deliveries(gw, key, job_id=gone_id)
        return found if found and found[0]["status"] == "gone" else []

    await eventually(stopped, what="the 410 to stop the delivery", timeout=15)
    await asyncio.sleep(0.8)  # past the whole retry schedule: nothing more is sent
    assert len(receiver.on("/gone")) == 1
    metrics = await gw.client.get("/metrics", headers=admin_headers())
    text = metrics.text
    assert 'switchyard_webhook_deliveries_total{outcome="retrying"} 2.0' in text
    assert 'switchyard_webhook_deliveries_total{outcome="gone"} 1.0' in text


async def test_a_slow_receiver_does_not_delay_jobs(gw: Gateway, receiver: Receiver, deliverer: Any) -> None:
    gw.start_worker()
    key, _, _ = await new_key(gw)
    receiver.slow_paths["/slow"] = 30.0
    for i in range(3):
        response = await gw.client.post(
            "/api/v1/completion?batch=1",
            json=chat_body(f"slow {i}", webhook=receiver.url("/slow")),
            headers={"X-API-Key": key},
        )
        assert response.status_code == 202
    await eventually(lambda: _ready(receiver.calls >= 3), what="the slow receiver to be called", timeout=15)
    started = time.monotonic()
    for i in range(5):  # jobs (with webhooks of their own) finish as fast as ever
        response = await gw.client.post(
            "/api/v1/completion",
            json=chat_body(f"fast {i}", webhook=receiver.url("/fast")),
            headers={"X-API-Key": key},
        )
        assert response.status_code == 200
    assert time.monotonic() - started < 5
    await eventually(lambda: _ready(len(receiver.on("/fast")) == 5), what="the fast webhooks", timeout=15)


async def test_bad_input_and_ssrf_refusals(gw: Gateway, settings: Any) -> None:
    key, _, _ = await new_key(gw)
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({"webhook": "ftp://example.com/x"}, {}, "webhook"),
        ({"webhook": 42}, {}, "webhook"),
        (
            {"webhook": "https://example.com/x", "webhook_events_filter": ["finished"]},
            {},
            "webhook_events_filter",
        ),
        (
            {"webhook": "https://example.com/x", "webhook_events_filter": "completed"},
            {},
            "webhook_events_filter",
        ),
        ({"webhook_events_filter": ["completed"]}, {}, "webhook_events_filter"),
        ({}, {"X-Webhook-URL": "not a url"}, "X-Webhook-URL"),
        ({"webhook": "https://example.com/x"}, {"X-Webhook-URL": "https://example.com/y"}, "X-Webhook-URL"),
    ]
    for body, headers, field_name in cases:
        response = await gw.client.post(
            "/api/v1/completion?batch=1", json=chat_body("bad", **body), headers={"X-API-Key": key, **headers}
        )
        assert response.status_code == 400, (body, headers, response.text)
        assert field_name in response.text, response.text
        response = await gw.client.post(
            "/v1/chat/completions?batch=1",
            json=chat_body("bad", **body),
            headers={"X-API-Key": key, **headers},
        )
        assert response.status_code == 400, (body, headers, response.text)
        assert response.json()["error"]["message"].startswith(field_name)


@pytest.mark.settings(SWITCHYARD_ALLOW_PRIVATE_URLS="false")
async def test_private_webhook_urls_are_refused(gw: Gateway) -> None:
    key, _, _ = await new_key(gw)
    for url in ("http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "http://[::1]/hook", "http://localhost/x"):
        response = await gw.client.post(
            "/api/v1/completion?batch=1", json=chat_body("ssrf", webhook=url), headers={"X-API-Key": key}
        )
        assert response.status_code == 400, (url, response.text)
        assert "webhook" in response.text
        response = await gw.client.post(
            "/api/v1/completion?batch=1",
            json=chat_body("ssrf"),
            headers={"X-API-Key": key, "X-Webhook-URL": url},
        )
        assert response.status_code == 400 and "X-Webhook-URL" in response.text
    response = await gw.client.post(
        "/api/keys", json={"name": "x", "webhook_url": "http://127.0.0.1/x"}, headers=admin_headers()
    )
    assert response.status_code == 400 and "webhook_url" in response.text


async def test_deliveries_are_seen_by_their_key_only(gw: Gateway, receiver: Receiver, deliverer: Any) -> None:
    gw.start_worker()
    alice, _, _ = await new_key(gw, "alice")
    bob, _, _ = await new_key(gw, "bob")
    ids = []
    for i in range(3):
        response = await gw.client.post(
            "/api/v1/completion",
            json=chat_body(f"a{i}", webhook=receiver.url("/alice")),
            headers={"X-API-Key": alice},
        )
        ids.append(response.headers["x-job-id"])
    await eventually(lambda: _ready(len(receiver.on("/alice")) == 3), what="alice's webhooks", timeout=15)
    assert await deliveries(gw, bob) == []
    assert await deliveries(gw, bob, job_id=ids[0]) == []
    page = await gw.client.get(
        "/api/v1/webhooks/deliveries", params={"limit": "2"}, headers={"X-API-Key": alice}
    )
    first = page.json()
    assert [d["job_id"] for d in first["data"]] == [ids[2], ids[1]]
    rest = await deliveries(gw, alice, cursor=first["pagination"]["next_cursor"])
    assert [d["job_id"] for d in rest] == [ids[0]]
    admin = await gw.client.get("/api/v1/webhooks/deliveries", headers=admin_headers())
    assert {d["job_id"] for d in admin.json()["data"]} >= set(ids)
    assert len(await deliveries(gw, alice, status="delivered")) == 3
    bad = await gw.client.get(
        "/api/v1/webhooks/deliveries", params={"status": "lost"}, headers={"X-API-Key": alice}
    )
    assert bad.status_code == 400 and "status" in bad.text


async def test_batch_completion_and_failure_are_delivered(
    gw: Gateway, receiver: Receiver, deliverer: Any
) -> None:
    gw.start_worker()
    key, secret, _ = await new_key(gw)
    client = openai.AsyncOpenAI(
        base_url="http://testserver.local/v1", api_key=key, http_client=gw.client, max_retries=0
    )
    lines = [
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": chat_body(f"line {i}"),
        }
        for i in range(2)
    ]
    good = await client.files.create(
        file=("requests.jsonl", io.BytesIO(b"".join(orjson.dumps(x) + b"\n" for x in lines))), purpose="batch"
    )
    batch = await client.batches.create(
        input_file_id=good.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_body={"webhook": receiver.url("/batch")},
    )
    bad = await client.files.create(file=("bad.jsonl", io.BytesIO(b"{not json\n")), purpose="batch")
    failed = await client.batches.create(
        input_file_id=bad.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_headers={"X-Webhook-URL": receiver.url("/failed")},
    )
    await eventually(
        lambda: _ready(receiver.on("/batch") and receiver.on("/failed")),
        what="both batch webhooks",
        timeout=20,
    )
    done = verified(secret, receiver.on("/batch")[0])
    assert done["type"] == "batch.completed"
    assert done["data"]["id"] == batch.id and done["data"]["status"] == "completed"
    assert done["data"]["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert (
        done["data"]
        == (await client.batches.retrieve(batch.id)).model_dump(exclude_unset=True) | done["data"]
    )
    gone = verified(secret, receiver.on("/failed")[0])
    assert gone["data"]["id"] == failed.id and gone["data"]["status"] == "failed"
    [d] = await deliveries(gw, key, batch_id=batch.id)
    assert d["batch_id"] == batch.id and d["job_id"] is None


def start_deliverer_process(env: dict[str, str], tmp_path: Path, n: int) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"webhooks-{n}.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchyard.cli", "webhooks"],
        env=process_env(env),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


@pytest.mark.settings(SWITCHYARD_WEBHOOK_TIMEOUT_S="2", SWITCHYARD_WEBHOOK_RETRY_SCHEDULE="0.2,0.2,0.2")
async def test_a_deliverer_killed_mid_delivery_leaves_it_to_another(
    gw: Gateway, receiver: Receiver, env: dict[str, str], tmp_path: Path
) -> None:
    gw.start_worker()
    key, secret, _ = await new_key(gw)
    receiver.slow_once["/kill"] = 30.0
    first = start_deliverer_process(env, tmp_path, 1)
    second: subprocess.Popen[bytes] | None = None
    try:
        response = await gw.client.post(
            "/api/v1/completion",
            json=chat_body("kill", webhook=receiver.url("/kill")),
            headers={"X-API-Key": key},
        )
        job_id = response.headers["x-job-id"]
        await eventually(lambda: _ready(receiver.calls >= 1), what="the first attempt", timeout=20)
        first.kill()  # SIGKILL: no attempt is recorded, the delivery stays leased
        first.wait(10)
        [d] = await deliveries(gw, key, job_id=job_id)
        assert d["status"] == "pending" and d["attempts"] == []
        second = start_deliverer_process(env, tmp_path, 2)
        [d] = await eventually(lambda: _delivered(gw, key, job_id), what="the other deliverer", timeout=30)
        assert [a["status_code"] for a in d["attempts"]] == [200]
        assert len(receiver.on("/kill")) == 1  # the killed attempt never got its answer
        verified(secret, receiver.on("/kill")[0])
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.mark.parametrize("cursor", ["²:x", "٣:x", "12:", ":x", "1e3:x", "x" * 200])
async def test_a_cursor_this_listing_did_not_give_is_a_400(gw: Gateway, cursor: str) -> None:
    """Digits other than ASCII's pass `str.isdigit` ('²', '٣') and are no score Redis reads."""
    key, _, _ = await new_key(gw)
    response = await gw.client.get(
        "/api/v1/webhooks/deliveries", params={"cursor": cursor}, headers={"X-API-Key": key}
    )
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["field"] == "cursor"
