"""Finalizing a Batch API batch (`workers.batches.batch_finalize`) against the real Redis,
database and blob store: the output and error files hold, byte for byte, what `output_line`
makes of every finished line's state, whichever way the line is read (spliced from its stored
result, read into a record, read whole, from its row, unreadable), across pages; and a
finalize stopped part way and run again writes every line once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from jobs import batches as b
from jobs.records import JobRecord, now_ms
from storage.batches import get_batch
from storage.db import Database
from storage.files import Files
from tests.conftest import Gateway
from tests.test_batch_api import chat_line, jsonl, run_batch, sdk
from workers import batches as wb
from workers.context import WorkerCtx

CREATED = 1_765_000_000_000


def chat_result(i: int, model: str = "mock/echo", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"chatcmpl-up{i}",
        "object": "chat.completion",
        "created": 1_765_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f'écho « {i} » "q" \u2028'},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5, "cost": 1 / 3},
    }
    body.update(extra)
    return body


def variants(i: int) -> tuple[str, dict[str, Any]]:
    """The kind of finished line number i is, and its job state (all text, as Redis holds it)."""
    base: dict[str, Any] = {
        "status": "succeeded",
        "kind": "chat_completion",
        "created": CREATED + i,
        "model": "mock/echo",
        "started": CREATED + i + 5,
        "priority": "batch",
        "owner": "k",
        "dialect": "openai",
    }
    which = i % 12
    if which == 0:
        chat = chat_result(i)
        del chat["object"], chat["created"]  # the body gets them added
        return "chat, fields added", {**base, "result": orjson.dumps(chat)}
    if which == 1:
        return "chat, another model upstream", {**base, "result": orjson.dumps(chat_result(i, "up/real"))}
    if which == 2:
        return "chat, no model in the state", {**base, "model": "", "result": orjson.dumps(chat_result(i))}
    if which == 3:
        vectors = {"object": "list", "data": [{"embedding": [0.1, -2.5e-7], "index": 0}], "model": "emb"}
        return "embedding", {**base, "kind": "embedding", "model": "emb", "result": orjson.dumps(vectors)}
    if which == 4:
        other = {"object": "list", "data": [], "model": "emb-upstream"}
        return "embedding, another model", {
            **base,
            "kind": "embedding",
            "model": "emb",
            "result": orjson.dumps(other),
        }
    if which == 5:
        images = {"created": 1, "images": [{"url": "http://x/y.png"}], "response_format": "url"}
        return "image", {**base, "kind": "image_generation", "model": "flux", "result": orjson.dumps(images)}
    if which == 6:
        failed = {"error_type": "provider_error", "error_message": "upstream said no", "error_status": 502}
        return "failed", {**base, "status": "failed", **failed}
    if which == 7:
        return "canceled before it ran", {**base, "status": "canceled", "started": ""}
    if which == 8:
        return "unreadable", {**base, "created": "soon", "result": orjson.dumps(chat_result(i))}
    if which == 9:
        return "state gone, no row", {}
    if which == 10:
        return "not JSON result", {**base, "result": b"{not json"}
    return "chat, as stored", {**base, "result": orjson.dumps(chat_result(i))}


def expected_line(
    job_id: str, custom_id: str, state: dict[str, Any], stopped: str | None
) -> tuple[bool, bytes]:
    """What the line is, read the slow way: the whole state through `from_hash`."""
    if not state:
        return False, wb._unreadable_line(job_id, custom_id)
    fields = {k: v if isinstance(v, bytes) else str(v).encode() for k, v in state.items() if v != ""}
    try:
        record = JobRecord.from_hash(fields, job_id=job_id)
    except Exception:
        return False, wb._unreadable_line(job_id, custom_id)
    return b.output_line(record, custom_id, stopped)


async def finished_lines(r: aioredis.Redis, batch_id: str, n: int) -> tuple[list[bytes], list[bytes]]:
    """n finished lines of every kind in Redis, listed as done; the files they should make."""
    outputs: list[bytes] = []
    errors: list[bytes] = []
    async with r.pipeline(transaction=False) as pipe:
        for i in range(n):
            job_id = f"{now_ms():011x}{i:05x}{'ab' * 8}"
            custom_id = f'line {i} "é"' if i % 2 else f"r{i}"
            _, state = variants(i)
            if state:
                pipe.hset("sy:job:" + job_id, mapping=state)
            pipe.rpush(b.done_key(batch_id), f"{job_id} {custom_id}")
            is_output, line = expected_line(job_id, custom_id, state, b.CANCELLED)
            (outputs if is_output else errors).append(line)
        await pipe.execute()
    errors.append(b.not_run_line("x", b.CANCELLED))  # the input file's one line never ran
    return outputs, errors


def ctx_of(gw: Gateway, redis: aioredis.Redis, db: Database) -> WorkerCtx:
    ctx: Any = {
        "redis": redis,
        "db": db,
        "settings": gw.settings,
        "files": Files.from_settings(gw.settings, db),
    }
    return ctx  # type: ignore[no-any-return]


async def a_batch_to_finalize(gw: Gateway, key: str, r: aioredis.Redis, n: int) -> str:
    """A batch that was cancelled after n of its lines finished: what finalize finds."""
    created = await run_batch(sdk(gw, key), jsonl([chat_line("x", "hi")]))  # no worker: it waits
    await r.hset(
        b.batch_key(created.id),
        mapping={"status": b.CANCELLING, "total": n, "target": n, "stop": b.CANCELLED, "finalize_queued": 1},
    )
    return str(created.id)


async def files_of(gw: Gateway, key: str, batch_id: str) -> tuple[Any, bytes, bytes]:
    client = sdk(gw, key)
    batch = await client.batches.retrieve(batch_id)
    out = (await client.files.content(batch.output_file_id)).content if batch.output_file_id else b""
    err = (await client.files.content(batch.error_file_id)).content if batch.error_file_id else b""
    return batch, out, err


def joined(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


async def test_the_files_hold_what_output_line_makes_of_every_kind_of_line(
    gw: Gateway, key: str, redis_url: str
) -> None:
    """1,300 lines (three pages) of every kind: the output and error files are, byte for byte,
    the lines in the order they finished as `output_line` writes them from the whole state
    (a spliced line is what encoding its record gives)."""
    r = aioredis.Redis.from_url(redis_url)
    db = Database(gw.settings.database_url)
    try:
        batch_id = await a_batch_to_finalize(gw, key, r, 1300)
        outputs, errors = await finished_lines(r, batch_id, 1300)
        assert outputs and errors
        await wb._finalize(ctx_of(gw, r, db), batch_id)
        batch, out, err = await files_of(gw, key, batch_id)
        assert batch.status == "cancelled"
        assert out == joined(outputs)
        assert err == joined(errors)
        assert (batch.request_counts.completed, batch.request_counts.failed) == (len(outputs), len(errors))
    finally:
        await db.dispose()
        await r.aclose()


async def test_a_finalize_stopped_part_way_and_run_again_writes_every_line_once(
    gw: Gateway, key: str, redis_url: str
) -> None:
    """A finalize cancelled after it wrote its first page (a worker killed or its job timed
    out) leaves no file behind; the next run writes each line once, in order."""
    r = aioredis.Redis.from_url(redis_url)
    db = Database(gw.settings.database_url)
    tmp = Path(gw.settings.data_dir) / "tmp"
    try:
        batch_id = await a_batch_to_finalize(gw, key, r, 6000)
        outputs, errors = await finished_lines(r, batch_id, 6000)
        ctx = ctx_of(gw, r, db)
        before = set(tmp.glob("*.jsonl")) if tmp.exists() else set()
        first = asyncio.create_task(wb._finalize(ctx, batch_id))

        async def a_page_written() -> bool:
            return any(p.stat().st_size for p in set(tmp.glob("*.jsonl")) - before) if tmp.exists() else False

        while not await a_page_written():
            assert not first.done(), "the finalize ended before it was stopped"
            await asyncio.sleep(0)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        row = await get_batch(db, batch_id)
        assert row is not None and row.status not in b.TERMINAL, "stopped part way, not at the end"
        assert set(tmp.glob("*.jsonl")) - before == set()  # its temporary files went with it

        await wb._finalize(ctx, batch_id)
        batch, out, err = await files_of(gw, key, batch_id)
        assert batch.status == "cancelled"
        assert out == joined(outputs) and err == joined(errors)
        await wb._finalize(ctx, batch_id)  # once finished, a finalize run again changes nothing
        assert await files_of(gw, key, batch_id) == (batch, out, err)
    finally:
        await db.dispose()
        await r.aclose()


@pytest.mark.parametrize("i", range(12))
def test_a_line_is_spliced_only_when_its_result_is_its_body(i: int) -> None:
    """`_spliced_line` answers a line only when it is what `output_line` writes."""
    kind, state = variants(i)
    values = [
        None if state.get(f) in (None, "") else (v if isinstance(v := state[f], bytes) else str(v).encode())
        for f in wb.FINISHED_FIELDS
    ]
    spliced = wb._spliced_line("j" * 32, 'c "1"', values) if state else None
    is_output, line = expected_line("j" * 32, 'c "1"', state, None)
    if kind in ("chat, as stored", "embedding"):
        assert spliced == line and is_output
    else:
        assert spliced is None


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 7},
        ),
        ("/v1/embeddings", {"model": "e", "input": ["one two", "three"]}),
    ],
)
def test_validating_a_line_reads_it_as_dispatching_does_without_its_token_estimate(
    endpoint: str, body: dict[str, Any]
) -> None:
    """Validation reads every line without estimating its tokens (dispatch does, for admission):
    the same request otherwise, and the same errors."""
    raw = orjson.dumps({"custom_id": "c", "method": "POST", "url": endpoint, "body": body})
    line = b.Line(1, 0, len(raw) + 1, raw)
    full, quick = b.parse_line(line, endpoint), b.parse_line(line, endpoint, estimate=False)
    assert full.reserve_tokens > 0 and quick.reserve_tokens == 0
    assert dataclasses.replace(full, reserve_tokens=0) == quick
    bad = b.Line(1, 0, 3, orjson.dumps({"custom_id": "c", "method": "POST", "url": endpoint, "body": {}}))
    with pytest.raises(b.LineError) as slow_error:
        b.parse_line(bad, endpoint)
    with pytest.raises(b.LineError) as quick_error:
        b.parse_line(bad, endpoint, estimate=False)
    assert quick_error.value.as_dict() == slow_error.value.as_dict()
