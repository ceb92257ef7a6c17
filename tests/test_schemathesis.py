"""schemathesis against the app's own OpenAPI schema, over real HTTP: the app (real Redis,
SQLite, a worker and stand-in providers, as tests/test_fuzz.py sets up) served by uvicorn on a
loopback port, every operation the schema lists (so routes added later are fuzzed too) with
valid and invalid data drawn from its declared parameters and body. No answer is a 5xx (501
where no provider of the kind is configured is allowed), and each answer conforms to the status
codes, content types and schemas declared for it. Calls that succeed (a served model, a prompt:
what random data seldom hits) are checked against their declared answers as well.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.routes import HTTPRoute
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_KEY
from tests.test_fuzz import Fuzzed, fuzzed  # noqa: F401 (the fixture, shared)

EXAMPLES_PER_OPERATION = 5  # ~100 operations, valid and invalid data: about a minute on a loaded machine
ADMIN_PREFIXES = ("/api/keys", "/api/admin", "/api/cache")


class Served:
    def __init__(self, f: Fuzzed, server: uvicorn.Server, task: asyncio.Task[None], port: int) -> None:
        self.f, self.server, self.task = f, server, task
        self.base_url = f"http://127.0.0.1:{port}"
        self.own: dict[str, str] = {}
        self.answered: set[str] = set()  # operations that answered 2xx, their shape checked


async def _serve(f: Fuzzed) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The app's lifespan already runs (the fixture holds it): uvicorn only serves HTTP.
    config = uvicorn.Config(f.app, lifespan="off", log_config=None, access_log=False)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])  # listening once this returns
    return server, asyncio.get_running_loop().create_task(server.main_loop()), port


@pytest.fixture
def served(fuzzed: Fuzzed) -> Iterator[Served]:  # noqa: F811
    server, task, port = fuzzed.loop.run(_serve(fuzzed))
    try:
        yield Served(fuzzed, server, task, port)
    finally:
        server.should_exit = True
        fuzzed.loop.run(asyncio.wait_for(task, 10))
        fuzzed.loop.run(server.shutdown())


def _headers(f: Fuzzed, path: str) -> dict[str, str]:
    key = ADMIN_KEY if path.startswith(ADMIN_PREFIXES) else f.key
    # A short wait bound: a job the stand-ins are slow on answers 202 instead of holding the run.
    return {"Authorization": f"Bearer {key}", "X-API-Key": key, "Prefer": "wait=0.5"}


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
@pytest.mark.timeout(150)
def test_schemathesis_finds_no_5xx_and_answers_match_the_schema(served: Served) -> None:
    document = httpx.get(f"{served.base_url}/schema/openapi.json", timeout=30).json()
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    keys = httpx.get(f"{served.base_url}/api/keys", headers=admin, timeout=30).json()["data"]
    model = "mock/echo"
    served.own = {"job_id": served.f.job_id, "model_id": served.f.custom_id, "model": model,
                  "selector": model, "name": "standin", "key_id": keys[0]["id"]}  # fmt: skip
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    listed = {(op.method.upper(), op.path) for op in operations}
    # Every route of the app is in the schema, so every route is fuzzed (the docs pages aside).
    for route in served.f.app.routes:
        for handler in getattr(route, "route_handlers", ()):
            hidden = handler.include_in_schema is False or route.path.startswith(("/docs", "/schema"))
            if hidden or not isinstance(route, HTTPRoute):
                continue  # the docs pages and their assets, /metrics (Prometheus' text)
            for method in handler.http_methods - {"HEAD", "OPTIONS"}:
                assert (method, route.path_format) in listed, f"{method} {route.path} is not in the schema"
    session = requests.Session()
    failures: list[str] = []
    for op in operations:
        try:
            fuzz(served, op, session)
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried, failures listed together
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
    # The answers checked are successes too, not only errors (54 operations on a quiet run).
    assert len(served.answered) >= 40, sorted(served.answered)
    assert served.f.services.jobs.waiting == 0


def fuzz(served: Served, op: Any, session: requests.Session) -> None:
    """`op` with valid and invalid data: never a 5xx, and the answer as the schema declares it."""
    strategies = [
        op.as_strategy(generation_mode=GenerationMode.POSITIVE),
        op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ]
    # Ids that exist, so that valid data gets past the lookup to the code behind it.
    names = {p.name for p in op.path_parameters}
    own = {name: value for name, value in served.own.items() if name in names}
    if own and names <= set(own) and not (op.method.upper() == "DELETE" and "key_id" in own):
        strategies.append(op.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=own))
    strategy = st.one_of(*strategies)
    headers = _headers(served.f, op.path)
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=served.base_url, session=session, headers=headers, timeout=30)
        status = response.status_code
        assert status < 500 or status == 501, (
            f"{case.method} {case.formatted_path} -> {status} {response.text[:300]}"
        )
        case.validate_response(response, checks=checks)
        if 200 <= status < 300:
            served.answered.add(f"{case.method} {case.path} {status}")

    run()


USER = {"email": "fuzz@example.com", "password": "a long passphrase"}
CHAT = {"model": "mock/echo", "messages": [{"role": "user", "content": "hello"}]}
# Calls that succeed, so that the answers the fuzzer seldom reaches (a body it would have to
# guess: a served model, a prompt) are checked against their declared schema too.
VALID_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/chat/completions", {"body": CHAT}),
    ("POST", "/v1/chat/completions", {"body": CHAT, "query": {"batch": "1"}}),  # 202: OpenAI's job
    ("POST", "/v1/chat/completions", {"body": {**CHAT, "stream": True}}),  # server-sent events
    ("POST", "/api/v1/completion", {"body": CHAT}),
    ("POST", "/api/v1/completion", {"body": CHAT, "query": {"batch": "1"}}),  # 202: the native job
    ("POST", "/api/v1/chat", {"body": CHAT}),
    ("POST", "/api/chat", {"body": CHAT}),
    ("POST", "/api/llm/generate", {"body": CHAT}),
    ("POST", "/api/llm/instruct", {"body": CHAT}),
    ("POST", "/v1/embeddings", {"body": {"model": "mock/embed", "input": ["a", "b"]}}),
    ("POST", "/api/embedding", {"body": {"model": "mock/embed", "input": "a"}}),
    ("GET", "/v1/models/{model_id}", {"path_parameters": {"model_id": "mock/echo"}}),
    ("GET", "/api/models/{model_id}", {"path_parameters": {"model_id": "mock/echo"}}),
    ("GET", "/api/v1/models/{selector}", {"path_parameters": {"selector": "mock/echo/info"}}),
    ("GET", "/api/v1/models/{selector}", {"path_parameters": {"selector": "chat"}}),
    ("GET", "/api/v1/models", {"query": {"include_stats": "true"}}),
    ("GET", "/api/v1/status", {"query": {"include_chart": "true"}}),
    ("POST", "/api/v1/generate", {"body": {"model": "flux", "prompt": "a red square"}}),
    ("POST", "/v1/images/generations", {"body": {"model": "flux", "prompt": "a red square"}}),
    ("POST", "/api/image", {"body": {"model": "flux", "prompt": "a red square"}}),  # the image's bytes
    (
        "POST",
        "/api/v1/custom",
        {"body": {"name": "tutor", "personality_summary": "You are a patient tutor."}},
    ),
    ("POST", "/api/admin/users", {"body": USER}),
    ("GET", "/api/admin/overview", {}),  # after the user: one with its keys and credits
    ("POST", "/api/auth/signin", {"body": USER, "session": True}),
    ("GET", "/api/auth/me", {"session": True}),  # the sign-in's cookie, no key
]


@pytest.mark.timeout(60)
def test_valid_calls_answer_as_their_schema_declares(served: Served) -> None:
    document = httpx.get(f"{served.base_url}/schema/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    failures = []
    for method, path, parts in VALID_CALLS:
        op = schema[path][method]
        parts = dict(parts)  # the table is shared by every run
        session_only = parts.pop("session", False)
        case = op.Case(media_type="application/json" if "body" in parts else None, **parts)
        headers = {} if session_only else {**_headers(served.f, path), "Prefer": "wait=20"}
        response = case.call(base_url=served.base_url, session=session, headers=headers, timeout=30)
        expected = (
            202
            if parts.get("query", {}).get("batch") == "1"
            else int(next(iter(op.definition.raw["responses"])))
        )
        try:
            assert response.status_code == expected, f"{response.status_code} {response.text[:300]}"
            case.validate_response(response, checks=checks)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{method} {path} {parts}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)

    # A batch's life: its file uploaded, the batch made, read (the worker may have finished it:
    # its output file then), listed, the file read and deleted; each answer as declared. (Cancel
    # answers the same Batch object; here the batch may be over before it could be cancelled.)
    def call(method: str, path: str, **parts: Any) -> dict[str, Any]:
        case = schema[path][method].Case(**parts)
        response = case.call(base_url=served.base_url, session=session, headers=_headers(served.f, path))
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text[:300]}"
        case.validate_response(response, checks=checks)
        return response.json()  # type: ignore[no-any-return]

    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": CHAT}
    upload = {"file": json.dumps(line).encode() + b"\n", "purpose": "batch"}
    file = call("POST", "/v1/files", body=upload, media_type="multipart/form-data")
    batch = call(
        "POST",
        "/v1/batches",
        body={"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        media_type="application/json",
    )
    call("GET", "/v1/batches/{batch_id}", path_parameters={"batch_id": batch["id"]})
    assert call("GET", "/v1/batches")["data"], "the batch is listed"
    assert call("GET", "/v1/files")["data"], "the file is listed"
    call("GET", "/v1/files/{file_id}", path_parameters={"file_id": file["id"]})
    call("DELETE", "/v1/files/{file_id}", path_parameters={"file_id": file["id"]})
