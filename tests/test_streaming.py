"""`"stream": true`: Server-Sent Events in OpenAI's chunk format, relayed from the provider by
the worker through the job's Redis stream, over real HTTP (uvicorn on loopback, so a client
that goes away really disconnects), and through the official `openai` client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from jobs.streams import stream_key
from switchyard.standin import StandIn
from tests.conftest import Gateway, chat_body, eventually, get_job, wait_for_status
from tests.test_chat import served_over_http
from workers.http import POOL_SHARDS

ROUTES = {
    "native": "/api/v1/completion",
    "openai": "/v1/chat/completions",
    "openai-prefixed": "/openai/v1/chat/completions",
    "cloudgpt": "/api/chat",
}
DONE = "[DONE]"


def auth(route: str, key: str) -> dict[str, str]:
    return {"X-API-Key": key} if route == "native" else {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def base_url(gw: Gateway) -> AsyncIterator[str]:
    gw.start_worker()
    async with served_over_http(gw.settings) as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
        yield client


async def events_of(response: httpx.Response) -> list[Any]:
    """The `data:` payloads of an event stream, decoded (`[DONE]` as the string)."""
    out: list[Any] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(DONE if data == DONE else orjson.loads(data))
        else:
            assert line == "", f"unexpected line in the stream: {line!r}"
    return out


async def stream(
    http: httpx.AsyncClient, route: str, key: str, body: dict[str, Any], **params: str
) -> tuple[httpx.Response, list[Any]]:
    async with http.stream(
        "POST", ROUTES[route], json=body, headers=auth(route, key), params=params
    ) as response:
        if response.status_code != 200:
            await response.aread()
            return response, []
        return response, await events_of(response)


def content_of(chunks: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in chunks
        if isinstance(c, dict) and c.get("choices")
    )


# --- the happy path on every route ----------------------------------------------------------------
@pytest.mark.parametrize("route", list(ROUTES))
async def test_each_route_streams_openai_chunks_ending_with_done(
    gw: Gateway, http: httpx.AsyncClient, key: str, standin: StandIn, route: str
) -> None:
    text = "stream me three words"
    response, events = await stream(http, route, key, chat_body(text, stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    job_id = response.headers["x-job-id"]
    assert events[-1] == DONE and events.count(DONE) == 1
    chunks = events[:-1]
    assert len(chunks) == 2 + len(f"echo: {text}".split())  # role, one per word, finish
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "mock/echo"
        assert chunk["id"] == chunks[0]["id"]
        assert isinstance(chunk["created"], int)
        assert "usage" not in chunk  # not asked for
        assert [c["index"] for c in chunk["choices"]] == [0]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert content_of(chunks) == f"echo: {text}"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert standin.stream_calls == 1

    # The job is an ordinary job: succeeded, its result the completion the same call without
    # `stream` would have answered.
    job = await wait_for_status(gw.client, key, job_id, "succeeded")  # [DONE] may beat the finish
    assert job["status"] == "succeeded" and job["priority"] == "interactive"
    assert job["provider"] == "standin" and job["attempts"] == 1
    completion = job["result"]["data"] if route == "native" else job["result"]
    assert completion["object"] == "chat.completion"
    assert completion["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": f"echo: {text}"}, "finish_reason": "stop"}
    ]
    assert completion["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}


async def test_include_usage_adds_openai_s_usage_chunk_and_usage_is_recorded(
    gw: Gateway, http: httpx.AsyncClient, standin: StandIn
) -> None:
    standin.record = True
    key = await gw.create_key("usage", credits=10)
    body = chat_body("count my tokens", stream=True, stream_options={"include_usage": True})
    response, events = await stream(http, "openai", key, body)
    assert response.status_code == 200
    assert events[-1] == DONE
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert usage_chunk["id"] == events[0]["id"] and usage_chunk["model"] == "mock/echo"
    assert all("usage" not in e for e in events[:-2])
    # Upstream is always asked for usage (to record it), and our own fields stay here.
    (sent,) = standin.requests
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}

    # Without include_usage the client gets no usage chunk, yet the usage is recorded all the same.
    plain, plain_events = await stream(http, "native", key, chat_body("two more", stream=True))
    assert plain.status_code == 200 and all(e == DONE or e["choices"] for e in plain_events)

    async def status() -> dict[str, Any] | None:
        r = await gw.client.get("/api/v1/status", headers={"X-API-Key": key})
        data = r.json()["data"]
        return data if data["usage"]["today"]["requests"] >= 2 else None

    data = await eventually(status, what="two usage rows")
    # "two more": 2 prompt tokens, 3 completion tokens ("echo: two more").
    assert data["usage"]["today"]["total_tokens"] == 7 + 5
    assert data["usage"]["today"]["successful_requests"] == 2
    assert data["limits"]["daily"]["tokens"]["used"] == 12  # reservations settled to what was used
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["credits_charged"] == 1


async def test_chunks_are_forwarded_as_the_provider_sends_them(
    gw: Gateway, http: httpx.AsyncClient, key: str, standin: StandIn
) -> None:
    # `[step]`: the stand-in holds each content chunk until the test lets it go, and the test
    # lets the next one go only once the previous one has reached it. A gateway that buffered
    # even one chunk would wait forever for a chunk the provider never sends: the timeout
    # fails the test. No wall-clock gaps, so a loaded machine cannot make it flaky.
    words = "one two three four"  # + "echo:" and the marker: 6 content chunks
    contents: list[str] = []
    standin.release_step()  # the first content chunk (the role chunk waits for it, by design)
    async with asyncio.timeout(20):
        async with http.stream(
            "POST",
            ROUTES["openai"],
            json=chat_body(f"[step] {words}", stream=True),
            headers=auth("openai", key),
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = orjson.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    contents.append(choices[0]["delta"]["content"])
                    if len(contents) < 6:
                        standin.release_step()  # this chunk arrived: the provider may send the next
    assert "".join(contents) == f"echo: [step] {words}"
    assert len(contents) == 6


async def test_a_persona_s_stream_names_the_persona_as_its_model(
    gw: Gateway, http: httpx.AsyncClient, key: str, standin: StandIn
) -> None:
    standin.record = True
    persona = {
        "name": "stream-poet",
        "display_name": "Stream Poet",
        "personality_summary": "You answer every question with a short and cheerful poem.",
        "base_model": "mock/echo",
    }
    made = await gw.client.post("/api/v1/custom", json=persona, headers={"X-API-Key": key})
    assert made.status_code == 201, made.text
    model = made.json()["data"]["full_name"]
    response, events = await stream(http, "openai", key, chat_body("a poem", model=model, stream=True))
    assert response.status_code == 200, response.text
    assert events[-1] == DONE
    assert {e["model"] for e in events[:-1]} == {model}
    assert standin.requests[-1]["model"] == "mock/echo"  # the base model serves it
    job = await wait_for_status(gw.client, key, response.headers["x-job-id"], "succeeded")
    assert job["result"]["model"] == model


async def test_the_provider_connection_is_kept_for_the_next_stream(
    gw: Gateway, http: httpx.AsyncClient, key: str, standin: StandIn
) -> None:
    for i in range(2 * POOL_SHARDS):
        response, events = await stream(http, "openai", key, chat_body(f"call {i}", stream=True))
        assert response.status_code == 200 and events[-1] == DONE
    # The worker read each body to its end after [DONE]: one connection per pool shard at most,
    # not one per call (and one for the worker's model discovery, on a client of its own).
    assert standin.connections <= POOL_SHARDS + 1


async def test_many_concurrent_streams_each_get_their_own_chunks(
    gw: Gateway, http: httpx.AsyncClient, key: str
) -> None:
    async def one(i: int) -> None:
        text = f"[gap:0.01] caller {i} says hi"
        response, events = await stream(http, "openai", key, chat_body(text, stream=True))
        assert response.status_code == 200
        assert content_of(events) == f"echo: {text}"
        assert events[-1] == DONE

    await asyncio.gather(*(one(i) for i in range(24)))


# --- faults ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("route", "marker"),
    [
        ("native", "[die:2]"),
        ("openai", "[die:2]"),
        ("openai", "[sse-error:2]"),
        ("cloudgpt", "[sse-error:2]"),
    ],
)
async def test_a_provider_dying_mid_stream_is_an_error_event_and_a_failed_job(
    gw: Gateway, http: httpx.AsyncClient, key: str, standin: StandIn, marker: str, route: str
) -> None:
    response, events = await stream(http, route, key, chat_body(f"{marker} a b c d e", stream=True))
    assert response.status_code == 200  # the stream had begun
    assert DONE not in events
    *chunks, error_event = events
    assert content_of(chunks) == f"echo: {marker}"  # the two content chunks sent before it died
    if route == "native":
        assert error_event["success"] is False and error_event["error"] == "Bad Gateway"
        message = error_event["message"]
    else:
        assert set(error_event) == {"error"}
        assert error_event["error"]["type"] == "provider_error"
        message = error_event["error"]["message"]
    assert "after 3 streamed chunks" in message  # the role chunk and two words
    job = await wait_for_status(gw.client, key, response.headers["x-job-id"], "failed")
    assert job["error"]["type"] == "provider_error"
    assert job["error"]["message"] == message
    assert standin.stream_calls == 1  # chunks had gone out: not retried


async def test_a_failure_before_the_first_chunk_is_retried_then_streams(
    gw: Gateway, http: httpx.AsyncClient, key: str, standin: StandIn
) -> None:
    response, events = await stream(http, "openai", key, chat_body("[fail:1] retry me", stream=True))
    assert response.status_code == 200
    assert content_of(events) == "echo: [fail:1] retry me" and events[-1] == DONE
    assert standin.chat_calls == 2 and standin.stream_calls == 1
    job = await wait_for_status(gw.client, key, response.headers["x-job-id"], "succeeded")
    assert job["status"] == "succeeded" and job["attempts"] == 2


@pytest.mark.parametrize("route", ["native", "openai"])
async def test_a_job_failing_before_any_chunk_answers_with_the_error_status(
    gw: Gateway, http: httpx.AsyncClient, key: str, route: str
) -> None:
    response, _ = await stream(http, route, key, chat_body("[400] refused", stream=True))
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    message = body["message"] if route == "native" else body["error"]["message"]
    assert "refused the request" in message and "stand-in says 400" in message
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "failed" and job["error"]["type"] == "provider_rejected"


async def test_a_client_that_disconnects_cancels_the_job(
    gw: Gateway, http: httpx.AsyncClient, key: str, standin: StandIn
) -> None:
    body = chat_body("[gap:0.3] " + " ".join(f"w{i}" for i in range(40)), stream=True)
    async with http.stream("POST", ROUTES["openai"], json=body, headers=auth("openai", key)) as response:
        assert response.status_code == 200
        job_id = response.headers["x-job-id"]
        seen = 0
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen == 3:
                break  # leaving the block closes the connection mid-stream
    job = await wait_for_status(gw.client, key, job_id, "canceled", timeout=10)
    assert job["error"]["type"] == "canceled"
    # The worker stopped the provider's stream too.
    await eventually(lambda: _true(standin.streams_abandoned == 1), what="the provider stream to be closed")


async def test_a_client_that_disconnects_before_the_first_chunk_cancels_the_job(
    gw: Gateway, base_url: str, key: str, standin: StandIn
) -> None:
    body = orjson.dumps(chat_body("[sleep:30] slow to start", stream=True))
    port = int(base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await eventually(lambda: _true(standin.chat_calls == 1), what="the provider call")
    writer.close()
    await writer.wait_closed()

    async def canceled() -> dict[str, Any] | None:
        listing = await gw.client.get("/api/v1/jobs", headers={"X-API-Key": key})
        jobs = listing.json()["data"]
        return jobs[0] if jobs and jobs[0]["status"] == "canceled" else None

    job = await eventually(canceled, what="the job to be canceled")
    assert job["error"]["type"] == "canceled"
    del reader


async def test_a_stream_that_does_not_start_within_the_wait_bound_is_a_202_job(
    gw: Gateway, http: httpx.AsyncClient, key: str
) -> None:
    response = await http.post(
        ROUTES["openai"],
        json=chat_body("[sleep:0.6] later", stream=True),
        headers={**auth("openai", key), "Prefer": "wait=0.1"},
    )
    assert response.status_code == 202
    job_id = response.json()["id"]  # an OpenAI-style job object on the OpenAI routes
    job = await wait_for_status(gw.client, key, job_id, "succeeded")
    assert job["result"]["choices"][0]["message"]["content"] == "echo: [sleep:0.6] later"


async def _true(value: bool) -> bool:
    return value


# --- bad input ------------------------------------------------------------------------------------
BAD_STREAM_INPUT: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    ("stream not a boolean", chat_body(stream="yes"), {}, "stream"),
    ("stream a number", chat_body(stream=1), {}, "stream"),
    ("stream_options not an object", chat_body(stream=True, stream_options="usage"), {}, "stream_options"),
    (
        "include_usage not a boolean",
        chat_body(stream=True, stream_options={"include_usage": "yes"}),
        {},
        "stream_options.include_usage",
    ),
    (
        "stream_options without stream",
        chat_body(stream_options={"include_usage": True}),
        {},
        "stream_options",
    ),
    ("a batch job cannot stream", chat_body(stream=True), {"batch": "1"}, "stream"),
]


@pytest.mark.parametrize("route", ["native", "openai", "cloudgpt"])
async def test_bad_stream_input_is_400_naming_the_field(
    gw: Gateway, http: httpx.AsyncClient, key: str, standin: StandIn, route: str
) -> None:
    for description, body, params, field in BAD_STREAM_INPUT:
        response = await http.post(ROUTES[route], json=body, params=params, headers=auth(route, key))
        assert response.status_code == 400, (description, response.text)
        error = response.json()
        if route == "native":
            assert error["details"][0]["field"] == field, description
            assert error["message"].startswith(field), description
        else:
            assert error["error"]["param"] == field, description
            assert error["error"]["type"] == "invalid_request_error"
    assert standin.chat_calls == 0
    listing = await gw.client.get("/api/v1/jobs", headers={"X-API-Key": key})
    assert listing.json()["data"] == []  # none of them became a job


async def test_routes_whose_documents_have_no_stream_refuse_it(gw: Gateway, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    credits = await gw.client.post("/api/v1/chat", json=chat_body(stream=True), headers=headers)
    assert credits.status_code == 400
    assert credits.json()["error"].startswith("stream: this route does not stream")
    generate = await gw.client.post("/api/llm/generate/", json=chat_body(stream=True), headers=headers)
    assert generate.status_code == 400
    assert generate.json()["error"]["param"] == "stream"


# --- the official client ------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
async def test_openai_client_streams(base_url: str, key: str, prefix: str) -> None:
    async with httpx.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=base_url + prefix, api_key=key, http_client=http, max_retries=0)
        stream = await client.chat.completions.create(
            model="mock/echo",
            messages=[{"role": "user", "content": "streamed by the sdk"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces: list[str] = []
        usage = None
        finish = None
        async for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            assert chunk.model == "mock/echo"
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(pieces) == "echo: streamed by the sdk"
        assert finish == "stop"
        assert usage is not None and usage.total_tokens == 4 + 5

        dying = await client.chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "[die:1] x y z"}], stream=True
        )
        with pytest.raises(openai.APIError) as failed:
            async for _ in dying:
                pass
        assert "after 2 streamed chunks" in failed.value.message


async def test_the_stream_key_expires(gw: Gateway, http: httpx.AsyncClient, key: str) -> None:
    import redis.asyncio as aioredis

    response, events = await stream(http, "openai", key, chat_body("ttl", stream=True))
    assert events[-1] == DONE
    async with aioredis.Redis.from_url(gw.settings.redis_url) as r:  # type: ignore[arg-type]
        ttl = await r.ttl(stream_key(response.headers["x-job-id"]))
    assert 0 < ttl <= 60


# --- the event-stream decoder -----------------------------------------------------------------------
def test_sse_decoder_handles_any_split_and_line_ending() -> None:
    from workers.sse import SSEDecoder

    raw = (
        b": keep-alive\r\n\r\n"
        b'data: {"a": 1}\r\n\r\n'
        b"event: error\ndata: line one\ndata: line two\n\n"
        b"data:no-space\r\rdata: caf\xc3\xa9\n\n"
        b"id: 7\nretry: 10\ndata: [DONE]\n\n"
    )
    expected = [
        ("message", '{"a": 1}'),
        ("error", "line one\nline two"),
        ("message", "no-space"),
        ("message", "café"),
        ("message", "[DONE]"),
    ]
    for size in (1, 2, 3, 5, 7, len(raw)):
        decoder = SSEDecoder()
        got = []
        for i in range(0, len(raw), size):
            got += [(e.event, e.data) for e in decoder.feed(raw[i : i + size])]
        got += [(e.event, e.data) for e in decoder.close()]
        assert got == expected, size
    # A last event the provider did not end with a blank line still counts at the end of the body.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: tail") == []
    assert [e.data for e in decoder.close()] == ["tail"]
