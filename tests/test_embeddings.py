"""Embeddings: OpenAI's `/v1/embeddings` (and under `/openai/v1`) as jobs through the queue,
against stand-in providers over real HTTP: the documented shape, base64, `?batch=1`, the
usage and cost recorded, fallbacks, bad input, and the official `openai` client listing,
chatting, streaming and embedding over real HTTP."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchyard.standin import StandIn, standin_vector
from tests.conftest import Gateway, admin_headers, chat_body, get_job, wait_for_status
from tests.llm_support import (
    EMBED,
    EMBED_PRICE,
    assert_openai_error,
    bearer,
    usage_row,
    write_llm_providers,
)
from tests.test_chat import served_over_http


@pytest.fixture
async def backup() -> AsyncIterator[StandIn]:
    server = await StandIn().start()
    yield server
    await server.stop()


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn, backup: StandIn) -> Path:
    return write_llm_providers(
        tmp_path / "providers.toml", ("standin", standin.base_url), ("backup", backup.base_url)
    )


def floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
async def test_one_text_in_openai_shape(gw: Gateway, key: str, standin: StandIn, prefix: str) -> None:
    gw.start_worker()
    standin.record = True
    response = await gw.client.post(
        f"{prefix}/embeddings", json={"model": EMBED, "input": "hello embedding world"}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    vector = standin_vector("hello embedding world", 16)
    assert body == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": EMBED,
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    (sent,) = standin.requests
    assert sent["input"] == "hello embedding world" and sent["model"] == EMBED
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["kind"] == "embedding" and job["status"] == "succeeded"
    assert job["provider"] == "standin" and job["model"] == EMBED
    assert job["result"] == body
    row = await usage_row(gw.settings.database_url_or_default, job["id"])
    assert (row.kind, row.model, row.prompt_tokens, row.completion_tokens) == ("embedding", EMBED, 3, 0)
    assert row.estimated_cost == pytest.approx(3 * EMBED_PRICE / 1_000_000)


async def test_several_inputs_token_arrays_dimensions_and_base64(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    standin.record = True
    texts = ["first text", "second", "third one here"]
    listed = await gw.client.post(
        "/v1/embeddings", json={"model": EMBED, "input": texts, "dimensions": 40}, headers=bearer(key)
    )
    assert listed.status_code == 200, listed.text
    data = listed.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    assert [d["embedding"] for d in data] == [standin_vector(t, 40) for t in texts]
    assert listed.json()["usage"]["prompt_tokens"] == 6
    assert standin.requests[-1]["dimensions"] == 40

    tokens = await gw.client.post(
        "/v1/embeddings", json={"model": EMBED, "input": [[1, 2, 3], [4]]}, headers=bearer(key)
    )
    assert tokens.status_code == 200, tokens.text
    assert [d["embedding"] for d in tokens.json()["data"]] == [
        standin_vector("1 2 3", 16),
        standin_vector("4", 16),
    ]
    one_array = await gw.client.post(
        "/v1/embeddings", json={"model": EMBED, "input": [7, 8]}, headers=bearer(key)
    )
    assert one_array.status_code == 200, one_array.text
    assert len(one_array.json()["data"]) == 1

    encoded = await gw.client.post(
        "/v1/embeddings",
        json={"model": EMBED, "input": texts, "encoding_format": "base64"},
        headers=bearer(key),
    )
    assert encoded.status_code == 200, encoded.text
    vectors = [d["embedding"] for d in encoded.json()["data"]]
    assert all(isinstance(v, str) for v in vectors)
    assert [floats(v) for v in vectors] == [standin_vector(t, 16) for t in texts]
    # Providers are asked for floats whatever the caller wants; Switchyard encodes.
    assert standin.requests[-1]["encoding_format"] == "float"


async def test_batch_is_polled_to_the_synchronous_body(gw: Gateway, key: str) -> None:
    gw.start_worker()
    request = {"model": EMBED, "input": ["batch me", "and me"]}
    sync = await gw.client.post("/v1/embeddings", json=request, headers=bearer(key))
    assert sync.status_code == 200, sync.text
    submitted = await gw.client.post("/openai/v1/embeddings?batch=1", json=request, headers=bearer(key))
    assert submitted.status_code == 202, submitted.text
    data = submitted.json()  # an OpenAI-style job object on the OpenAI routes
    assert submitted.headers["location"] == data["url"]
    assert data["kind"] == "embedding" and data["priority"] == "batch"
    job = await wait_for_status(gw.client, key, data["id"], "succeeded")
    assert job["result"] == sync.json()


async def test_the_next_provider_serves_when_the_first_fails(
    gw: Gateway, key: str, standin: StandIn, backup: StandIn
) -> None:
    gw.start_worker()
    standin.status = 500
    response = await gw.client.post(
        "/v1/embeddings", json={"model": EMBED, "input": "fall back"}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["embedding"] == standin_vector("fall back", 16)
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["provider"] == "backup"
    assert job["attempts"] == gw.settings.provider_attempts + 1
    assert standin.embedding_calls == gw.settings.provider_attempts and backup.embedding_calls == 1


async def test_a_provider_refusal_fails_the_job_with_its_reason(gw: Gateway, key: str) -> None:
    gw.start_worker()
    response = await gw.client.post(
        "/v1/embeddings", json={"model": EMBED, "input": "[400] refuse me"}, headers=bearer(key)
    )
    error = assert_openai_error(response, 502)
    assert "stand-in says 400" in error["message"]
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "failed" and job["error"]["type"] == "provider_rejected"


BAD_INPUT: list[tuple[dict[str, Any], str]] = [
    ({"model": EMBED}, "input"),
    ({"model": EMBED, "input": ""}, "input"),
    ({"model": EMBED, "input": "   "}, "input"),
    ({"model": EMBED, "input": []}, "input"),
    ({"model": EMBED, "input": ["ok", ""]}, "input[1]"),
    ({"model": EMBED, "input": ["ok", 3]}, "input[1]"),
    ({"model": EMBED, "input": [1, -2]}, "input[1]"),
    ({"model": EMBED, "input": [[1], []]}, "input[1]"),
    ({"model": EMBED, "input": [[1], "text"]}, "input[1]"),
    ({"model": EMBED, "input": [{"text": "x"}]}, "input"),
    ({"model": EMBED, "input": 42}, "input"),
    ({"model": EMBED, "input": ["x"] * 2049}, "input"),
    ({"model": EMBED, "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"model": EMBED, "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": EMBED, "input": "x", "dimensions": "many"}, "dimensions"),
    ({"input": "x"}, "model"),
    ({"model": "", "input": "x"}, "model"),
    ({"model": 5, "input": "x"}, "model"),
]


@pytest.mark.parametrize(("body", "field"), BAD_INPUT)
async def test_bad_input_names_the_field(gw: Gateway, key: str, body: dict[str, Any], field: str) -> None:
    response = await gw.client.post("/v1/embeddings", json=body, headers=bearer(key))
    error = assert_openai_error(response, 400, field)
    assert error["type"] == "invalid_request_error"


async def test_malformed_bodies_are_400s(gw: Gateway, key: str) -> None:
    for content in (b"", b"{not json", b"[1, 2]"):
        response = await gw.client.post(
            "/v1/embeddings", content=content, headers={**bearer(key), "content-type": "application/json"}
        )
        assert_openai_error(response, 400, "body")
    anonymous = await gw.client.post("/v1/embeddings", json={"model": EMBED, "input": "x"})
    assert_openai_error(anonymous, 401)


async def test_models_of_the_wrong_type_and_unknown_models(gw: Gateway, key: str) -> None:
    chat_model = await gw.client.post(
        "/v1/embeddings", json={"model": "mock/echo", "input": "x"}, headers=bearer(key)
    )
    error = assert_openai_error(chat_model, 400, "model")
    assert "chat model" in error["message"] and "embedding" in error["message"]
    embed_for_chat = await gw.client.post(
        "/v1/chat/completions", json=chat_body(model=EMBED), headers=bearer(key)
    )
    assert_openai_error(embed_for_chat, 400, "model")
    unknown = await gw.client.post(
        "/v1/embeddings", json={"model": "mock/embedd", "input": "x"}, headers=bearer(key)
    )
    error = assert_openai_error(unknown, 404, "model")
    assert "mock/embed" in error["message"]  # the closest embedding model is suggested


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
async def test_the_official_openai_client_lists_chats_streams_and_embeds(
    gw: Gateway, key: str, standin: StandIn, prefix: str
) -> None:
    """The `openai` package against Switchyard served by uvicorn on loopback."""
    gw.start_worker()
    standin.record = True
    async with served_over_http(gw.settings) as url, httpx.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=url + prefix, api_key=key, http_client=http, max_retries=0)
        assert {m.id async for m in client.models.list()} == {"mock/echo", "mock/other", EMBED}

        completion = await client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "through the client"}]
        )
        assert completion.choices[0].message.content == "echo: through the client"

        stream = await client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "streamed words"}], stream=True
        )
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        assert len(pieces) > 1 and "".join(pieces) == "echo: streamed words"

        # Without encoding_format the client asks for base64 and decodes it itself.
        embedded = await client.embeddings.create(model=EMBED, input=["one text", "two more texts"])
        assert [d.embedding for d in embedded.data] == [
            standin_vector("one text", 16),
            standin_vector("two more texts", 16),
        ]
        assert embedded.model == EMBED and embedded.usage.prompt_tokens == 5
        as_floats = await client.embeddings.create(
            model=EMBED, input="short", encoding_format="float", dimensions=8
        )
        assert as_floats.data[0].embedding == standin_vector("short", 8)
        assert standin.requests[-1]["dimensions"] == 8

        with pytest.raises(openai.BadRequestError) as wrong_type:
            await client.embeddings.create(model="mock/echo", input="x")
        assert wrong_type.value.param == "model"
        with pytest.raises(openai.NotFoundError):
            await client.embeddings.create(model="no/such-embedder", input="x")


async def test_embedding_input_is_reserved_against_the_daily_token_limit(gw: Gateway) -> None:
    """The input's estimated tokens (about 4 bytes each) are reserved at admission."""
    created = await gw.client.post(
        "/api/keys", json={"name": "embed", "limits": {"daily_tokens": 50_000}}, headers=admin_headers()
    )
    secret = created.json()["key"]
    refused = await gw.client.post(
        "/v1/embeddings", json={"model": EMBED, "input": ["z" * 250_000]}, headers=bearer(secret)
    )
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "daily_tokens"
    fits = await gw.client.post(
        "/v1/embeddings?batch=1", json={"model": EMBED, "input": "z" * 4000}, headers=bearer(secret)
    )
    assert fits.status_code == 202, fits.text
    status = (await gw.client.get("/api/v1/status", headers=bearer(secret))).json()["data"]
    assert status["limits"]["daily"]["tokens"]["used"] == 1000
