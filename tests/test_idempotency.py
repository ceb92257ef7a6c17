"""`Idempotency-Key` (Stripe's semantics) on job-creating routes: a replay returns the original
job and its answer and charges nothing; another request with the key is a 422; concurrent
duplicates make one job; the key expires; keys of two API keys are independent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from switchyard.standin import StandIn
from tests.accounts_support import create_key_full
from tests.conftest import Gateway, chat_body, eventually, wait_for_status
from tests.llm_support import EMBED, write_llm_providers
from tests.test_chat import served_over_http
from tests.test_streaming import DONE, content_of, events_of


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn) -> Path:
    return write_llm_providers(tmp_path / "providers.toml", ("standin", standin.base_url))


def idem(key: str, idempotency_key: str, *, bearer: bool = False, **more: str) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}
    return {**auth, "Idempotency-Key": idempotency_key, **more}


async def job_ids(gw: Gateway, key: str) -> list[str]:
    response = await gw.client.get("/api/v1/jobs", params={"limit": 100}, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["data"]]


async def test_a_synchronous_call_sent_twice_makes_one_job_charges_once_and_answers_the_same(
    gw: Gateway, standin: StandIn
) -> None:
    gw.start_worker()
    account = await create_key_full(gw.client, name="payer", credits=10)
    key = account["key"]
    body = chat_body("only once please")
    first = await gw.client.post("/api/v1/chat", json=body, headers=idem(key, "order-1", bearer=True))
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    assert first.json()["credits_remaining"] == 9

    again = await gw.client.post("/api/v1/chat", json=body, headers=idem(key, "order-1", bearer=True))
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["x-job-id"] == first.headers["x-job-id"]
    assert again.json() == first.json()  # the same answer, credits_remaining included
    assert standin.chat_calls == 1
    assert await job_ids(gw, key) == [first.headers["x-job-id"]]

    # nothing was charged for the replay: the next new call leaves 8, not 7
    other = await gw.client.post("/api/v1/chat", json=body, headers={"Authorization": f"Bearer {key}"})
    assert other.json()["credits_remaining"] == 8


async def test_a_batch_submission_sent_twice_is_the_same_202_job(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    body = chat_body("batch once")
    first = await gw.client.post("/api/v1/completion?batch=1", json=body, headers=idem(key, "b-1"))
    again = await gw.client.post("/api/v1/completion?batch=1", json=body, headers=idem(key, "b-1"))
    assert first.status_code == again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    job_id = first.json()["data"]["job_id"]
    assert again.json()["data"]["job_id"] == job_id
    assert again.headers["location"] == first.headers["location"]
    assert again.json()["data"]["job"] == first.json()["data"]["job"]  # still queued: the same body

    gw.start_worker()
    await wait_for_status(gw.client, key, job_id, "succeeded")
    assert standin.chat_calls == 1
    assert await job_ids(gw, key) == [job_id]
    # a replay once it is over: the same job, now with its result
    later = await gw.client.post("/api/v1/completion?batch=1", json=body, headers=idem(key, "b-1"))
    assert later.status_code == 202 and later.json()["data"]["job"]["status"] == "succeeded"
    assert later.json()["data"]["job_id"] == job_id


@pytest.mark.parametrize(
    ("route", "bearer", "second_route", "second_body"),
    [
        ("/api/v1/completion", False, "/api/v1/completion", chat_body("another body")),
        ("/v1/chat/completions", True, "/v1/chat/completions", chat_body("another body")),
        ("/v1/chat/completions", True, "/v1/chat/completions?batch=1", chat_body("same body")),
        ("/v1/chat/completions", True, "/openai/v1/chat/completions", chat_body("same body")),
    ],
)
async def test_the_key_with_another_request_is_a_422_naming_the_header(
    gw: Gateway, key: str, standin: StandIn, route: str, bearer: bool, second_route: str, second_body: Any
) -> None:
    gw.start_worker()
    first = await gw.client.post(route, json=chat_body("same body"), headers=idem(key, "k", bearer=bearer))
    assert first.status_code == 200, first.text
    other = await gw.client.post(second_route, json=second_body, headers=idem(key, "k", bearer=bearer))
    assert other.status_code == 422, other.text
    error = other.json()
    if bearer:  # OpenAI's error object
        assert error["error"]["param"] == "Idempotency-Key"
        assert error["error"]["type"] == "idempotency_error"
        assert "Idempotency-Key" in error["error"]["message"]
    else:  # the native shape
        assert error["success"] is False and error["details"][0]["field"] == "Idempotency-Key"
    assert standin.chat_calls == 1
    assert len(await job_ids(gw, key)) == 1


async def test_twenty_concurrent_duplicates_make_exactly_one_job(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    body = chat_body("[sleep:0.3] twenty at once")
    responses = await asyncio.gather(
        *(
            gw.client.post("/v1/chat/completions", json=body, headers=idem(key, "dup", bearer=True))
            for _ in range(20)
        )
    )
    assert [r.status_code for r in responses] == [200] * 20, [
        r.text for r in responses if r.status_code != 200
    ]
    ids = {r.headers["x-job-id"] for r in responses}
    assert len(ids) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19
    assert len({r.content for r in responses}) == 1  # the same answer for all
    assert standin.chat_calls == 1
    assert await job_ids(gw, key) == list(ids)


async def test_concurrent_batch_duplicates_make_exactly_one_job(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    body = chat_body("twenty batch")
    responses = await asyncio.gather(
        *(
            gw.client.post("/api/v1/completion?batch=1", json=body, headers=idem(key, "dupb"))
            for _ in range(20)
        )
    )
    assert {r.status_code for r in responses} == {202}
    ids = {r.json()["data"]["job_id"] for r in responses}
    assert len(ids) == 1
    gw.start_worker()
    await wait_for_status(gw.client, key, ids.pop(), "succeeded")
    assert standin.chat_calls == 1 and len(await job_ids(gw, key)) == 1


@pytest.mark.settings(SWITCHYARD_IDEMPOTENCY_TTL_S="0.4")
async def test_the_key_expires_after_its_ttl(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    body = chat_body("expiring")
    first = await gw.client.post("/api/v1/completion", json=body, headers=idem(key, "short"))
    soon = await gw.client.post("/api/v1/completion", json=body, headers=idem(key, "short"))
    assert soon.headers["x-job-id"] == first.headers["x-job-id"]
    await asyncio.sleep(0.6)
    later = await gw.client.post("/api/v1/completion", json=body, headers=idem(key, "short"))
    assert later.status_code == 200
    assert later.headers["x-job-id"] != first.headers["x-job-id"]
    assert "idempotent-replayed" not in later.headers
    assert standin.chat_calls == 2
    # and after expiry the key may carry another request
    await asyncio.sleep(0.6)
    other = await gw.client.post("/api/v1/completion", json=chat_body("new"), headers=idem(key, "short"))
    assert other.status_code == 200


async def test_two_api_keys_with_the_same_idempotency_key_are_independent(
    gw: Gateway, standin: StandIn
) -> None:
    gw.start_worker()
    alice, bob = await gw.create_key("alice"), await gw.create_key("bob")
    a = await gw.client.post("/api/v1/completion", json=chat_body("from alice"), headers=idem(alice, "same"))
    b = await gw.client.post("/api/v1/completion", json=chat_body("from bob"), headers=idem(bob, "same"))
    assert a.status_code == b.status_code == 200
    assert a.headers["x-job-id"] != b.headers["x-job-id"]
    assert "idempotent-replayed" not in b.headers
    assert a.json()["data"]["choices"][0]["message"]["content"] == "echo: from alice"
    assert b.json()["data"]["choices"][0]["message"]["content"] == "echo: from bob"
    assert standin.chat_calls == 2


async def test_a_failed_job_replays_its_error_without_running_again(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    body = chat_body("[400] refused upstream")
    first = await gw.client.post("/api/v1/completion", json=body, headers=idem(key, "fails"))
    again = await gw.client.post("/api/v1/completion", json=body, headers=idem(key, "fails"))
    assert first.status_code == again.status_code and first.status_code >= 400
    assert again.json() == first.json()
    assert again.headers["x-job-id"] == first.headers["x-job-id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert standin.chat_calls == 1


async def test_a_replay_read_from_the_database_once_redis_let_the_job_go(
    gw: Gateway, key: str, standin: StandIn, redis_url: str
) -> None:
    gw.start_worker()
    body = chat_body("kept in the database")
    first = await gw.client.post("/api/v1/completion", json=body, headers=idem(key, "db"))
    job_id = first.headers["x-job-id"]
    r = aioredis.Redis.from_url(redis_url)
    try:
        await eventually(lambda: _persisted(r, job_id), what="the job persisted")
        await r.delete(f"sy:job:{job_id}")
    finally:
        await r.aclose()
    again = await gw.client.post("/api/v1/completion", json=body, headers=idem(key, "db"))
    assert again.status_code == 200, again.text
    assert again.headers["x-job-id"] == job_id
    assert again.json()["data"] == first.json()["data"]
    assert standin.chat_calls == 1


async def _persisted(r: aioredis.Redis, job_id: str) -> bool:
    return not await r.zscore(f"sy:owner:{(await r.hget(f'sy:job:{job_id}', 'owner')).decode()}", job_id)


async def test_a_streamed_call_replays_as_the_same_event_stream(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    body = chat_body("[gap:0.05] stream me once", stream=True)
    headers = idem(key, "stream-1", bearer=True)
    async with served_over_http(gw.settings) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:

        async def call() -> tuple[Any, list[Any]]:
            async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                return response, await events_of(response)

        # a replay while the first still streams reads the stream from its start
        (first, first_events), (during, during_events) = await asyncio.gather(call(), _later(call, 0.05))
        after, after_events = await call()  # and once it is over, the completion as one chunk
    assert first.status_code == during.status_code == after.status_code == 200
    assert first.headers["x-job-id"] == during.headers["x-job-id"] == after.headers["x-job-id"]
    assert during.headers["idempotent-replayed"] == after.headers["idempotent-replayed"] == "true"
    text = "echo: [gap:0.05] stream me once"
    assert content_of(first_events) == content_of(during_events) == content_of(after_events) == text
    assert first_events[-1] == during_events[-1] == after_events[-1] == DONE
    assert standin.stream_calls == 1


async def _later(call: Any, delay: float) -> Any:
    await asyncio.sleep(delay)
    return await call()


@pytest.mark.parametrize("value", ["", "x" * 256, "tab\there", "caf\u00e9"])
async def test_a_bad_idempotency_key_is_a_400_naming_the_header(
    gw: Gateway, key: str, standin: StandIn, value: str
) -> None:
    response = await gw.client.post(
        "/v1/chat/completions",
        json=chat_body("bad key"),
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": value.encode("latin-1")},  # type: ignore[dict-item]
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "Idempotency-Key"
    assert standin.chat_calls == 0
    assert await job_ids(gw, key) == []


async def test_the_longest_key_is_accepted(gw: Gateway, key: str) -> None:
    gw.start_worker()
    longest = "~" * 255
    first = await gw.client.post("/api/v1/completion", json=chat_body("long"), headers=idem(key, longest))
    again = await gw.client.post("/api/v1/completion", json=chat_body("long"), headers=idem(key, longest))
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"


async def test_an_embedding_call_replays_too(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    body = {"model": EMBED, "input": ["one", "two"]}
    first = await gw.client.post("/v1/embeddings", json=body, headers=idem(key, "e", bearer=True))
    again = await gw.client.post("/v1/embeddings", json=body, headers=idem(key, "e", bearer=True))
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert standin.embedding_calls == 1


async def test_a_replay_whose_wait_bound_passes_answers_202_with_the_running_job(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    body = chat_body("[sleep:1] slow one")
    first = asyncio.ensure_future(gw.client.post("/api/v1/completion", json=body, headers=idem(key, "slow")))
    await eventually(lambda: _chat_started(standin), what="the provider to be called")
    again = await gw.client.post(
        "/api/v1/completion", json=body, headers=idem(key, "slow", Prefer="wait=0.1")
    )
    assert again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["data"]["status"] == "running"
    done = await first
    assert done.status_code == 200 and again.json()["data"]["job_id"] == done.headers["x-job-id"]
    assert standin.chat_calls == 1


async def _chat_started(standin: StandIn) -> bool:
    return standin.chat_calls == 1
