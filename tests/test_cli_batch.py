"""`switchyard batch …` and `switchyard jobs …` run as subprocesses against a running Switchyard
(the app under uvicorn on loopback, real batch workers, the real Redis and database, a stand-in
provider): what they print, the files they write, their exit codes, the progress bar when it is
forced, Ctrl-C leaving the batch running, and the server's errors passed on with their message."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from switchyard.standin import StandIn
from tests.conftest import Gateway, chat_body, eventually, process_env
from tests.test_batch_api import HIGH_LIMITS, chat_line, jsonl, parse_jsonl
from tests.test_chat import served_over_http


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Server:
    url: str
    key: str
    tmp: Path

    async def start(self, *args: str, key: str | None = None) -> asyncio.subprocess.Process:
        env = process_env({"SWITCHYARD_URL": self.url, "SWITCHYARD_API_KEY": key or self.key})
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "switchyard.cli",
            *args,
            env=env,
            cwd=self.tmp,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def run(self, *args: str, key: str | None = None, timeout: float = 60) -> Run:
        proc = await self.start(*args, key=key)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return Run(proc.returncode, out.decode(), err.decode())

    def requests(self, name: str, lines: list[Any]) -> str:
        path = self.tmp / name
        path.write_bytes(jsonl(lines))
        return str(path)


@pytest.fixture
async def server(gw: Gateway, tmp_path: Path) -> AsyncIterator[Server]:
    key = await gw.create_key("cli", limits=HIGH_LIMITS)
    gw.start_worker()
    async with served_over_http(gw.settings) as url:
        yield Server(url, key, tmp_path)


async def test_submit_wait_writes_results_and_errors_with_a_progress_bar(
    server: Server, standin: StandIn
) -> None:
    lines = [chat_line("a", "alpha"), chat_line("b", "[400] refused"), chat_line("c", "gamma")]
    requests = server.requests("requests.jsonl", lines)
    run = await server.run(
        "batch", "submit", requests, "--endpoint", "/v1/chat/completions", "--metadata", "team=cli",
        "--wait", "--output", "out.jsonl", "--errors", "err.jsonl", "--progress", "always",
    )  # fmt: skip
    assert run.code == 0, run.err
    assert run.out == ""  # the results went to --output
    out = parse_jsonl((server.tmp / "out.jsonl").read_bytes())
    assert set(out) == {"a", "c"}
    assert out["a"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: alpha"
    errors = parse_jsonl((server.tmp / "err.jsonl").read_bytes())
    assert set(errors) == {"b"} and errors["b"]["response"]["status_code"] >= 400
    # the bar (rich's, forced without a terminal): the count done of the total and the rate
    assert "━" in run.err and "3/3" in run.err and "/s" in run.err and "ETA" in run.err
    assert "2 completed, 1 failed of 3" in run.err
    batch_id = run.err.split("batch ", 1)[1].split()[0]

    status = await server.run("batch", "status", batch_id, "--json")
    assert status.code == 0 and status.json()["metadata"] == {"team": "cli"}
    assert status.json()["status"] == "completed"
    results = await server.run("batch", "results", batch_id)
    assert results.code == 0 and set(parse_jsonl(results.out.encode())) == {"a", "c"}
    assert f"failed lines: {status.json()['error_file_id']}" in results.err


async def test_submit_without_wait_prints_the_id_then_status_list_and_results(server: Server) -> None:
    requests = server.requests("r.jsonl", [chat_line(f"n{i}", f"line {i}") for i in range(4)])
    run = await server.run("batch", "submit", requests)
    assert run.code == 0, run.err
    batch_id = run.out.strip()
    assert batch_id.startswith("batch_") and "validating" in run.err

    async def done() -> bool:
        status = await server.run("batch", "status", batch_id, "--json")
        return status.json()["status"] == "completed"

    await eventually(done, timeout=30, interval=0.2, what="the batch to complete")
    status = await server.run("batch", "status", batch_id)
    assert status.code == 0
    assert f"id              {batch_id}" in status.out and "4 completed, 0 failed of 4" in status.out
    listing = await server.run("batch", "list")
    assert listing.code == 0 and listing.out.splitlines()[0].startswith(f"{batch_id}  completed")
    listed = await server.run("batch", "list", "--json", "--limit", "1")
    assert [b["id"] for b in listed.json()["data"]] == [batch_id]

    results = await server.run("batch", "results", batch_id)  # to stdout
    assert results.code == 0 and set(parse_jsonl(results.out.encode())) == {"n0", "n1", "n2", "n3"}
    results = await server.run("batch", "results", batch_id, "--output", "res.jsonl")
    assert results.code == 0 and len(parse_jsonl((server.tmp / "res.jsonl").read_bytes())) == 4

    # a server's refusal: its message, exit 1
    cancel = await server.run("batch", "cancel", batch_id)
    assert (
        cancel.code == 1 and "409" in cancel.err and "cannot cancel a batch that is completed" in cancel.err
    )


async def test_a_failed_batch_exits_non_zero_with_its_errors_in_plain_lines(server: Server) -> None:
    requests = server.requests("bad.jsonl", [chat_line("x", "fine"), b"{not json"])
    run = await server.run("batch", "submit", requests, "--wait", "--progress", "never")
    assert run.code == 3, run.err
    assert "━" not in run.err  # no bar: plain lines
    assert "failed: 0 completed, 0 failed of 0" in run.err
    assert "(line 2)" in run.err and "invalid_json_line" in run.err


async def test_ctrl_c_while_waiting_leaves_the_batch_running(server: Server) -> None:
    requests = server.requests("slow.jsonl", [chat_line(f"s{i}", "[sleep:1.5] slow") for i in range(4)])
    proc = await server.start("batch", "submit", requests, "--wait", "--progress", "never")
    assert proc.stderr is not None
    seen = b""
    while b"in_progress" not in seen:
        seen += await asyncio.wait_for(proc.stderr.readline(), 30)
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    batch_id = seen.split(b"batch ", 1)[1].split()[0].decode()
    assert f"stopped watching; batch {batch_id} goes on" in err.decode()
    status = await server.run("batch", "status", batch_id, "--json")
    assert status.json()["status"] in ("in_progress", "finalizing", "completed")
    await server.run("batch", "cancel", batch_id)  # leave no slow work for the next test


async def test_the_idempotency_key_makes_a_retried_submit_the_same_batch(server: Server) -> None:
    requests = server.requests("once.jsonl", [chat_line("o", "once")])
    first = await server.run("batch", "submit", requests, "--idempotency-key", "nightly-1")
    again = await server.run("batch", "submit", requests, "--idempotency-key", "nightly-1")
    assert first.code == again.code == 0, again.err
    assert first.out == again.out
    listed = await server.run("batch", "list", "--json")
    assert [b["id"] for b in listed.json()["data"]] == [first.out.strip()]


async def test_errors_are_printed_with_their_message(server: Server, tmp_path: Path) -> None:
    bad_key = await server.run("batch", "list", key="sk-not-a-key")
    assert bad_key.code == 1 and "401" in bad_key.err
    missing = await server.run("batch", "status", "batch_nope")
    assert missing.code == 1 and "404" in missing.err and "not found" in missing.err
    nothing = await server.run("batch", "submit", str(tmp_path / "absent.jsonl"))
    assert nothing.code == 2 and "no such file" in nothing.err
    down = await Server("http://127.0.0.1:9", server.key, tmp_path).run("jobs", "list")
    assert down.code == 1 and "cannot reach" in down.err


# --- jobs ----------------------------------------------------------------------------------------------
@pytest.fixture
async def idle_server(gw: Gateway, tmp_path: Path) -> AsyncIterator[Server]:
    """No worker: submitted jobs stay queued."""
    key = await gw.create_key("jobs", limits=HIGH_LIMITS)
    async with served_over_http(gw.settings) as url:
        yield Server(url, key, tmp_path)


async def test_jobs_list_show_and_cancel(gw: Gateway, idle_server: Server) -> None:
    headers = {"X-API-Key": idle_server.key}
    ids = []
    for team in ("red", "blue", "red"):
        response = await gw.client.post(
            "/api/v1/completion?batch=1",
            json=chat_body(f"for {team}", metadata={"team": team}),
            headers=headers,
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["data"]["job_id"])

    listing = await idle_server.run("jobs", "list")
    assert listing.code == 0, listing.err
    assert [line.split()[0] for line in listing.out.splitlines()] == ids[::-1]
    assert all("queued" in line and "chat" in line for line in listing.out.splitlines())
    red = await idle_server.run("jobs", "list", "--metadata", "team=red", "--json")
    assert [j["id"] for j in red.json()] == [ids[2], ids[0]]
    limited = await idle_server.run("jobs", "list", "--limit", "1", "--kind", "chat_completion", "--json")
    assert [j["id"] for j in limited.json()] == [ids[2]]
    other_kind = await idle_server.run("jobs", "list", "--kind", "embedding")
    assert other_kind.code == 0 and other_kind.out == ""

    show = await idle_server.run("jobs", "show", ids[0])
    assert (
        show.code == 0 and f"id              {ids[0]}" in show.out and "metadata        team=red" in show.out
    )
    cancel = await idle_server.run("jobs", "cancel", ids[0])
    assert cancel.code == 0 and cancel.out.strip() == f"{ids[0]}  canceled"
    shown = await idle_server.run("jobs", "show", ids[0], "--json")
    assert shown.json()["status"] == "canceled"
    queued = await idle_server.run("jobs", "list", "--status", "queued", "--json")
    assert [j["id"] for j in queued.json()] == [ids[2], ids[1]]

    missing = await idle_server.run("jobs", "show", "job_missing")
    assert missing.code == 1 and "404" in missing.err
    usage = await idle_server.run("jobs", "list", "--metadata", "novalue")
    assert usage.code == 2 and "key=value" in usage.err
