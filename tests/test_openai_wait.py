"""OpenAI's routes never answer a 202 job body to a client that did not ask for one: the
official SDK reads it as a completion with `choices=None`, and a stream as no chunks.

Without `Prefer: wait=N` or `?batch=1`, a call on `/v1/...` or `/openai/v1/...` waits up to the
job timeout + 5 s (past the sync timeout), then answers a 504 in OpenAI's error shape with the
job's id (`x-job-id`) and `x-should-retry: false`. Against a slow loopback provider, with the
official `openai` SDK and with raw httpx, over real HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from switchyard.standin import StandIn
from tests.conftest import Gateway, chat_body, wait_for_status
from tests.llm_support import EMBED, bearer, write_llm_providers
from tests.test_chat import served_over_http

# The sync timeout is far below the job's: a job slower than the former is still awaited on
# OpenAI's routes. JOB 3 > PROVIDER 1 x 2 attempts + backoff (settings_problems).
pytestmark = pytest.mark.settings(
    SWITCHYARD_SYNC_TIMEOUT_S="0.3", SWITCHYARD_JOB_TIMEOUT_S="3", SWITCHYARD_PROVIDER_TIMEOUT_S="1"
)
OPENAI_WAIT_S = 3 + 5  # the job timeout + 5 s


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn) -> Path:
    return write_llm_providers(tmp_path / "providers.toml", ("standin", standin.base_url))


@pytest.fixture
async def base_url(gw: Gateway) -> AsyncIterator[str]:
    async with served_over_http(gw.settings) as url:
        yield url


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
async def test_a_call_slower_than_the_sync_timeout_gets_its_answer(
    gw: Gateway, key: str, base_url: str, prefix: str
) -> None:
    gw.start_worker()
    slow = "[sleep:0.8] slow"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        raw = await http.post(f"{prefix}/chat/completions", json=chat_body(slow), headers=bearer(key))
        assert raw.status_code == 200, raw.text
        assert raw.json()["choices"][0]["message"]["content"] == "echo: " + slow
        embedded = await http.post(
            f"{prefix}/embeddings", json={"model": EMBED, "input": slow}, headers=bearer(key)
        )
        assert embedded.status_code == 200, embedded.text
        assert embedded.json()["object"] == "list" and embedded.json()["data"][0]["embedding"]

        client = openai.AsyncOpenAI(base_url=base_url + prefix, api_key=key, http_client=http)
        completion = await client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": slow}]
        )
        assert completion.choices is not None and completion.choices[0].message.content == "echo: " + slow
        stream = await client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": slow}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "echo: " + slow


async def test_prefer_wait_and_batch_still_get_the_202_job(gw: Gateway, key: str, base_url: str) -> None:
    gw.start_worker()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        slow = chat_body("[sleep:0.8] later")
        preferred = await http.post(
            "/v1/chat/completions", json=slow, headers={**bearer(key), "Prefer": "wait=0.1"}
        )
        assert preferred.status_code == 202, preferred.text
        streamed = await http.post(
            "/v1/chat/completions",
            json={**slow, "stream": True},
            headers={**bearer(key), "Prefer": "wait=0.1"},
        )
        assert streamed.status_code == 202, streamed.text
        batch = await http.post("/v1/chat/completions?batch=1", json=slow, headers=bearer(key))
        assert batch.status_code == 202, batch.text
        for response in (preferred, streamed, batch):  # OpenAI-style job objects on these routes
            assert (
                response.json()["object"] == "job" and response.headers["location"] == response.json()["url"]
            )
            await wait_for_status(gw.client, key, response.json()["id"], "succeeded")


async def test_a_job_that_outlives_the_job_timeout_is_an_openai_504_with_its_id(
    gw: Gateway, key: str, base_url: str, standin: StandIn
) -> None:
    """No worker runs: the jobs stay queued. Each OpenAI-shaped call waits the job timeout + 5 s
    (not the 0.3 s sync timeout), then answers 504 in OpenAI's shape; the SDK raises (and does
    not retry, as `x-should-retry: false` asks); a stream answers its 504 before any chunk."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=key, http_client=http, max_retries=2)

        async def sdk_call() -> openai.APIStatusError:
            with pytest.raises(openai.APIStatusError) as raised:
                await client.chat.completions.create(
                    model="mock/echo", messages=[{"role": "user", "content": "sdk"}]
                )
            return raised.value

        async def sdk_stream() -> openai.APIStatusError:
            with pytest.raises(openai.APIStatusError) as raised:
                stream = await client.chat.completions.create(
                    model="mock/echo", messages=[{"role": "user", "content": "sdk stream"}], stream=True
                )
                async for _ in stream:
                    pass
            return raised.value

        started = time.monotonic()
        raw, raw_prefixed, raw_stream, raw_embedding, sdk, sdk_streamed = await asyncio.gather(
            http.post("/v1/chat/completions", json=chat_body("raw"), headers=bearer(key)),
            http.post("/openai/v1/chat/completions", json=chat_body("prefixed"), headers=bearer(key)),
            http.post("/v1/chat/completions", json=chat_body("stream", stream=True), headers=bearer(key)),
            http.post("/v1/embeddings", json={"model": EMBED, "input": "e"}, headers=bearer(key)),
            sdk_call(),
            sdk_stream(),
        )
        elapsed = time.monotonic() - started
    assert OPENAI_WAIT_S - 0.5 <= elapsed < OPENAI_WAIT_S + 5, elapsed
    job_ids = set()
    for response in (raw, raw_prefixed, raw_stream, raw_embedding):
        assert response.status_code == 504, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["x-should-retry"] == "false"
        error = response.json()["error"]
        assert error["type"] == "timeout" and error["code"] == "job_still_running"
        job_id = response.headers["x-job-id"]
        assert job_id in error["message"]
        job_ids.add(job_id)
    for exc in (sdk, sdk_streamed):
        assert exc.status_code == 504
        assert exc.response.headers["x-job-id"]
        job_ids.add(exc.response.headers["x-job-id"])
    # One job per call: the SDK did not retry. Each job goes on and is there to poll.
    listed = (await gw.client.get("/api/v1/jobs?limit=50", headers={"X-API-Key": key})).json()["data"]
    assert {job["id"] for job in listed} == job_ids and len(job_ids) == 6
    gw.start_worker()
    for job_id in job_ids:
        await wait_for_status(gw.client, key, job_id, "succeeded")
