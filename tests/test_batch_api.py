"""The OpenAI Batch API (`/v1/files`, `/v1/batches`) with the official `openai` SDK, against the
real Redis, database, blob store, batch workers and loopback stand-in providers: chat,
embeddings and images batches end to end, every validation error with its line, cancel,
expiry, cursor pagination, ownership, bad input, and a batch larger than the key's hourly
limit that waits for its window."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from jobs.accounting import ADMIT, ADMIT_FUNCTION
from jobs.records import now_ms
from switchyard.standin import StandIn
from switchyard.standin_images import ImageStandIn
from tests.conftest import ADMIN_KEY, Gateway, eventually, get_job
from tests.llm_support import EMBED, assert_openai_error, bearer
from tests.test_chat import served_over_http
from workers.settings import create_worker

HIGH_LIMITS = {
    "hourly": 1_000_000,
    "daily_requests": 1_000_000,
    "daily_tokens": 100_000_000,
    "per_minute": {"chat": 1_000_000, "image": 1_000_000, "video": 10},
}


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn, pics: ImageStandIn) -> Path:
    text = f"""
[[providers]]
name = "standin"
kind = "openai"
base_url = "{standin.base_url}"
models = ["mock/echo", "mock/other", "{EMBED}"]
[providers.meta."{EMBED}"]
type = "embedding"

[[providers]]
name = "pics"
kind = "pollinations-image"
base_url = "{pics.base_url}"
models = ["flux"]
"""
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return path


@pytest.fixture
async def key(gw: Gateway) -> str:
    return await gw.create_key("batcher", limits=HIGH_LIMITS)


def sdk(gw: Gateway, key: str, prefix: str = "/v1") -> openai.AsyncOpenAI:
    """The official client, over the test's in-process transport."""
    return openai.AsyncOpenAI(
        base_url=f"http://testserver.local{prefix}", api_key=key, http_client=gw.client, max_retries=0
    )


def chat_line(custom_id: str, text: str, model: str = "mock/echo", **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **extra},
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def parse_jsonl(data: bytes) -> dict[str, dict[str, Any]]:
    out = {}
    for raw in data.splitlines():
        if raw.strip():
            entry = json.loads(raw)
            out[entry["custom_id"]] = entry
    return out


async def run_batch(
    client: openai.AsyncOpenAI, data: bytes, endpoint: str = "/v1/chat/completions", **kw: Any
) -> Any:
    upload = await client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch")
    return await client.batches.create(
        input_file_id=upload.id, endpoint=endpoint, completion_window="24h", **kw
    )  # type: ignore[arg-type]


async def settled(client: openai.AsyncOpenAI, batch_id: str, *statuses: str, timeout: float = 20.0) -> Any:
    wanted = statuses or ("completed", "failed", "expired", "cancelled")

    async def check() -> Any:
        batch = await client.batches.retrieve(batch_id)
        return batch if batch.status in wanted else None

    return await eventually(
        check, timeout=timeout, interval=0.05, what=f"batch {batch_id} to be {'/'.join(wanted)}"
    )


async def content(client: openai.AsyncOpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    assert file_id is not None
    return parse_jsonl((await client.files.content(file_id)).content)


# --- end to end ------------------------------------------------------------------------------------
async def test_sdk_chat_batch_end_to_end_over_http(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    lines = [chat_line(f"req-{i}", f"hello {i}") for i in range(30)]
    lines[7] = chat_line("req-7", "refused [400]")
    lines[11] = chat_line("req-11", "flaky [fail:1] 11")  # the provider fails once; the retry counts once
    async with served_over_http(gw.settings) as base_url, httpx.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=key, http_client=http, max_retries=0)
        upload = await client.files.create(file=("requests.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
        assert (
            upload.purpose == "batch"
            and upload.bytes == len(jsonl(lines))
            and upload.filename == "requests.jsonl"
        )
        created = await client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"project": "owls"},
        )
        assert created.status == "validating" and created.object == "batch"
        assert created.metadata == {"project": "owls"}
        assert created.expires_at is not None and created.expires_at - created.created_at == 86_400
        batch = await settled(client, created.id)
        assert batch.status == "completed", batch
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
            30,
            29,
            1,
        )
        assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
        assert batch.model == "mock/echo"
        output = await content(client, batch.output_file_id)
        errors = await content(client, batch.error_file_id)
    assert set(output) == {f"req-{i}" for i in range(30)} - {"req-7"}
    for custom_id, entry in output.items():
        assert entry["error"] is None and entry["response"]["status_code"] == 200
        body = entry["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "mock/echo"
        if custom_id != "req-11":
            assert f"hello {custom_id.split('-')[1]}" in body["choices"][0]["message"]["content"]
    assert set(errors) == {"req-7"}
    # as the synchronous route answers a provider's refusal: a 502 naming it
    assert errors["req-7"]["response"]["status_code"] == 502 and errors["req-7"]["error"] is None
    refusal = errors["req-7"]["response"]["body"]["error"]
    assert refusal["type"] == "provider_rejected" and "400" in refusal["message"]
    # each line was an ordinary batch job of the key's, charged as batch
    job = await get_job(gw.client, key, output["req-3"]["response"]["request_id"])
    assert job["priority"] == "batch" and job["kind"] == "chat_completion" and job["credits_charged"] == 2


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
async def test_embeddings_batch(gw: Gateway, key: str, prefix: str) -> None:
    gw.start_worker()
    client = sdk(gw, key, prefix)
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED, "input": f"text {i}"},
        }
        for i in range(5)
    ]
    created = await run_batch(client, jsonl(lines), "/v1/embeddings")
    batch = await settled(client, created.id)
    assert batch.status == "completed" and batch.error_file_id is None
    output = await content(client, batch.output_file_id)
    assert set(output) == {f"e{i}" for i in range(5)}
    body = output["e2"]["response"]["body"]
    assert body["object"] == "list" and body["model"] == EMBED
    assert len(body["data"][0]["embedding"]) > 0


async def test_images_batch(gw: Gateway, key: str) -> None:
    gw.start_worker()
    client = sdk(gw, key)
    lines = [
        {
            "custom_id": "owl",
            "method": "POST",
            "url": "/v1/images/generations",
            "body": {"model": "flux", "prompt": "an owl", "size": "256x256"},
        },
        {
            "custom_id": "fox",
            "method": "POST",
            "url": "/v1/images/generations",
            "body": {"prompt": "a fox", "size": "256x256", "response_format": "b64_json"},
        },
    ]
    created = await run_batch(client, jsonl(lines), "/v1/images/generations")
    batch = await settled(client, created.id)
    assert batch.status == "completed", batch
    output = await content(client, batch.output_file_id)
    owl = output["owl"]["response"]["body"]
    assert owl["created"] and owl["data"][0]["url"].startswith(gw.settings.public_base_url + "/api/v1/files/")
    picture = await gw.client.get(owl["data"][0]["url"], headers=bearer(key))
    assert picture.status_code == 200 and picture.headers["content-type"].startswith("image/")
    assert output["fox"]["response"]["body"]["data"][0]["b64_json"]


# --- validation ------------------------------------------------------------------------------------
def _many(n: int) -> list[Any]:
    return [chat_line(f"c{i}", f"line {i}") for i in range(n)]


def _bad_json_on_17() -> list[Any]:
    lines = _many(20)
    lines[16] = b'{"custom_id": "c16", "method": "POST", '
    return lines


def _url_mismatch_on_3() -> list[Any]:
    lines = _many(5)
    lines[2] = {**lines[2], "url": "/v1/embeddings"}
    return lines


def _duplicate_on_5() -> list[Any]:
    lines = _many(6)
    lines[4] = chat_line("c1", "again")
    return lines


def _not_an_object_on_2() -> list[Any]:
    return [_many(1)[0], b"[1, 2, 3]", _many(3)[2]]


def _unknown_model_on_4() -> list[Any]:
    lines = _many(5)
    lines[3] = chat_line("c3", "who", model="mock/nope")
    return lines


def _missing_custom_id_on_2() -> list[Any]:
    lines = _many(3)
    del lines[1]["custom_id"]
    return lines


def _bad_method_on_1() -> list[Any]:
    return [{**_many(1)[0], "method": "GET"}]


def _stream_on_2() -> list[Any]:
    return [_many(1)[0], chat_line("s", "x", stream=True)]


@pytest.mark.parametrize(
    ("lines", "code", "line"),
    [
        (_bad_json_on_17, "invalid_json_line", 17),
        (_url_mismatch_on_3, "url_mismatch", 3),
        (_duplicate_on_5, "duplicate_custom_id", 5),
        (_not_an_object_on_2, "invalid_json_line", 2),
        (_unknown_model_on_4, "model_not_found", 4),
        (_missing_custom_id_on_2, "invalid_request", 2),
        (_bad_method_on_1, "invalid_request", 1),
        (_stream_on_2, "invalid_request", 2),
    ],
)
async def test_a_bad_line_fails_the_batch_naming_it(
    gw: Gateway, key: str, lines: Any, code: str, line: int
) -> None:
    gw.start_worker()
    client = sdk(gw, key)
    batch = await settled(client, (await run_batch(client, jsonl(lines()))).id)
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.object == "list" and batch.errors.data
    first = batch.errors.data[0]
    assert (first.code, first.line) == (code, line), batch.errors
    assert str(line) in (first.message or "")
    assert batch.output_file_id is None and batch.request_counts.total == 0  # type: ignore[union-attr]
    assert await gw.client.get("/api/v1/jobs", headers=bearer(key)) is not None
    jobs = (await gw.client.get("/api/v1/jobs", headers=bearer(key))).json()["data"]
    assert jobs == []  # nothing was dispatched


@pytest.mark.settings(SWITCHYARD_BATCH_MAX_LINES="10")
async def test_more_lines_than_allowed_fail_the_batch(gw: Gateway, key: str) -> None:
    gw.start_worker()
    client = sdk(gw, key)
    batch = await settled(client, (await run_batch(client, jsonl(_many(11)))).id)
    assert batch.status == "failed" and batch.errors is not None
    assert [(e.code, e.line) for e in batch.errors.data or []] == [("too_many_tasks", 11)]


async def test_an_empty_file_fails_the_batch(gw: Gateway, key: str) -> None:
    gw.start_worker()
    client = sdk(gw, key)
    batch = await settled(client, (await run_batch(client, b"\n\n")).id)
    assert batch.status == "failed" and batch.errors is not None
    assert [e.code for e in batch.errors.data or []] == ["empty_file"]


async def test_a_file_over_the_size_limit_fails_the_batch(gw: Gateway, key: str) -> None:
    # the web took it (its limit is the default); the worker reading it has a smaller one
    worker = create_worker(
        ("interactive", "batch"),
        gw.settings.model_copy(update={"batch_max_bytes": 100}),
        handle_signals=False,
    )
    task = asyncio.create_task(worker.async_run())
    gw.workers.append((worker, task))
    client = sdk(gw, key)
    batch = await settled(client, (await run_batch(client, jsonl(_many(5)))).id)
    assert batch.status == "failed" and batch.errors is not None
    assert [e.code for e in batch.errors.data or []] == ["file_too_large"]


@pytest.mark.settings(SWITCHYARD_BATCH_MAX_BYTES="1000")
async def test_an_upload_over_the_limit_is_a_413(gw: Gateway, key: str) -> None:
    client = sdk(gw, key)
    with pytest.raises(openai.APIStatusError) as exc:
        await client.files.create(file=("big.jsonl", io.BytesIO(jsonl(_many(50)))), purpose="batch")
    assert exc.value.status_code == 413
    assert (await client.files.list()).data == []


# --- cancel and expiry -----------------------------------------------------------------------------
async def test_cancel_stops_dispatching_and_keeps_what_finished(gw: Gateway, key: str) -> None:
    worker = create_worker(("interactive", "batch"), gw.settings, handle_signals=False, max_jobs=2)
    gw.workers.append((worker, asyncio.create_task(worker.async_run())))
    client = sdk(gw, key)
    lines = [chat_line(f"s{i}", f"slow [sleep:0.2] {i}") for i in range(30)]
    created = await run_batch(client, jsonl(lines))

    async def some_done() -> Any:
        batch = await client.batches.retrieve(created.id)
        return batch if batch.request_counts and batch.request_counts.completed >= 2 else None

    await eventually(some_done, timeout=15, what="a few lines to finish")
    cancelling = await client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    batch = await settled(client, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    counts = batch.request_counts
    assert counts is not None and counts.total == 30 and counts.completed + counts.failed == 30
    assert 2 <= counts.completed < 30
    output = await content(client, batch.output_file_id)
    errors = await content(client, batch.error_file_id)
    assert len(output) == counts.completed and len(errors) == counts.failed
    assert set(output) | set(errors) == {f"s{i}" for i in range(30)}
    assert any(e["error"] and e["error"]["code"] == "batch_cancelled" for e in errors.values())
    with pytest.raises(openai.ConflictError):
        await client.batches.cancel(created.id)


# 3 s: time for some lines to finish first (40 lines of 0.3 s, 2 at a time, take 6 s)
@pytest.mark.settings(SWITCHYARD_BATCH_WINDOW_S="3")
async def test_a_batch_past_its_window_expires_with_what_finished(gw: Gateway, key: str) -> None:
    worker = create_worker(("interactive", "batch"), gw.settings, handle_signals=False, max_jobs=2)
    gw.workers.append((worker, asyncio.create_task(worker.async_run())))
    client = sdk(gw, key)
    lines = [chat_line(f"x{i}", f"slow [sleep:0.3] {i}") for i in range(40)]
    created = await run_batch(client, jsonl(lines))
    batch = await settled(client, created.id, timeout=20)
    assert batch.status == "expired" and batch.expired_at
    counts = batch.request_counts
    assert counts is not None and counts.total == 40 and counts.completed + counts.failed == 40
    assert 0 < counts.completed < 40
    errors = await content(client, batch.error_file_id)
    assert any(e["error"] and e["error"]["code"] == "batch_expired" for e in errors.values())
    assert len(await content(client, batch.output_file_id)) == counts.completed


# --- admission ---------------------------------------------------------------------------------------
@pytest.mark.settings(SWITCHYARD_BATCH_ADMISSION_RECHECK_S="0.2")
async def test_a_batch_larger_than_the_hourly_limit_waits_for_the_window(gw: Gateway, redis_url: str) -> None:
    key = await gw.create_key("small", limits={**HIGH_LIMITS, "hourly": 3})
    gw.start_worker()
    client = sdk(gw, key)
    created = await run_batch(client, jsonl(_many(5)))

    async def three_done() -> Any:
        batch = await client.batches.retrieve(created.id)
        return batch if batch.request_counts and batch.request_counts.completed == 3 else None

    await eventually(three_done, timeout=15, what="the hour's three lines")
    await asyncio.sleep(0.6)  # admission is asked again (every 0.2 s here) and still says wait
    batch = await client.batches.retrieve(created.id)
    assert batch.status == "in_progress" and batch.request_counts.completed == 3  # type: ignore[union-attr]
    # the hour turns: its counter goes, as the fixed window's key does at the hour
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.delete(*[k async for k in r.scan_iter("sy:rl:*:h:*")])
    finally:
        await r.aclose()
    batch = await settled(client, created.id)
    assert batch.status == "completed" and batch.request_counts.completed == 5  # type: ignore[union-attr]
    assert len(await content(client, batch.output_file_id)) == 5


@pytest.mark.settings(SWITCHYARD_BATCH_ADMISSION_RECHECK_S="0.2")
async def test_a_line_reserves_its_prompt_tokens_as_the_synchronous_route_does(
    gw: Gateway, redis_url: str
) -> None:
    key = await gw.create_key("tokens", limits={**HIGH_LIMITS, "daily_tokens": 50})
    gw.start_worker()
    long_prompt = "word " * 100  # ~125 tokens by the 4-bytes estimate, past the day's 50
    refused = await gw.client.post(
        "/v1/chat/completions", json=chat_line("x", long_prompt)["body"], headers=bearer(key)
    )
    assert refused.status_code == 429
    client = sdk(gw, key)
    created = await run_batch(client, jsonl([chat_line("short", "hi"), chat_line("long", long_prompt)]))

    async def first_done() -> Any:
        batch = await client.batches.retrieve(created.id)
        return batch if batch.request_counts and batch.request_counts.completed == 1 else None

    await eventually(first_done, timeout=10, what="the short line")
    await asyncio.sleep(0.6)  # admission is asked again and still refuses the long line
    batch = await client.batches.retrieve(created.id)
    assert batch.status == "in_progress" and batch.request_counts.completed == 1  # type: ignore[union-attr]
    r = aioredis.Redis.from_url(redis_url)
    try:
        assert int(await r.hget(f"sy:batch:{created.id}", "dispatched") or 0) == 1
    finally:
        await r.aclose()


# --- listing, ownership, bad input ---------------------------------------------------------------------
async def test_list_pagination_with_after_and_limit(gw: Gateway, key: str) -> None:
    client = sdk(gw, key)
    upload = await client.files.create(file=("r.jsonl", io.BytesIO(jsonl(_many(1)))), purpose="batch")
    ids = []
    for _ in range(3):
        batch = await client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        ids.append(batch.id)
    page = await gw.client.get("/v1/batches?limit=2", headers=bearer(key))
    body = page.json()
    assert body["object"] == "list" and body["has_more"] is True
    assert [b["id"] for b in body["data"]] == ids[::-1][:2]
    assert body["first_id"] == ids[2] and body["last_id"] == ids[1]
    rest = (await gw.client.get(f"/v1/batches?limit=2&after={body['last_id']}", headers=bearer(key))).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert [b.id async for b in client.batches.list(limit=2)] == ids[::-1]  # the SDK's own paging
    files = await client.files.list(purpose="batch")
    assert [f.id for f in files.data] == [upload.id]


async def test_another_keys_batch_and_file_are_not_found(gw: Gateway, key: str) -> None:
    other = await gw.create_key("other", limits=HIGH_LIMITS)
    client = sdk(gw, key)
    created = await run_batch(client, jsonl(_many(2)))
    file_id = created.input_file_id
    theirs = {"Authorization": f"Bearer {other}"}
    for method, path in [
        ("GET", f"/v1/batches/{created.id}"),
        ("POST", f"/v1/batches/{created.id}/cancel"),
        ("GET", f"/v1/files/{file_id}"),
        ("GET", f"/v1/files/{file_id}/content"),
        ("DELETE", f"/v1/files/{file_id}"),
        ("GET", f"/openai/v1/batches/{created.id}"),
    ]:
        response = await gw.client.request(method, path, headers=theirs)
        assert_openai_error(response, 404)
    assert (await gw.client.get("/v1/batches", headers=theirs)).json()["data"] == []
    assert (await gw.client.get("/v1/files", headers=theirs)).json()["data"] == []
    refused = await gw.client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        headers=theirs,
    )
    assert_openai_error(refused, 400, "input_file_id")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert (await gw.client.get(f"/v1/batches/{created.id}", headers=admin)).status_code == 200
    assert (await gw.client.get(f"/v1/files/{file_id}/content", headers=admin)).content == jsonl(_many(2))
    deleted = await gw.client.delete(f"/v1/files/{file_id}", headers=bearer(key))
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    assert_openai_error(await gw.client.get(f"/v1/files/{file_id}", headers=bearer(key)), 404)


async def test_bad_input_on_every_route_is_a_400_in_openai_shape(gw: Gateway, key: str) -> None:
    client = sdk(gw, key)
    upload = await client.files.create(file=("r.jsonl", io.BytesIO(jsonl(_many(1)))), purpose="batch")
    h = bearer(key)
    good = {"input_file_id": upload.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    create_cases: list[tuple[Any, str | None]] = [
        (b"not json", "body"),
        (b"[]", "body"),
        ({**good, "endpoint": "/v1/completions"}, "endpoint"),
        ({**good, "completion_window": "48h"}, "completion_window"),
        ({k: v for k, v in good.items() if k != "input_file_id"}, "input_file_id"),
        ({**good, "input_file_id": 7}, "input_file_id"),
        ({**good, "input_file_id": "file_nope"}, "input_file_id"),
        ({**good, "metadata": {"k": 5}}, "metadata[...]"),
        ({**good, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({**good, "metadata": {"k": "v" * 513}}, "metadata[...]"),
    ]
    for body, param in create_cases:
        kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
        response = await gw.client.post("/v1/batches", headers=h, **kwargs)
        assert_openai_error(response, 400, param)
    for path, param in [
        ("/v1/batches?limit=0", "limit"),
        ("/v1/batches?limit=abc", "limit"),
        ("/v1/batches?limit=99999999999999999999999", "limit"),
        ("/v1/batches?after=nope", "after"),
        ("/v1/files?limit=0", "limit"),
        ("/v1/files?order=sideways", "order"),
        ("/v1/files?purpose=fine-tune", "purpose"),
    ]:
        assert_openai_error(await gw.client.get(path, headers=h), 400, param)
    for files, data, param in [
        ({"file": ("a.jsonl", b"{}\n")}, {"purpose": "fine-tune"}, "purpose"),
        ({"file": ("a.jsonl", b"{}\n")}, {}, "purpose"),
        (None, {"purpose": "batch"}, "file"),
    ]:
        response = await gw.client.post("/v1/files", headers=h, files=files, data=data)
        assert_openai_error(response, 400, param)
    not_multipart = await gw.client.post("/v1/files", headers=h, json={"purpose": "batch"})
    assert_openai_error(not_multipart, 400, "file")
    broken = await gw.client.post(
        "/v1/files",
        headers={**h, "content-type": "multipart/form-data; boundary=xyz"},
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nno end',
    )
    assert_openai_error(broken, 400, "file")
    assert_openai_error(await gw.client.get("/v1/batches/batch_nope", headers=h), 404)
    assert_openai_error(await gw.client.get("/v1/files/nope/content", headers=h), 404)
    assert_openai_error(await gw.client.get("/v1/batches"), 401)


def _line_finish(job_id: str, status: str, batch_line: tuple[str, str] | None = None) -> list[bytes]:
    """FINISH_BATCH's argument for a batch line finishing with `status`."""
    from jobs import queues
    from jobs.scripts import finish_args

    return finish_args(
        job_id,
        queue=queues.queue_name("batch"),
        result_ttl_s=60,
        persist_set=queues.PERSIST_SET,
        finished_ms=now_ms(),
        tokens_used=0,
        refund=False,
        update={"status": status},
        batch_line=batch_line,
    )


async def test_a_finished_line_is_counted_once_however_often_it_finishes(
    gw: Gateway, key: str, redis_url: str
) -> None:
    """FINISH_BATCH run twice for one job (a retried finish) counts it once."""
    from jobs.scripts import FINISH_BATCH

    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.hset("sy:batch:b1", mapping={"status": "in_progress", "completed": 0, "failed": 0})
        await r.hset(
            "sy:job:j1", mapping={"status": "running", "batch": "b1", "custom_id": "c 1", "owner": "k"}
        )
        script = r.register_script(FINISH_BATCH)
        argv = _line_finish("j1", "succeeded")
        await script(args=argv)
        await script(args=argv)
        assert await r.hget("sy:batch:b1", "completed") == b"1"
        assert await r.lrange("sy:batch:b1:done", 0, -1) == [b"j1 c 1"]
    finally:
        await r.aclose()


async def test_a_line_is_counted_from_what_its_worker_passes_once_per_job(
    gw: Gateway, key: str, redis_url: str
) -> None:
    """FINISH_BATCH with the line's batch and custom_id from the worker (`batch_line`) counts
    it on that batch once, however often it finishes, with no flag of its own on the state;
    a finish after the job was canceled counts nothing more."""
    from jobs import queues
    from jobs.scripts import CANCEL, FINISH_BATCH

    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.hset("sy:batch:b2", mapping={"status": "in_progress", "completed": 0, "failed": 0})
        # the state names the batch (the worker's claim saw it) but the ids come from the finish
        await r.hset("sy:job:j2", mapping={"status": "running", "batch": "b2", "owner": "k"})
        script = r.register_script(FINISH_BATCH)

        def argv(job_id: str, status: str) -> list[bytes]:
            return _line_finish(job_id, status, batch_line=("b2", "the custom id é"))

        await script(args=argv("j2", "succeeded"))
        await script(args=argv("j2", "failed"))
        assert await r.hmget("sy:batch:b2", ["completed", "failed"]) == [b"1", b"0"]
        assert await r.lrange("sy:batch:b2:done", 0, -1) == ["j2 the custom id é".encode()]
        assert await r.hget("sy:job:j2", "batch_counted") is None
        # a queued line canceled: counted by CANCEL (from its state), then a late finish is not
        await r.hset(
            "sy:job:j3",
            mapping={"status": "queued", "batch": "b2", "custom_id": "c3", "owner": "k", "priority": "batch"},
        )
        cancel = r.register_script(CANCEL)
        assert (await cancel(args=["j3", now_ms(), queues.PERSIST_SET, queues.CANCEL_CHANNEL]))[
            0
        ] == b"canceled"
        await script(args=argv("j3", "succeeded"))
        assert await r.hmget("sy:batch:b2", ["completed", "failed"]) == [b"1", b"1"]
        assert await r.lrange("sy:batch:b2:done", 0, -1) == ["j2 the custom id é".encode(), b"j3 c3"]
    finally:
        await r.aclose()


@pytest.mark.settings(SWITCHYARD_MAX_BODY_BYTES="1000")
async def test_an_upload_is_not_bound_by_the_json_body_limit(gw: Gateway, key: str) -> None:
    client = sdk(gw, key)
    data = jsonl(_many(100))
    assert len(data) > 5000
    upload = await client.files.create(file=("r.jsonl", io.BytesIO(data)), purpose="batch")
    assert upload.bytes == len(data)
    assert (await client.files.content(upload.id)).content == data


async def test_the_expiry_check_keeps_its_job_body_until_the_window_ends(
    gw: Gateway, key: str, redis_url: str
) -> None:
    client = sdk(gw, key)
    created = await run_batch(client, jsonl(_many(2)))
    assert created.expires_at is not None
    r = aioredis.Redis.from_url(redis_url)
    try:
        later = await r.zrangebyscore("switchyard:queue:batch", now_ms() + 60_000, "+inf")
        assert len(later) == 1
        ttl_ms = await r.pttl(b"arq:job:" + later[0])
        assert ttl_ms > (created.expires_at * 1000 - now_ms()) + 3_600_000  # and then some
    finally:
        await r.aclose()


async def test_a_batch_whose_input_cannot_be_read_fails_and_the_next_one_runs(gw: Gateway, key: str) -> None:
    client = sdk(gw, key)
    upload = await client.files.create(file=("gone.jsonl", io.BytesIO(jsonl(_many(3)))), purpose="batch")
    stored = await gw.client.get(f"/v1/files/{upload.id}/content", headers=bearer(key))
    blob = stored.headers["etag"].strip('"')
    path = gw.settings.blob_dir_or_default / blob[:2] / blob[2:4] / blob
    path.unlink()  # the blob store lost it
    broken = await client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    gw.start_worker()
    failed = await settled(client, broken.id)
    assert failed.status == "failed" and failed.errors is not None
    assert [e.code for e in failed.errors.data or []] == ["internal_error"]
    good = await settled(client, (await run_batch(client, jsonl(_many(3)))).id)
    assert good.status == "completed" and good.request_counts.completed == 3  # type: ignore[union-attr]


# --- admission of a chunk ----------------------------------------------------------------------------
ADMIT_CHUNK = (
    ADMIT_FUNCTION
    + """
local reserves = {}
for i = 10, #ARGV do reserves[#reserves + 1] = ARGV[i] end
local n, refusal, tk, admitted = admit_lines(ARGV[1], ARGV[2], ARGV[3], reserves, ARGV[5], ARGV[6],
                                             ARGV[7], ARGV[8], ARGV[9])
return {n, refusal, tk, admitted}
"""
)


@pytest.mark.parametrize(
    ("limits", "cost", "balance", "reserves"),
    [
        ((5, -1, -1, -1), 0, None, [1] * 8),  # the hour's fifth request is the last
        ((-1, 6, -1, -1), 0, None, [1] * 8),  # the day's requests
        ((-1, -1, 50, -1), 0, None, [10, 20, 30, 5]),  # tokens: the third line does not fit
        ((-1, -1, -1, 3), 0, None, [1] * 5),  # the minute's
        ((-1, -1, -1, -1), 2, 5, [1] * 4),  # two lines' credits, then short
        ((-1, -1, -1, -1), 2, None, [1] * 3),  # a balance Redis does not hold
        ((2, -1, -1, -1), 2, None, [1] * 3),  # ... behind a limit that refuses first
        ((100, 100, 1000, 100), 1, 50, [7, 0, 3, 9, 1]),  # everything fits
    ],
)
async def test_admitting_a_chunk_answers_as_its_lines_one_by_one_would(
    redis_url: str, limits: tuple[int, int, int, int], cost: int, balance: int | None, reserves: list[int]
) -> None:
    """`admit_lines` (a Batch API chunk) against the same lines through ADMIT one at a time:
    the same lines admitted, the same remaining counts for each, the same refusal, the same
    counters after, from the same counters before (some used already)."""
    now = now_ms()
    hourly, daily, tokens, per_minute = limits

    async def fresh(r: aioredis.Redis) -> None:
        await r.flushall()
        await r.set(f"sy:rl:k:h:{now // 3_600_000}", 1)  # one request of the hour already
        await r.set(f"sy:rl:k:t:{now // 86_400_000}", 4)
        if balance is not None:
            await r.hset("sy:credits", "k", balance)

    async def counters(r: aioredis.Redis) -> list[Any]:
        keys = sorted([k async for k in r.scan_iter("sy:rl:*")])
        return [(k, await r.get(k), await r.pttl(k) > 0) for k in keys] + [await r.hget("sy:credits", "k")]

    def args(reserve: int) -> list[Any]:
        return ["k", now, cost, reserve, "chat", hourly, daily, tokens, per_minute]

    r = aioredis.Redis.from_url(redis_url)
    try:
        await fresh(r)
        one = r.register_script(ADMIT)
        singles, refusal = [], None
        for reserve in reserves:
            verdict = await one(args=args(reserve))
            if verdict[0] != b"ok":
                refusal = verdict
                break
            singles.append([verdict[1], verdict[2], verdict[3], verdict[4], verdict[6]])
        one_by_one = await counters(r)

        await fresh(r)
        n, chunk_refusal, _, admitted = await r.register_script(ADMIT_CHUNK)(args=[*args(0), *reserves])
        assert (n, admitted, chunk_refusal) == (len(singles), singles, refusal)
        assert await counters(r) == one_by_one
    finally:
        await r.aclose()


async def test_a_batch_is_never_shown_finished_without_what_finishing_wrote(
    gw: Gateway, key: str, redis_url: str
) -> None:
    """The finalize step writes the row (status, its time, the files) and then the live hash in
    Redis. A read that got the row just before and the hash just after must not answer the
    hash's terminal status with the older row's empty time and files: it answers the row's
    status, and the next read has all of it."""
    from jobs import batches as b
    from storage.batches import update_batch
    from storage.db import Database
    from storage.keys import utcnow

    client = sdk(gw, key)
    created = await run_batch(client, jsonl([chat_line("a", "hello")]))  # no worker: it stays put
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.hset(b.batch_key(created.id), mapping={"status": b.EXPIRED, "expired_at": now_ms()})
        racing = await client.batches.retrieve(created.id)
        assert racing.status not in b.TERMINAL and racing.expired_at is None
        db = Database(gw.settings.database_url)
        try:
            await update_batch(db, created.id, status=b.EXPIRED, expired_at=utcnow())
        finally:
            await db.dispose()
        done = await client.batches.retrieve(created.id)
        assert done.status == b.EXPIRED and done.expired_at
    finally:
        await r.aclose()
