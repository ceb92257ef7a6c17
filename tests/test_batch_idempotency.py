"""`Idempotency-Key` on `POST /v1/batches` and `POST /v1/files`: the same request again is the
first batch (or file), another request with the key is the 422 the job routes give, concurrent
duplicates make one batch, and a key names a file and a batch independently."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchyard.standin import StandIn
from tests.conftest import Gateway, write_providers
from tests.test_batch_api import HIGH_LIMITS, chat_line, jsonl, sdk, settled


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn) -> Path:
    return write_providers(
        tmp_path / "providers.toml",
        [{"name": "standin", "kind": "openai", "base_url": standin.base_url, "models": ["mock/echo"]}],
    )


@pytest.fixture
async def key(gw: Gateway) -> str:
    return await gw.create_key("idem", limits=HIGH_LIMITS)


def headers(key: str, idempotency_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}


async def upload(gw: Gateway, key: str, data: bytes, idempotency_key: str | None = None) -> httpx.Response:
    more = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return await gw.client.post(
        "/v1/files",
        files={"file": ("requests.jsonl", data, "application/jsonl")},
        data={"purpose": "batch"},
        headers={"Authorization": f"Bearer {key}", **more},
    )


async def batch_ids(gw: Gateway, key: str) -> list[str]:
    response = await gw.client.get("/v1/batches", headers={"Authorization": f"Bearer {key}"})
    return [b["id"] for b in response.json()["data"]]


def create_body(file_id: str, **more: Any) -> dict[str, Any]:
    return {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **more}


async def test_the_same_batch_request_twice_is_the_first_batch(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    file_id = (await upload(gw, key, jsonl([chat_line("one", "hello")]))).json()["id"]
    first = await gw.client.post("/v1/batches", json=create_body(file_id), headers=headers(key, "nightly"))
    again = await gw.client.post("/v1/batches", json=create_body(file_id), headers=headers(key, "nightly"))
    assert first.status_code == again.status_code == 200, again.text
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert await batch_ids(gw, key) == [first.json()["id"]]

    gw.start_worker("batch")
    await settled(sdk(gw, key), first.json()["id"], "completed")
    later = await gw.client.post("/v1/batches", json=create_body(file_id), headers=headers(key, "nightly"))
    assert later.json()["id"] == first.json()["id"] and later.json()["status"] == "completed"
    assert standin.chat_calls == 1

    # another body with the key: 422 naming the header, in OpenAI's shape; no batch is made
    other = await gw.client.post(
        "/v1/batches", json=create_body(file_id, metadata={"run": "2"}), headers=headers(key, "nightly")
    )
    assert other.status_code == 422, other.text
    assert other.json()["error"]["param"] == "Idempotency-Key"
    assert other.json()["error"]["type"] == "idempotency_error"
    assert await batch_ids(gw, key) == [first.json()["id"]]


async def test_concurrent_duplicates_make_one_batch(gw: Gateway, key: str) -> None:
    file_id = (await upload(gw, key, jsonl([chat_line("one", "hello")]))).json()["id"]
    responses = await asyncio.gather(
        *(
            gw.client.post("/v1/batches", json=create_body(file_id), headers=headers(key, "dup"))
            for _ in range(12)
        )
    )
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 11
    assert await batch_ids(gw, key) == list(ids)


async def test_two_keys_with_the_same_idempotency_key_make_two_batches(gw: Gateway, key: str) -> None:
    other = await gw.create_key("other", limits=HIGH_LIMITS)
    mine = (await upload(gw, key, jsonl([chat_line("one", "hi")]))).json()["id"]
    theirs = (await upload(gw, other, jsonl([chat_line("one", "hi")]))).json()["id"]
    a = await gw.client.post("/v1/batches", json=create_body(mine), headers=headers(key, "same"))
    b = await gw.client.post("/v1/batches", json=create_body(theirs), headers=headers(other, "same"))
    assert a.status_code == b.status_code == 200
    assert a.json()["id"] != b.json()["id"] and "idempotent-replayed" not in b.headers


async def test_an_upload_sent_again_is_the_first_file(gw: Gateway, key: str) -> None:
    data = jsonl([chat_line("one", "hello")])
    first = await upload(gw, key, data, "upload-1")
    again = await upload(gw, key, data, "upload-1")
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    listed = await gw.client.get("/v1/files", headers={"Authorization": f"Bearer {key}"})
    assert [f["id"] for f in listed.json()["data"]] == [first.json()["id"]]

    changed = await upload(gw, key, jsonl([chat_line("one", "changed")]), "upload-1")
    assert changed.status_code == 422 and changed.json()["error"]["param"] == "Idempotency-Key"
    listed = await gw.client.get("/v1/files", headers={"Authorization": f"Bearer {key}"})
    assert [f["id"] for f in listed.json()["data"]] == [first.json()["id"]]

    # the same key on the batch made of that file is a key of its own
    batch = await gw.client.post(
        "/v1/batches", json=create_body(first.json()["id"]), headers=headers(key, "upload-1")
    )
    assert batch.status_code == 200 and "idempotent-replayed" not in batch.headers


async def test_a_bad_idempotency_key_is_a_400(gw: Gateway, key: str) -> None:
    file_id = (await upload(gw, key, jsonl([chat_line("one", "hello")]))).json()["id"]
    response = await gw.client.post("/v1/batches", json=create_body(file_id), headers=headers(key, "x" * 300))
    assert response.status_code == 400 and response.json()["error"]["param"] == "Idempotency-Key"
    response = await upload(gw, key, b"{}\n", "tab\there")
    assert response.status_code == 400 and response.json()["error"]["param"] == "Idempotency-Key"
