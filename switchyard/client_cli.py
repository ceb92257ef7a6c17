"""`switchyard batch …` and `switchyard jobs …`: a client of a running Switchyard, over HTTP.

`--url` (or `SWITCHYARD_URL`, default http://127.0.0.1:8000) and `--key` (or
`SWITCHYARD_API_KEY`) say which server and whose work. Human output is plain lines (a live
progress bar on a terminal while `batch submit --wait` watches); `--json` prints the server's
objects instead. An error the server answers is printed with its message and exits 1.

Exit codes: 0 done, 1 the server refused or cannot be reached, 2 bad usage, 3 the batch ended
failed, expired or cancelled, 130 interrupted (the batch goes on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/images/generations")
BATCH_DONE = frozenset({"completed", "failed", "expired", "cancelled"})
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
POLL_FIRST_S = 1.0
POLL_MAX_S = 10.0
KIND_SCAN_PAGES = 20  # `jobs list --kind` filters here: at most this many pages of 100 are read
EXIT_FAILED, EXIT_USAGE, EXIT_BATCH_NOT_COMPLETED, EXIT_INTERRUPTED = 1, 2, 3, 130


class ApiError(Exception):
    """An answer of the server that is not a success, with the message it gave."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


def _message(response: httpx.Response) -> str:
    """The message of any of Switchyard's error shapes (OpenAI's, native, credits), else the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("message"):
            return str(body["message"])
        if isinstance(error, str):
            return error
    return response.text[:500]


class Api:
    """One server, one key: the few calls the commands make."""

    def __init__(self, url: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            reason = f"cannot reach {self.http.base_url} ({exc.__class__.__name__}: {exc})"
            raise ApiError(0, reason) from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _message(response))
        return response.json()

    def download(self, file_id: str, out: IO[bytes]) -> int:
        """A file's content written to `out` as it arrives; its size."""
        size = 0
        try:
            with self.http.stream("GET", f"/v1/files/{file_id}/content") as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(response.status_code, _message(response))
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot download {file_id} ({exc.__class__.__name__}: {exc})") from None
        out.flush()
        return size


def _say(text: str) -> None:
    print(f"switchyard: {text}", file=sys.stderr, flush=True)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"{option}: {value!r} is not key=value")
        pairs[name] = text
    return pairs


def _when(epoch: int | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


# --- batches -----------------------------------------------------------------------------------------
def _batch_counts(batch: dict[str, Any]) -> str:
    c = batch.get("request_counts") or {}
    return f"{c.get('completed', 0)} completed, {c.get('failed', 0)} failed of {c.get('total', 0)}"


def _batch_line(batch: dict[str, Any]) -> str:
    return f"{batch['id']}  {batch['status']:<11}  {_batch_counts(batch)}  {batch.get('endpoint', '')}"


def _batch_details(batch: dict[str, Any]) -> str:
    lines = [
        f"id              {batch['id']}",
        f"status          {batch['status']}",
        f"endpoint        {batch.get('endpoint')}",
        f"requests        {_batch_counts(batch)}",
        f"input_file_id   {batch.get('input_file_id')}",
        f"output_file_id  {batch.get('output_file_id') or '-'}",
        f"error_file_id   {batch.get('error_file_id') or '-'}",
        f"created_at      {_when(batch.get('created_at'))}",
        f"expires_at      {_when(batch.get('expires_at'))}",
    ]
    for name in ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at"):
        if batch.get(name):
            lines.append(f"{name:<16}{_when(batch[name])}")
    if batch.get("metadata"):
        lines.append("metadata        " + ", ".join(f"{k}={v}" for k, v in batch["metadata"].items()))
    for error in (batch.get("errors") or {}).get("data") or []:
        where = f" (line {error['line']})" if error.get("line") else ""
        lines.append(f"error           {error.get('code')}: {error.get('message')}{where}")
    return "\n".join(lines)


def _write_file(api: Api, file_id: str | None, target: str | None, what: str) -> None:
    """A batch's output or error file into `target` ('-' or None: stdout)."""
    if not file_id:
        return
    if target in (None, "-"):
        api.download(file_id, sys.stdout.buffer)
        return
    assert target is not None
    with open(target, "wb") as out:
        size = api.download(file_id, out)
    _say(f"{what} ({file_id}, {size} bytes) written to {target}")


def _progress_wanted(mode: str, as_json: bool) -> bool:
    if mode == "always":
        return True
    if mode == "never" or as_json:
        return False
    return sys.stderr.isatty()


class _Watch:
    """What `--wait` shows: a rich progress bar (counts, rate, ETA) or, without one, a plain
    line whenever the status or the counts change."""

    def __init__(self, batch_id: str, show_bar: bool, quiet: bool) -> None:
        self.batch_id = batch_id
        self.show_bar = show_bar
        self.quiet = quiet
        self.last: tuple[Any, ...] | None = None
        self.progress: Any = None
        self.task: Any = None

    @contextmanager
    def shown(self) -> Iterator[_Watch]:
        if not self.show_bar:
            yield self
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text("-/s" if speed is None else f"{speed:,.1f}/s")

        console = Console(file=sys.stderr, force_terminal=True if sys.stderr.isatty() is False else None)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
        )
        with self.progress:
            self.task = self.progress.add_task(f"{self.batch_id} validating", total=None, failed=0)
            yield self

    def update(self, batch: dict[str, Any]) -> None:
        c = batch.get("request_counts") or {}
        total, completed, failed = c.get("total") or 0, c.get("completed") or 0, c.get("failed") or 0
        if self.progress is not None:
            self.progress.update(
                self.task,
                description=f"{self.batch_id} {batch['status']}",
                total=total or None,
                completed=completed + failed,
                failed=failed,
            )
            return
        now = (batch["status"], total, completed, failed)
        if now != self.last and not self.quiet:
            _say(f"{self.batch_id} {batch['status']}: {_batch_counts(batch)}")
        self.last = now


def watch_batch(api: Api, batch: dict[str, Any], watch: _Watch) -> dict[str, Any]:
    """Poll the batch until it ends: every second while it moves, backing off to every 10 s
    while nothing changes."""
    interval = POLL_FIRST_S
    seen = None
    with watch.shown():
        while True:
            watch.update(batch)
            if batch["status"] in BATCH_DONE:
                return batch
            time.sleep(interval)
            batch = api.call("GET", f"/v1/batches/{batch['id']}")
            now = (batch["status"], json.dumps(batch.get("request_counts"), sort_keys=True))
            interval = POLL_FIRST_S if now != seen else min(interval * 1.5, POLL_MAX_S)
            seen = now


def cmd_batch_submit(api: Api, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        _say(f"{args.file}: no such file")
        return EXIT_USAGE
    metadata = _pairs(args.metadata, "--metadata")
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    with path.open("rb") as fh:
        uploaded = api.call(
            "POST",
            "/v1/files",
            files={"file": (path.name, fh, "application/jsonl")},
            data={"purpose": "batch"},
            headers=headers,
        )
    if not args.json:
        _say(f"uploaded {path.name} as {uploaded['id']} ({uploaded['bytes']} bytes)")
    body: dict[str, Any] = {
        "input_file_id": uploaded["id"],
        "endpoint": args.endpoint,
        "completion_window": "24h",
    }
    if metadata:
        body["metadata"] = metadata
    batch = api.call("POST", "/v1/batches", json=body, headers=headers)
    if not args.wait:
        if args.json:
            _print_json(batch)
        else:
            _say(f"batch {batch['id']} {batch['status']}; watch it: switchyard batch status {batch['id']}")
            print(batch["id"])
        return 0
    if not args.json:
        _say(f"batch {batch['id']} {batch['status']}")
    watch = _Watch(batch["id"], _progress_wanted(args.progress, args.json), quiet=args.json)
    try:
        batch = watch_batch(api, batch, watch)
    except KeyboardInterrupt:
        _say(f"stopped watching; batch {batch['id']} goes on (switchyard batch status {batch['id']})")
        return EXIT_INTERRUPTED
    return _finish(api, batch, args)


def _finish(api: Api, batch: dict[str, Any], args: argparse.Namespace) -> int:
    """The end of a watched batch: its files written, one summary line, the exit code."""
    if args.output or not args.json:
        _write_file(api, batch.get("output_file_id"), args.output, "output")
    if args.errors:
        _write_file(api, batch.get("error_file_id"), args.errors, "errors")
    elif batch.get("error_file_id") and not args.json:
        _say(f"failed lines: {batch['error_file_id']} (switchyard batch results {batch['id']} --errors F)")
    if args.json:
        _print_json(batch)
    else:
        _say(f"batch {batch['id']} {batch['status']}: {_batch_counts(batch)}")
        for error in (batch.get("errors") or {}).get("data") or []:
            where = f" (line {error['line']})" if error.get("line") else ""
            _say(f"  {error.get('code')}: {error.get('message')}{where}")
    return 0 if batch["status"] == "completed" else EXIT_BATCH_NOT_COMPLETED


def cmd_batch_list(api: Api, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.after:
        params["after"] = args.after
    page = api.call("GET", "/v1/batches", params=params)
    if args.json:
        _print_json(page)
    else:
        for batch in page["data"]:
            print(_batch_line(batch))
        if page.get("has_more"):
            _say(f"more: switchyard batch list --after {page['last_id']}")
    return 0


def cmd_batch_status(api: Api, args: argparse.Namespace) -> int:
    batch = api.call("GET", f"/v1/batches/{args.batch_id}")
    if args.json:
        _print_json(batch)
    else:
        print(_batch_details(batch))
    return 0


def cmd_batch_cancel(api: Api, args: argparse.Namespace) -> int:
    batch = api.call("POST", f"/v1/batches/{args.batch_id}/cancel")
    if args.json:
        _print_json(batch)
    else:
        print(_batch_line(batch))
    return 0


def cmd_batch_results(api: Api, args: argparse.Namespace) -> int:
    batch = api.call("GET", f"/v1/batches/{args.batch_id}")
    if not batch.get("output_file_id") and not batch.get("error_file_id"):
        _say(f"batch {batch['id']} is {batch['status']} and has no result files yet")
        return EXIT_FAILED
    _write_file(api, batch.get("output_file_id"), args.output, "output")
    if args.errors:
        _write_file(api, batch.get("error_file_id"), args.errors, "errors")
    elif batch.get("error_file_id"):
        _say(f"failed lines: {batch['error_file_id']} (add --errors F to write them)")
    return 0


# --- jobs --------------------------------------------------------------------------------------------
def _job_line(job: dict[str, Any]) -> str:
    model = job.get("model") or "-"
    return f"{job['id']}  {job['status']:<9}  {job['kind']:<12}  {model}  {job['created_at']}"


def _job_details(job: dict[str, Any]) -> str:
    lines = [f"{name:<16}{job.get(name)}" for name in ("id", "kind", "status", "priority", "model")]
    lines += [f"{name:<16}{job.get(name) or '-'}" for name in ("created_at", "started_at", "finished_at")]
    lines += [f"{name:<16}{job.get(name)}" for name in ("attempts", "credits_charged")]
    if job.get("metadata"):
        lines.append(f"{'metadata':<16}" + ", ".join(f"{k}={v}" for k, v in job["metadata"].items()))
    if job.get("error"):
        lines.append(f"{'error':<16}{job['error'].get('type')}: {job['error'].get('message')}")
    if job.get("result") is not None:
        lines.append(f"{'result':<16}{json.dumps(job['result'])}")
    return "\n".join(lines)


def cmd_jobs_list(api: Api, args: argparse.Namespace) -> int:
    """The key's jobs, newest first. `--kind` is filtered here, over at most KIND_SCAN_PAGES
    pages: the server's listing filters by status and metadata only."""
    params: dict[str, Any] = {"limit": 100 if args.kind else args.limit}
    if args.status:
        params["status"] = args.status
    for name, value in _pairs(args.metadata, "--metadata").items():
        params[f"metadata[{name}]"] = value
    jobs: list[dict[str, Any]] = []
    cursor = None
    for _ in range(KIND_SCAN_PAGES if args.kind else 1):
        page = api.call("GET", "/api/v1/jobs", params={**params, **({"cursor": cursor} if cursor else {})})
        jobs += [j for j in page["data"] if not args.kind or j["kind"] == args.kind]
        cursor = page["pagination"]["next_cursor"]
        if len(jobs) >= args.limit or not cursor:
            break
    jobs = jobs[: args.limit]
    if args.json:
        _print_json(jobs)
    else:
        for job in jobs:
            print(_job_line(job))
    return 0


def cmd_jobs_show(api: Api, args: argparse.Namespace) -> int:
    job = api.call("GET", f"/api/v1/jobs/{args.job_id}")["data"]
    if args.json:
        _print_json(job)
    else:
        print(_job_details(job))
    return 0


def cmd_jobs_cancel(api: Api, args: argparse.Namespace) -> int:
    job = api.call("DELETE", f"/api/v1/jobs/{args.job_id}")["data"]
    if args.json:
        _print_json(job)
    else:
        asked = " (cancel requested)" if job.get("cancel_requested") and job["status"] != "canceled" else ""
        print(f"{job['id']}  {job['status']}{asked}")
    return 0


# --- the parser --------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Any client command: the server's refusals become one line and exit code 1."""
    key = args.key or os.environ.get("SWITCHYARD_API_KEY")
    api = Api(args.url or os.environ.get("SWITCHYARD_URL") or DEFAULT_URL, key)
    try:
        return int(args.client_func(api, args))
    except ApiError as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    except argparse.ArgumentTypeError as exc:
        _say(str(exc))
        return EXIT_USAGE
    finally:
        api.close()


def _positive(value: str) -> int:
    n = int(value)
    if not 1 <= n <= 100:
        raise argparse.ArgumentTypeError("must be from 1 to 100")
    return n


def add_client_commands(sub: Any) -> None:
    """`batch` and `jobs` on the `switchyard` parser (switchyard/cli.py)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the Switchyard server (default $SWITCHYARD_URL or {DEFAULT_URL})")
    common.add_argument("--key", help="the API key (default $SWITCHYARD_API_KEY)")
    common.add_argument("--json", action="store_true", help="print the server's JSON objects")

    def command(parent: Any, name: str, func: Any, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help)
        parser.set_defaults(func=run, client_func=func)
        return parser

    batch = sub.add_parser("batch", help="OpenAI Batch API batches on a running Switchyard")
    batch_sub = batch.add_subparsers(dest="action", required=True)
    submit = command(batch_sub, "submit", cmd_batch_submit, "upload a JSONL file and create its batch")
    submit.add_argument("file", help="JSONL: one {custom_id, method, url, body} request a line")
    submit.add_argument("--endpoint", default=ENDPOINTS[0], choices=ENDPOINTS)
    submit.add_argument("--metadata", action="append", metavar="K=V", help="repeatable")
    submit.add_argument("--idempotency-key", help="sent as Idempotency-Key: a retry returns the same batch")
    submit.add_argument("--wait", action="store_true", help="watch it to the end, then write its results")
    submit.add_argument("--output", help="with --wait: the results' file (default: stdout)")
    submit.add_argument("--errors", help="with --wait: the file of the failed lines")
    submit.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="the live progress bar (auto: when stderr is a terminal)",
    )
    listing = command(batch_sub, "list", cmd_batch_list, "the key's batches, newest first")
    listing.add_argument("--limit", type=_positive, default=20)
    listing.add_argument("--after", help="a batch id: the page after it")
    command(batch_sub, "status", cmd_batch_status, "one batch").add_argument("batch_id")
    command(batch_sub, "cancel", cmd_batch_cancel, "cancel a batch").add_argument("batch_id")
    results = command(batch_sub, "results", cmd_batch_results, "a batch's output (and error) file")
    results.add_argument("batch_id")
    results.add_argument("--output", help="the results' file (default: stdout)")
    results.add_argument("--errors", help="the file of the failed lines")

    jobs = sub.add_parser("jobs", help="jobs on a running Switchyard")
    jobs_sub = jobs.add_subparsers(dest="action", required=True)
    jlist = command(jobs_sub, "list", cmd_jobs_list, "the key's jobs, newest first")
    jlist.add_argument("--status", choices=JOB_STATUSES)
    jlist.add_argument("--kind", help="only jobs of this kind (chat_completion, embedding, …)")
    jlist.add_argument("--metadata", action="append", metavar="K=V", help="repeatable: every pair must match")
    jlist.add_argument("--limit", type=_positive, default=20)
    command(jobs_sub, "show", cmd_jobs_show, "one job, with its result").add_argument("job_id")
    command(jobs_sub, "cancel", cmd_jobs_cancel, "cancel a queued or running job").add_argument("job_id")
