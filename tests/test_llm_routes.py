"""cloudgpt's `POST /api/chat` (api-reference 001) and 004's `/api/llm/generate/`,
`/api/llm/instruct/` and `/api/embedding/`, against stand-in providers over real HTTP: each
route's documented shape, `?batch=1` polled to the same body, defaults, and bad input in the
dialect's error shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from storage.db import Database
from storage.models import Job
from switchyard import cli
from switchyard.settings import get_settings
from switchyard.standin import StandIn, standin_vector
from tests.conftest import Gateway, admin_headers, chat_body, get_job, wait_for_status
from tests.llm_support import EMBED, assert_openai_error, bearer, usage_row, write_llm_providers

OPENAI_COMPLETION_FIELDS = {"id", "object", "created", "model", "choices", "usage"}


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn) -> Path:
    return write_llm_providers(tmp_path / "providers.toml", ("standin", standin.base_url))


# --- /api/chat (cloudgpt) --------------------------------------------------------------------------
async def test_cloudgpt_chat_answers_an_openai_completion(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    standin.record = True
    body = {
        "model": "mock/echo",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Write a haiku about AI"},
        ],
        "max_tokens": 1000,
        "stream": False,
    }
    response = await gw.client.post("/api/chat", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    completion = response.json()
    assert set(completion) == OPENAI_COMPLETION_FIELDS
    assert completion["object"] == "chat.completion" and completion["model"] == "mock/echo"
    assert completion["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: Write a haiku about AI"},
            "finish_reason": "stop",
        }
    ]
    assert completion["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}
    assert response.headers["x-ratelimit-remaining"]
    (sent,) = standin.requests
    assert sent["temperature"] == 0.7  # 001's documented default
    assert sent["max_tokens"] == 1000
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["kind"] == "chat_completion" and job["result"] == completion

    await gw.client.post("/api/chat", json=chat_body("cool", temperature=0.1), headers=bearer(key))
    assert standin.requests[-1]["temperature"] == 0.1


async def test_cloudgpt_chat_batch_is_polled_to_the_same_shape(gw: Gateway, key: str) -> None:
    gw.start_worker()
    submitted = await gw.client.post("/api/chat?batch=1", json=chat_body("later"), headers=bearer(key))
    assert submitted.status_code == 202, submitted.text
    data = submitted.json()["data"]
    assert data["job"]["priority"] == "batch" and submitted.headers["location"] == data["poll_url"]
    job = await wait_for_status(gw.client, key, data["job_id"], "succeeded")
    assert set(job["result"]) == OPENAI_COMPLETION_FIELDS
    assert job["result"]["choices"][0]["message"]["content"] == "echo: later"


CLOUDGPT_BAD: list[tuple[dict[str, Any], str]] = [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "mock/echo"}, "messages"),
    ({"model": "mock/echo", "messages": []}, "messages"),
    ({"model": "mock/echo", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    (chat_body(temperature=3), "temperature"),
    (chat_body(max_tokens=0), "max_tokens"),
    (chat_body(model=EMBED), "model"),
]


@pytest.mark.parametrize(("body", "field"), CLOUDGPT_BAD)
async def test_cloudgpt_chat_bad_input(gw: Gateway, key: str, body: dict[str, Any], field: str) -> None:
    response = await gw.client.post("/api/chat", json=body, headers=bearer(key))
    error = assert_openai_error(response, 400, field)
    assert error["type"] == "invalid_request_error"


async def test_cloudgpt_chat_auth_and_unknown_models(gw: Gateway, key: str) -> None:
    missing = await gw.client.post("/api/chat", json=chat_body())
    assert assert_openai_error(missing, 401)["type"] == "authentication_error"
    wrong = await gw.client.post("/api/chat", json=chat_body(), headers=bearer("cgpt_not_a_key"))
    assert_openai_error(wrong, 401)
    unknown = await gw.client.post("/api/chat", json=chat_body(model="mock/ech"), headers=bearer(key))
    error = assert_openai_error(unknown, 404, "model")
    assert "mock/echo" in error["message"]


# --- /api/llm/generate/ and /api/llm/instruct/ (004) ---------------------------------------------------
@pytest.mark.settings(SWITCHYARD_DEFAULT_CHAT_MODEL="mock/other")
@pytest.mark.parametrize("path", ["/api/llm/generate/", "/api/llm/instruct/", "/api/llm/generate"])
async def test_llm_routes_answer_content_and_usage(
    gw: Gateway, key: str, standin: StandIn, path: str
) -> None:
    gw.start_worker()
    standin.record = True
    body = {
        "messages": [{"role": "user", "content": "Hello, world!"}],
        "temperature": 0.7,
        "max_tokens": 100,
        "top_p": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "stop": ["\n", "."],
    }
    response = await gw.client.post(path, json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "content": "echo: Hello, world!",
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    }
    (sent,) = standin.requests
    assert sent["model"] == "mock/other"  # the configured default: 004 leaves the model optional
    assert sent["stop"] == ["\n", "."] and sent["top_p"] == 1.0 and sent["max_tokens"] == 100
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["model"] == "mock/other" and job["result"] == response.json()

    chosen = await gw.client.post(path, json=chat_body("mine", model="mock/echo"), headers=bearer(key))
    assert chosen.status_code == 200 and standin.requests[-1]["model"] == "mock/echo"


async def test_llm_generate_batch_is_polled_to_the_same_shape(gw: Gateway, key: str) -> None:
    gw.start_worker()
    submitted = await gw.client.post(
        "/api/llm/instruct/?batch=1", json=chat_body("Explain quantum computing"), headers=bearer(key)
    )
    assert submitted.status_code == 202, submitted.text
    job = await wait_for_status(gw.client, key, submitted.json()["data"]["job_id"], "succeeded")
    assert job["result"] == {
        "content": "echo: Explain quantum computing",
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


async def test_llm_generate_without_a_model_uses_the_default_which_must_exist(gw: Gateway, key: str) -> None:
    body = {"messages": [{"role": "user", "content": "x"}]}
    response = await gw.client.post("/api/llm/generate/", json=body, headers=bearer(key))
    error = assert_openai_error(response, 404, "model")
    assert "'openai'" in error["message"]  # the default default: the keyless provider's chat model


LLM_BAD: list[tuple[dict[str, Any], str]] = [
    ({"model": "mock/echo"}, "messages"),
    ({"messages": "hello"}, "messages"),
    (chat_body(temperature=2.5), "temperature"),
    (chat_body(top_p=1.5), "top_p"),
    (chat_body(frequency_penalty=-3), "frequency_penalty"),
    (chat_body(presence_penalty=2.1), "presence_penalty"),
    (chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
    (chat_body(max_tokens="many"), "max_tokens"),
    (chat_body(model=EMBED), "model"),
]


@pytest.mark.parametrize("path", ["/api/llm/generate/", "/api/llm/instruct/"])
@pytest.mark.parametrize(("body", "field"), LLM_BAD)
async def test_llm_routes_bad_input(
    gw: Gateway, key: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = await gw.client.post(path, json=body, headers=bearer(key))
    assert_openai_error(response, 400, field)


# --- /api/embedding/ (004) -----------------------------------------------------------------------------
@pytest.mark.settings(SWITCHYARD_DEFAULT_EMBEDDING_MODEL=EMBED)
async def test_embedding_answers_one_vector(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    standin.record = True
    response = await gw.client.post(
        "/api/embedding/", json={"input": "Text to generate embedding for"}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "embedding": standin_vector("Text to generate embedding for", 16),
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    assert standin.requests[-1]["model"] == EMBED
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["kind"] == "embedding" and job["result"] == response.json()

    encoded = await gw.client.post(
        "/api/embedding",
        json={"model": EMBED, "input": "x", "encoding_format": "base64"},
        headers=bearer(key),
    )
    assert encoded.status_code == 200, encoded.text
    assert isinstance(encoded.json()["embedding"], str)

    submitted = await gw.client.post("/api/embedding/?batch=1", json={"input": "later"}, headers=bearer(key))
    assert submitted.status_code == 202, submitted.text
    job = await wait_for_status(gw.client, key, submitted.json()["data"]["job_id"], "succeeded")
    assert job["result"] == {
        "embedding": standin_vector("later", 16),
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }


EMBEDDING_BAD: list[tuple[dict[str, Any], str]] = [
    ({}, "input"),
    ({"input": ""}, "input"),
    ({"input": ["one", "two"]}, "input"),
    ({"input": 3}, "input"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "model": "mock/echo"}, "model"),
]


@pytest.mark.settings(SWITCHYARD_DEFAULT_EMBEDDING_MODEL=EMBED)
@pytest.mark.parametrize(("body", "field"), EMBEDDING_BAD)
async def test_embedding_bad_input(gw: Gateway, key: str, body: dict[str, Any], field: str) -> None:
    response = await gw.client.post("/api/embedding/", json=body, headers=bearer(key))
    assert_openai_error(response, 400, field)


async def test_embedding_default_model_must_exist(gw: Gateway, key: str) -> None:
    response = await gw.client.post("/api/embedding/", json={"input": "x"}, headers=bearer(key))
    error = assert_openai_error(response, 404, "model")
    assert "text-embedding-3-small" in error["message"]


# --- X-OpenAI-Base-URL / X-OpenAI-Key (004) ---------------------------------------------------------
USER_KEY = "sk-caller-" + "k" * 24
OVERRIDE_ROUTES = [
    ("/api/llm/generate/", chat_body("mine", model="their/model")),
    ("/api/llm/instruct/", chat_body("mine", model="their/model")),
    ("/api/embedding/", {"model": "their/embedder", "input": "mine"}),
]


@pytest.fixture
async def theirs() -> AsyncIterator[StandIn]:
    """The caller's own upstream: another stand-in, serving models the catalog does not know."""
    server = await StandIn(models=["their/model", "their/embedder"]).start()
    server.record = True
    yield server
    await server.stop()


async def _redis_values(url: str) -> list[bytes]:
    values: list[bytes] = []
    async with aioredis.Redis.from_url(url) as r:
        async for name in r.scan_iter(count=1000):
            kind = (await r.type(name)).decode()
            if kind == "string":
                values.append(await r.get(name) or b"")
            elif kind == "hash":
                values += [k + b"=" + v for k, v in (await r.hgetall(name)).items()]
            elif kind == "list":
                values += await r.lrange(name, 0, -1)
            elif kind == "set":
                values += list(await r.smembers(name))
            elif kind == "zset":
                values += await r.zrange(name, 0, -1)
            elif kind == "stream":
                values += [orjson.dumps(e, default=repr) for e in await r.xrange(name)]
            values.append(name)
    return values


async def test_an_allowed_key_reaches_its_own_upstream_with_its_own_key(
    gw: Gateway, standin: StandIn, theirs: StandIn
) -> None:
    gw.start_worker()
    standin.record = True
    key = await gw.create_key("own-upstream", allow_upstream_override=True)
    headers = {**bearer(key), "X-OpenAI-Base-URL": theirs.base_url + "/", "X-OpenAI-Key": USER_KEY}
    job_ids = []
    for path, body in OVERRIDE_ROUTES:
        response = await gw.client.post(path, json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert USER_KEY not in response.text
        job_ids.append(response.headers["x-job-id"])
    generated, _, embedded = [await get_job(gw.client, key, j) for j in job_ids]
    assert generated["result"]["content"] == "echo: mine"
    assert embedded["result"]["embedding"] == standin_vector("mine", 16)
    assert [r["model"] for r in theirs.requests] == ["their/model", "their/model", "their/embedder"]
    assert theirs.authorizations == [f"Bearer {USER_KEY}"] * 3
    assert standin.chat_calls == standin.embedding_calls == 0  # the catalog's provider: not called
    assert {generated["provider"], embedded["provider"]} == {"override"}

    submitted = await gw.client.post(
        "/api/embedding/?batch=1", json={"model": "their/embedder", "input": "later"}, headers=headers
    )
    assert submitted.status_code == 202, submitted.text
    job = await wait_for_status(gw.client, key, submitted.json()["data"]["job_id"], "succeeded")
    assert job["result"]["embedding"] == standin_vector("later", 16)
    job_ids.append(job["id"])

    # The caller's key is in no job record, result or row, and nothing of it stays in Redis.
    for job_id in job_ids:
        await usage_row(gw.settings.database_url_or_default, job_id)
        assert USER_KEY not in str(await get_job(gw.client, key, job_id))
    db = Database(gw.settings.database_url_or_default)
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(Job.__table__.select())).all()
    finally:
        await db.dispose()
    assert len(rows) == 4 and not any(USER_KEY in repr(tuple(row)) for row in rows)
    assert not any(USER_KEY.encode() in value for value in await _redis_values(gw.settings.redis_url))


async def test_a_key_header_alone_calls_the_catalog_s_providers_with_that_key(
    gw: Gateway, standin: StandIn
) -> None:
    gw.start_worker()
    standin.record = True
    key = await gw.create_key("own-key", allow_upstream_override=True)
    response = await gw.client.post(
        "/api/llm/generate/", json=chat_body("keyed"), headers={**bearer(key), "X-OpenAI-Key": USER_KEY}
    )
    assert response.status_code == 200, response.text
    assert standin.authorizations == [f"Bearer {USER_KEY}"]
    assert (await get_job(gw.client, key, response.headers["x-job-id"]))["provider"] == "standin"
    unknown = await gw.client.post(
        "/api/llm/generate/",
        json=chat_body(model="their/model"),
        headers={**bearer(key), "X-OpenAI-Key": USER_KEY},
    )
    assert_openai_error(unknown, 404, "model")  # without a base URL the catalog decides


@pytest.mark.parametrize(("path", "body"), OVERRIDE_ROUTES)
async def test_a_key_without_the_flag_may_not_override(
    gw: Gateway, key: str, theirs: StandIn, path: str, body: dict[str, Any]
) -> None:
    for headers, named in (
        ({"X-OpenAI-Base-URL": theirs.base_url, "X-OpenAI-Key": USER_KEY}, "X-OpenAI-Base-URL"),
        ({"X-OpenAI-Key": USER_KEY}, "X-OpenAI-Key"),
    ):
        response = await gw.client.post(path, json=body, headers={**bearer(key), **headers})
        error = assert_openai_error(response, 403, named)
        assert error["type"] == "permission_error" and USER_KEY not in response.text
    assert theirs.calls == 0


PRIVATE_URLS = [
    "http://127.0.0.1:{port}/v1",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]:{port}/v1",
    "http://localhost:{port}/v1",
    "http://10.0.0.7/v1",
    "file:///etc/passwd",
    "not a url",
]


@pytest.mark.settings(SWITCHYARD_ALLOW_PRIVATE_URLS="false")
@pytest.mark.parametrize(("path", "body"), OVERRIDE_ROUTES)
async def test_private_upstreams_are_refused(
    gw: Gateway, theirs: StandIn, path: str, body: dict[str, Any]
) -> None:
    gw.start_worker()
    key = await gw.create_key("own-upstream", allow_upstream_override=True)
    for url in PRIVATE_URLS:
        headers = {**bearer(key), "X-OpenAI-Base-URL": url.format(port=theirs.port), "X-OpenAI-Key": USER_KEY}
        response = await gw.client.post(path, json=body, headers=headers)
        error = assert_openai_error(response, 400, "X-OpenAI-Base-URL")
        assert USER_KEY not in response.text, url
        assert error["type"] == "invalid_request_error"
    empty = await gw.client.post(path, json=body, headers={**bearer(key), "X-OpenAI-Base-URL": " "})
    assert_openai_error(empty, 400, "X-OpenAI-Base-URL")
    assert theirs.calls == 0


async def test_other_routes_do_not_take_the_override(
    gw: Gateway, key: str, standin: StandIn, theirs: StandIn
) -> None:
    """Only 004's routes document the headers; elsewhere the catalog routes the call."""
    gw.start_worker()
    headers = {**bearer(key), "X-OpenAI-Base-URL": theirs.base_url, "X-OpenAI-Key": USER_KEY}
    for path in ("/api/chat", "/v1/chat/completions"):
        response = await gw.client.post(path, json=chat_body("plain"), headers=headers)
        assert response.status_code == 200, response.text
    assert theirs.calls == 0 and standin.chat_calls == 2


async def test_the_flag_is_set_at_creation_by_the_api_and_the_cli(
    gw: Gateway, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    created = await gw.client.post(
        "/api/keys", json={"name": "flagged", "allow_upstream_override": True}, headers=admin_headers()
    )
    assert created.status_code == 201 and created.json()["allow_upstream_override"] is True
    plain = await gw.client.post("/api/keys", json={"name": "plain"}, headers=admin_headers())
    assert plain.json()["allow_upstream_override"] is False
    bad = await gw.client.post(
        "/api/keys", json={"name": "x", "allow_upstream_override": "yes"}, headers=admin_headers()
    )
    assert_openai_error(bad, 400, "allow_upstream_override")

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        assert await asyncio.to_thread(cli.main, ["keys", "create", "cli", "--allow-upstream-override"]) == 0
    finally:
        get_settings.cache_clear()
    cli_id = capsys.readouterr().out.split()[0]
    listed = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]
    flags = {k["name"]: k["allow_upstream_override"] for k in listed}
    assert flags == {"flagged": True, "plain": False, "cli": True}
    assert any(k["id"] == cli_id for k in listed)


class KeyQuotingUpstream(StandIn):
    """An upstream that refuses the key it was sent and quotes it whole in its error."""

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        if method == "POST":
            refused = self.authorizations[-1].removeprefix("Bearer ")
            error = {"error": {"message": f"Incorrect API key provided: {refused}"}}
            return 401, orjson.dumps(error), "application/json"
        return await super().handle(method, path, body)


@pytest.mark.parametrize(("path", "body"), OVERRIDE_ROUTES)
async def test_an_upstream_quoting_the_key_does_not_put_it_in_the_job(
    gw: Gateway, path: str, body: dict[str, Any]
) -> None:
    gw.start_worker()
    upstream = await KeyQuotingUpstream().start()
    upstream.record = True
    try:
        key = await gw.create_key("own-upstream", allow_upstream_override=True)
        headers = {**bearer(key), "X-OpenAI-Base-URL": upstream.base_url, "X-OpenAI-Key": USER_KEY}
        response = await gw.client.post(path, json=body, headers=headers)
        error = assert_openai_error(response, 502)
        assert "Incorrect API key provided: [redacted]" in error["message"]
        assert USER_KEY not in response.text
        job = await get_job(gw.client, key, response.headers["x-job-id"])
        assert job["status"] == "failed" and job["error"]["type"] == "provider_rejected"
        assert USER_KEY not in str(job)
        assert upstream.authorizations == [f"Bearer {USER_KEY}"]
    finally:
        await upstream.stop()
