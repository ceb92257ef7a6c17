"""cloudgpt's `POST /api/chat` (api-reference 001) and 004's `/api/llm/generate/`,
`/api/llm/instruct/` and `/api/embedding/`, against stand-in providers over real HTTP: each
route's documented shape, `?batch=1` polled to the same body, defaults, and bad input in the
dialect's error shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchyard.standin import StandIn, standin_vector
from tests.conftest import Gateway, chat_body, get_job, wait_for_status
from tests.llm_support import EMBED, assert_openai_error, bearer, write_llm_providers

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
