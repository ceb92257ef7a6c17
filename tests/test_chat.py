"""The happy paths of chat completion in every dialect: synchronous, `?batch=1` and polled, and
OpenAI's routes through the official `openai` client over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis
import uvicorn

from api.app import create_app
from jobs.catalog import CATALOG_KEY
from switchyard.redis_server import free_port
from switchyard.settings import Settings
from switchyard.standin import StandIn
from tests.conftest import (
    Gateway,
    chat_body,
    eventually,
    get_job,
    make_settings,
    running_gateway,
    wait_for_status,
    write_providers,
)

OPENAI_COMPLETION_FIELDS = {"id", "object", "created", "model", "choices", "usage"}


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A chat body without what differs between two calls of the same request."""
    return {k: v for k, v in body.items() if k not in ("id", "created", "credits_charged", "batch_request")}


async def test_credits_chat_synchronous(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    standin.record = True
    response = await gw.client.post(
        "/api/v1/chat", json=chat_body("Hello there"), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert OPENAI_COMPLETION_FIELDS <= set(body)
    assert body["object"] == "chat.completion"
    assert body["model"] == "mock/echo"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: Hello there"}
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert body["credits_charged"] == 1
    assert body["batch_request"] is False
    assert "credits_remaining" in body
    # The credits dialect's documented default, and nothing of ours, goes upstream.
    (sent,) = standin.requests
    assert sent["max_tokens"] == 150
    assert sent["messages"] == [{"role": "user", "content": "Hello there"}]

    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "succeeded"
    assert job["priority"] == "interactive"
    assert job["attempts"] == 1
    assert job["credits_charged"] == 1
    assert job["provider"] == "standin"
    assert job["result"] == body
    assert job["links"] == {"self": f"/api/v1/jobs/{job['id']}", "cancel": f"/api/v1/jobs/{job['id']}"}
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


async def test_credits_chat_batch_is_polled_to_the_same_result(gw: Gateway, key: str) -> None:
    gw.start_worker()
    auth = {"Authorization": f"Bearer {key}"}
    sync = await gw.client.post("/api/v1/chat", json=chat_body("same question"), headers=auth)
    assert sync.status_code == 200

    submitted = await gw.client.post(
        "/api/v1/chat", params={"batch": "1"}, json=chat_body("same question"), headers=auth
    )
    assert submitted.status_code == 202, submitted.text
    body = submitted.json()
    assert body["success"] is True
    data = body["data"]
    job_id = data["job_id"]
    assert data["status"] == "queued"
    assert data["poll_url"] == f"/api/v1/jobs/{job_id}"
    assert submitted.headers["location"] == data["poll_url"]

    job = await wait_for_status(gw.client, key, job_id, "succeeded")
    assert job["priority"] == "batch"
    assert job["credits_charged"] == 2
    result = job["result"]
    assert result["credits_charged"] == 2
    assert result["batch_request"] is True
    assert _comparable(result) == _comparable(sync.json())


async def test_native_completion_synchronous_and_batch(gw: Gateway, standin: StandIn) -> None:
    gw.start_worker()
    key = await gw.create_key("native", limits={"max_tokens_per_request": 32768})
    standin.record = True
    headers = {"X-API-Key": key}
    response = await gw.client.post(
        "/api/v1/completion", json=chat_body("native", max_tokens=32768), headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert set(body) >= {"success", "data", "usage", "request_id", "processing_time_ms"}
    assert body["data"]["choices"][0]["message"]["content"] == "echo: native"
    assert OPENAI_COMPLETION_FIELDS <= set(body["data"])
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert body["request_id"] == "req_" + response.headers["x-job-id"]
    assert isinstance(body["processing_time_ms"], int) and body["processing_time_ms"] >= 0
    assert standin.requests[0]["max_tokens"] == 32768

    await gw.client.post("/api/v1/completion", json=chat_body("default cap"), headers=headers)
    assert standin.requests[1]["max_tokens"] == 1000  # the native dialect's default

    submitted = await gw.client.post(
        "/api/v1/completion?batch=true", json=chat_body("native"), headers=headers
    )
    assert submitted.status_code == 202
    job = await wait_for_status(gw.client, key, submitted.json()["data"]["job_id"], "succeeded")
    assert job["result"]["success"] is True
    assert job["result"]["data"]["choices"] == body["data"]["choices"]
    assert job["result"]["request_id"] == "req_" + job["id"]


async def test_unknown_request_fields_go_upstream_and_ours_do_not(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    standin.record = True
    request = chat_body(
        "fields", seed=7, temperature=0.5, response_format={"type": "json_object"}, thinking_enabled=True
    )
    response = await gw.client.post(
        "/v1/chat/completions", json=request, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    (sent,) = standin.requests
    assert sent["seed"] == 7 and sent["temperature"] == 0.5
    assert sent["response_format"] == {"type": "json_object"}
    assert "thinking_enabled" not in sent
    assert "max_tokens" not in sent  # OpenAI's routes add no default


async def test_batch_flag_must_be_a_boolean(gw: Gateway, key: str) -> None:
    response = await gw.client.post(
        "/api/v1/completion?batch=maybe", json=chat_body(), headers={"X-API-Key": key}
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "batch"


# --- OpenAI's routes through the official client --------------------------------------------------
@contextlib.asynccontextmanager
async def served_over_http(settings: Settings) -> AsyncIterator[str]:
    """The app under uvicorn on a free loopback port, in this test's loop."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings.model_copy(update={"host": "127.0.0.1", "port": port})),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def base_url(gw: Gateway) -> AsyncIterator[str]:
    gw.start_worker()
    async with served_over_http(gw.settings) as url:
        yield url


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
async def test_openai_client_chat_completion(base_url: str, key: str, prefix: str) -> None:
    async with httpx.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=base_url + prefix, api_key=key, http_client=http, max_retries=0)
        completion = await client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "via the sdk"}], temperature=0.2
        )
        assert completion.object == "chat.completion"
        assert completion.model == "mock/echo"
        assert completion.choices[0].message.content == "echo: via the sdk"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_openai_client_sees_openai_errors(base_url: str, key: str) -> None:
    async with httpx.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=key, http_client=http, max_retries=0)
        with pytest.raises(openai.NotFoundError) as not_found:
            await client.chat.completions.create(
                model="no/such-model", messages=[{"role": "user", "content": "x"}]
            )
        assert not_found.value.status_code == 404
        assert "no/such-model" in not_found.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="mock/echo", messages=[{"role": "user", "content": "x"}], temperature=5
            )
        assert bad.value.param == "temperature"
        assert bad.value.code == "invalid_request_error"

        stranger = openai.AsyncOpenAI(
            base_url=base_url + "/v1", api_key="ck_wrong", http_client=http, max_retries=0
        )
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(
                model="mock/echo", messages=[{"role": "user", "content": "x"}]
            )


async def test_concurrent_synchronous_calls_each_get_their_own_answer(gw: Gateway, key: str) -> None:
    gw.start_worker()
    routes = [
        ("/api/v1/completion", {"X-API-Key": key}, lambda b: b["data"]),
        ("/api/v1/chat", {"Authorization": f"Bearer {key}"}, lambda b: b),
        ("/v1/chat/completions", {"Authorization": f"Bearer {key}"}, lambda b: b),
    ]

    async def call(i: int) -> None:
        path, headers, completion = routes[i % len(routes)]
        response = await gw.client.post(path, json=chat_body(f"caller {i}"), headers=headers)
        assert response.status_code == 200, response.text
        assert completion(response.json())["choices"][0]["message"]["content"] == f"echo: caller {i}"

    await asyncio.gather(*(call(i) for i in range(60)))


@pytest.fixture
def discovered_providers(tmp_path: Path, standin: StandIn) -> Path:
    """A provider entry without `models`: its models are discovered from GET /models."""
    return write_providers(
        tmp_path / "discovered.toml", [{"name": "found", "kind": "openai", "base_url": standin.base_url}]
    )


async def test_models_of_a_provider_without_a_list_are_discovered(
    env: dict[str, str], discovered_providers: Path
) -> None:
    settings = make_settings({**env, "SWITCHYARD_PROVIDERS": str(discovered_providers)})
    async with running_gateway(settings) as gw:
        gw.start_worker()
        async with aioredis.Redis.from_url(settings.redis_url) as r:  # type: ignore[arg-type]
            await eventually(lambda: r.hexists(CATALOG_KEY, "found"), what="model discovery")
        key = await gw.create_key()
        response = await gw.client.post(
            "/api/v1/chat",
            json=chat_body("found", model="mock/other"),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        job = await get_job(gw.client, key, response.headers["x-job-id"])
        assert job["provider"] == "found"
        unknown = await gw.client.post(
            "/api/v1/chat", json=chat_body(model="not/listed"), headers={"Authorization": f"Bearer {key}"}
        )
        assert unknown.status_code == 404


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
async def test_openai_client_lists_and_retrieves_models(base_url: str, key: str, prefix: str) -> None:
    async with httpx.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=base_url + prefix, api_key=key, http_client=http, max_retries=0)
        listed = [m async for m in client.models.list()]
        assert {m.id for m in listed} == {"mock/echo", "mock/other"}
        assert all(m.object == "model" and m.owned_by == "standin" for m in listed)
        one = await client.models.retrieve("mock/echo")
        assert one.id == "mock/echo"
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("no/such-model")
        assert "no/such-model" in missing.value.message


async def test_model_list_needs_a_key_and_follows_the_key_s_model_list(gw: Gateway) -> None:
    anonymous = await gw.client.get("/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    narrow = await gw.create_key("narrow", models=["mock/other"])
    listed = await gw.client.get("/openai/v1/models", headers={"Authorization": f"Bearer {narrow}"})
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == ["mock/other"]
    hidden = await gw.client.get("/v1/models/mock/echo", headers={"Authorization": f"Bearer {narrow}"})
    assert hidden.status_code == 404
    assert hidden.json()["error"]["param"] == "model"
