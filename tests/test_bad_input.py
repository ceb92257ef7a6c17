"""Bad input gets a 400 (or 404, 413) that names the field and the reason, in the error shape of
the dialect that was called, and never becomes a job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Gateway, chat_body

ROUTES = {
    "native": "/api/v1/completion",
    "credits": "/api/v1/chat",
    "openai": "/v1/chat/completions",
}


def auth(dialect: str, key: str) -> dict[str, str]:
    return {"X-API-Key": key} if dialect == "native" else {"Authorization": f"Bearer {key}"}


def assert_error(dialect: str, response: Any, status: int, field: str | None = None) -> str:
    """Checks the dialect's error shape; returns the error message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if dialect == "native":
        assert body["success"] is False
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["message"], str) and body["message"]
        assert isinstance(body["details"], list)
        if field is not None:
            assert body["details"], body
            assert body["details"][0]["field"] == field
            assert body["details"][0]["message"]
        return str(body["message"])
    if dialect == "credits":
        assert isinstance(body["error"], str) and body["error"]
        if field is not None:
            assert body["error"].startswith(f"{field}: "), body
        return str(body["error"])
    error = body["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    if field is not None:
        assert error["param"] == field
        assert error["type"] == "invalid_request_error"
    return str(error["message"])


def msg(role: str = "user", content: Any = "hi") -> dict[str, Any]:
    return {"role": role, "content": content}


# (description, body, field named in the error)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("missing model", {"messages": [msg()]}, "model"),
    ("empty model", {"model": "", "messages": [msg()]}, "model"),
    ("model not a string", {"model": 42, "messages": [msg()]}, "model"),
    ("missing messages", {"model": "mock/echo"}, "messages"),
    ("empty messages", {"model": "mock/echo", "messages": []}, "messages"),
    ("messages not a list", {"model": "mock/echo", "messages": "hi"}, "messages"),
    ("bad role", {"model": "mock/echo", "messages": [msg("wizard")]}, "messages[0].role"),
    ("missing role", {"model": "mock/echo", "messages": [msg(), {"content": "x"}]}, "messages[1].role"),
    ("message not an object", {"model": "mock/echo", "messages": ["hi"]}, "messages[0]"),
    ("temperature too high", chat_body(temperature=2.5), "temperature"),
    ("temperature negative", chat_body(temperature=-0.1), "temperature"),
    ("temperature not a number", chat_body(temperature="hot"), "temperature"),
    ("top_p above 1", chat_body(top_p=1.5), "top_p"),
    ("max_tokens zero", chat_body(max_tokens=0), "max_tokens"),
    ("max_tokens not an integer", chat_body(max_tokens=1.5), "max_tokens"),
    ("n zero", chat_body(n=0), "n"),
    ("n too high", chat_body(n=11), "n"),
    ("top_k zero", chat_body(top_k=0), "top_k"),
    ("top_k too high", chat_body(top_k=101), "top_k"),
    ("presence_penalty too high", chat_body(presence_penalty=2.5), "presence_penalty"),
    ("frequency_penalty too low", chat_body(frequency_penalty=-3), "frequency_penalty"),
    ("too many stop sequences", chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("top_logprobs too high", chat_body(top_logprobs=21), "top_logprobs"),
    ("repetition_penalty too low", chat_body(repetition_penalty=0.01), "repetition_penalty"),
    ("stream not a boolean", chat_body(stream="yes"), "stream"),
]


@pytest.fixture
async def gw_with_worker(gw: Gateway) -> AsyncIterator[Gateway]:
    gw.start_worker()
    yield gw


@pytest.mark.parametrize("dialect", list(ROUTES))
async def test_invalid_fields_are_400_naming_the_field(
    gw_with_worker: Gateway, key: str, dialect: str
) -> None:
    gw = gw_with_worker
    for description, body, field in INVALID:
        response = await gw.client.post(ROUTES[dialect], json=body, headers=auth(dialect, key))
        message = assert_error(dialect, response, 400, field)
        assert field.split("[")[0] in message, (description, message)
    # None of them became a job.
    listing = await gw.client.get("/api/v1/jobs", headers={"X-API-Key": key})
    assert listing.json()["data"] == []


NOT_AN_OBJECT: list[tuple[bytes, str]] = [
    (b'{"model": "mock/echo", "messages": [', "malformed JSON"),
    (b"{'model': 'single quotes'}", "malformed JSON"),
    (b"", "JSON object is required"),
    (b"   ", "JSON object is required"),
    (b'[{"model": "mock/echo"}]', "must be a JSON object"),
    (b'"just a string"', "must be a JSON object"),
]


@pytest.mark.parametrize("dialect", list(ROUTES))
async def test_a_body_that_is_not_a_json_object_is_400_naming_body(
    gw: Gateway, key: str, dialect: str
) -> None:
    headers = {**auth(dialect, key), "content-type": "application/json"}
    for content, reason in NOT_AN_OBJECT:
        response = await gw.client.post(ROUTES[dialect], content=content, headers=headers)
        message = assert_error(dialect, response, 400, "body")
        assert reason in message, (content, message)


async def test_native_max_tokens_cap(gw_with_worker: Gateway) -> None:
    gw = gw_with_worker
    key = await gw.create_key("big", limits={"max_tokens_per_request": 100_000})
    over = await gw.client.post(
        "/api/v1/completion", json=chat_body(max_tokens=32769), headers={"X-API-Key": key}
    )
    message = assert_error("native", over, 400, "max_tokens")
    assert "32768" in message
    at_cap = await gw.client.post(
        "/api/v1/completion", json=chat_body(max_tokens=32768), headers={"X-API-Key": key}
    )
    assert at_cap.status_code == 200, at_cap.text


async def test_a_key_s_per_request_token_cap(gw_with_worker: Gateway, key: str) -> None:
    """api-reference 000: max tokens per request is configurable per key, 4000 by default."""
    gw = gw_with_worker
    over = await gw.client.post(
        "/api/v1/completion", json=chat_body(max_tokens=4001), headers={"X-API-Key": key}
    )
    assert "4000" in assert_error("native", over, 400, "max_tokens")
    ok = await gw.client.post(
        "/api/v1/completion", json=chat_body(max_tokens=4000), headers={"X-API-Key": key}
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("dialect", list(ROUTES))
async def test_unknown_model_is_404(gw: Gateway, key: str, dialect: str) -> None:
    response = await gw.client.post(
        ROUTES[dialect], json=chat_body(model="nobody/serves-this"), headers=auth(dialect, key)
    )
    message = assert_error(dialect, response, 404)
    assert message == "Model 'nobody/serves-this' not found"
    if dialect == "openai":
        assert response.json()["error"]["param"] == "model"
    if dialect == "native":
        assert response.json()["details"][0]["field"] == "model"


@pytest.mark.settings(SWITCHYARD_MAX_BODY_BYTES="2000")
@pytest.mark.parametrize("dialect", list(ROUTES))
async def test_body_over_the_limit_is_413(gw_with_worker: Gateway, key: str, dialect: str) -> None:
    gw = gw_with_worker
    big = chat_body("x" * 5000)
    response = await gw.client.post(ROUTES[dialect], json=big, headers=auth(dialect, key))
    message = assert_error(dialect, response, 413)
    assert "larger than the limit" in message
    small = await gw.client.post(ROUTES[dialect], json=chat_body("fits"), headers=auth(dialect, key))
    assert small.status_code == 200, small.text


@pytest.mark.settings(SWITCHYARD_MAX_BODY_BYTES="2000")
async def test_chunked_body_over_the_limit_is_413(gw: Gateway, key: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "mock/echo", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}]}'

    response = await gw.client.post(
        "/api/v1/completion", content=chunks(), headers={"X-API-Key": key, "content-type": "application/json"}
    )
    assert_error("native", response, 413)


async def test_jobs_api_rejects_bad_parameters(gw: Gateway, key: str) -> None:
    headers = {"X-API-Key": key}
    for params, field in [
        ({"status": "exploded"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "!!not-a-cursor!!"}, "cursor"),
    ]:
        response = await gw.client.get("/api/v1/jobs", params=params, headers=headers)
        assert_error("native", response, 400, field)
