"""No input gets a 500 (issue 12): integers beyond 64 bits, bodies nested past the depth bound,
errors that echo what JSON cannot carry, forged cursors, credits and limits past their maxima,
and NUL characters bound for the database or in path and query parameters. Each is a 400 that
names the field, in the dialect's shape, and leaves no waiter behind."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import orjson
import pytest
import redis as sync_redis

from api.errors import APIDOCS, CLOUDGPT, CREDITS, DISCOVERY, NATIVE, OPENAI, render
from api.state import Services
from api.validation import MAX_DEPTH, check_bounds, decode_object
from jobs.accounting import CREDITS_KEY
from jobs.queues import INTERACTIVE
from storage.keys import MAX_CREDITS, MAX_LIMIT
from switchyard.errors import InvalidRequest, SwitchyardError
from tests.conftest import Gateway, admin_headers, chat_body
from tests.test_custom_models import persona

HUGE = 2**64  # one past what orjson (and Redis, and the databases) can hold


def services(gw: Gateway) -> Services:
    transport = gw.client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app.state.services  # type: ignore[attr-defined,no-any-return]


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def error_field(response: httpx.Response) -> str:
    """The field a 400 names, in whichever dialect's shape it came."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if body.get("success") is False:  # native
        return str(body["details"][0]["field"])
    error = body["error"]
    if isinstance(error, str):  # credits
        return error.split(":", 1)[0]
    if "param" in error:  # OpenAI's shape
        return str(error["param"])
    return str(error["details"]["field"])  # discovery


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-API-Key": key}


# --- 1. integers beyond 64 bits in forwarded bodies ----------------------------------------------
FORWARDED = [
    ("/v1/chat/completions", chat_body(seed=HUGE), "seed"),
    ("/v1/chat/completions", chat_body(unknown_field={"deep": [HUGE]}), "unknown_field.deep[0]"),
    ("/v1/chat/completions", chat_body(logit_bias={"50256": HUGE}), "logit_bias.50256"),
    ("/v1/chat/completions", chat_body(seed=-(2**63) - 1), "seed"),
    ("/api/v1/completion", chat_body(extra=HUGE), "extra"),
    ("/api/v1/chat", chat_body(seed=HUGE), "seed"),
    ("/v1/embeddings", {"model": "mock/echo", "input": [[1, HUGE]]}, "input[0][1]"),
    ("/v1/embeddings", {"model": "mock/echo", "input": [HUGE]}, "input[0]"),
]


@pytest.mark.parametrize(("path", "body", "field"), FORWARDED)
async def test_integers_beyond_64_bits_are_a_400_naming_the_field(
    gw: Gateway, key: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = await gw.client.post(path, content=_dumps(body), headers=bearer(key))
    assert error_field(response) == field
    assert "64-bit" in response.text
    assert services(gw).jobs.waiting == 0


def _dumps(value: Any) -> bytes:
    """JSON with integers of any size (orjson refuses those, which is the point)."""
    return json.dumps(value).encode()


async def test_a_body_the_queue_cannot_encode_leaves_no_waiter(gw: Gateway) -> None:
    """Past the edge's bounds (a caller inside the process): a 400, and the waiter table empty."""
    jobs = services(gw).jobs
    for payload in ({"seed": HUGE}, {"deep": nested(300)}):
        with pytest.raises(InvalidRequest):
            await jobs.enqueue("chat", payload, priority=INTERACTIVE, owner="k", dialect=OPENAI, notify=True)
    assert jobs.waiting == 0


# --- 2. depth and documented maxima --------------------------------------------------------------
def test_depth_is_bounded_at_64_levels() -> None:
    check_bounds({"a": nested(MAX_DEPTH - 1)})  # the object and 63 arrays: 64 levels
    with pytest.raises(InvalidRequest) as caught:
        check_bounds({"a": nested(MAX_DEPTH)})
    assert caught.value.details[0]["field"] == "a" + "[0]" * (MAX_DEPTH - 1)
    assert "nested deeper than 64 levels" in caught.value.message


def test_json_too_deep_for_the_decoder_is_a_400_naming_the_path() -> None:
    body = b'{"model": "m", "x": {"y": [1, ' + b"[" * 5000 + b"]" * 5000 + b"]}}"
    with pytest.raises(InvalidRequest) as caught:
        decode_object(body)
    assert caught.value.details[0]["field"] == "x.y[1]" + "[0]" * (MAX_DEPTH - 3)
    assert "nested deeper than 64 levels" in caught.value.message


DEEP_ROUTES = [
    "/v1/chat/completions",
    "/api/v1/completion",
    "/api/v1/chat",
    "/api/chat",
    "/v1/embeddings",
    "/api/v1/generate",
    "/v1/images/generations",
    "/api/v1/custom",
    "/api/v1/youtube/mp3",
    "/api/v1/lyrics/search",
    "/api/models/refresh",
]


@pytest.mark.parametrize("path", DEEP_ROUTES)
async def test_deep_json_is_a_400_on_every_json_route(gw: Gateway, key: str, path: str) -> None:
    for depth in (300, 1000, 20_000):
        body = b'{"model": "mock/echo", "x": ' + b"[" * depth + b"]" * depth + b"}"
        response = await gw.client.post(path, content=body, headers=bearer(key))
        assert error_field(response) == "x" + "[0]" * (MAX_DEPTH - 1)
        assert "nested deeper than 64 levels" in response.text
    assert services(gw).jobs.waiting == 0


async def test_max_tokens_has_its_documented_maximum(gw: Gateway, key: str) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        response = await gw.client.post(
            "/v1/chat/completions", json=chat_body(**{field: 10_000_001}), headers=bearer(key)
        )
        assert error_field(response) == field


# --- 3. the error renderer cannot fail ------------------------------------------------------------
ECHOING = [
    ("POST", "/api/v1/generate", {"prompt": "a cat", "seed": HUGE}, "seed"),
    ("POST", "/api/v1/custom", {"name": "x", "base_model": "mock/echo", "temperature": HUGE}, "temperature"),
    ("GET", "/api/v1/custom?page=18446744073709551616", None, "page"),
    ("GET", "/api/v1/custom?limit=18446744073709551616", None, "limit"),
    ("GET", "/api/v1/custom/stats?days=18446744073709551616", None, "days"),
    ("GET", "/api/v1/custom/18446744073709551616", None, "id"),
    ("GET", "/api/v1/jobs?limit=18446744073709551616", None, "limit"),
    ("GET", "/api/v1/filmes?page=18446744073709551616", None, "page"),
    ("GET", "/api/v1/filmes/18446744073709551616", None, "id"),
    ("GET", "/api/models?limit=18446744073709551616", None, "limit"),
    ("POST", "/api/v1/youtube/mp4", {"url": "https://youtu.be/x", "quality": HUGE}, "quality"),
    ("POST", "/api/models/refresh", {"providers": [HUGE]}, "providers[0]"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), ECHOING)
async def test_errors_that_echo_huge_integers_render(
    gw: Gateway, key: str, method: str, path: str, body: Any, field: str
) -> None:
    content = _dumps(body) if body is not None else None
    response = await gw.client.request(method, path, content=content, headers=bearer(key))
    assert error_field(response) == field


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize("dialect", [NATIVE, CLOUDGPT, CREDITS, OPENAI, DISCOVERY, APIDOCS])
def test_the_renderer_replaces_what_json_cannot_carry(dialect: str) -> None:
    for value in (HUGE, -(2**200), "lone \ud800 surrogate", nested(400), {1: {HUGE}}, 10**5000):
        err = InvalidRequest.field("seed", "is wrong", value)
        err.extra = {"echo": value} if dialect != NATIVE else {}
        response = render(dialect, err)
        assert response.status_code == 400
        body = orjson.loads(response.content)  # type: ignore[arg-type]
        assert ("details" in body) if dialect == NATIVE else ("error" in body)
    # even a value that cannot be represented at all: the same shape, the same status
    err = SwitchyardError("x", details=[{"field": "f", "message": "m", "value": Unprintable()}])
    err.status_code = 400
    err.headers = {"x-bad": "line\nbreak", "x-ok": "1"}
    response = render(dialect, err)
    assert response.status_code == 400
    assert response.headers.get("x-bad") is None
    orjson.loads(response.content)  # type: ignore[arg-type]


# --- 4. forged cursors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw", [b"99999999999999999999999999:abc", b"-5:abc", b"1:" + b"a" * 500, b"12:\x00", b"\xff\xfe"]
)
async def test_a_forged_cursor_is_a_400(gw: Gateway, key: str, raw: bytes) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = await gw.client.get(f"/api/v1/jobs?cursor={cursor}", headers=bearer(key))
    assert error_field(response) == "cursor"


# --- 5. credits and limits -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"credits": 2**63}, "credits"),
        ({"credits": MAX_CREDITS + 1}, "credits"),
        ({"limits": {"hourly": HUGE}}, "limits.hourly"),
        ({"limits": {"daily_tokens": MAX_LIMIT + 1}}, "limits.daily_tokens"),
        ({"limits": {"per_minute": {"chat": MAX_LIMIT + 1}}}, "limits.per_minute.chat"),
    ],
)
async def test_key_credits_and_limits_have_maxima(gw: Gateway, body: dict[str, Any], field: str) -> None:
    response = await gw.client.post(
        "/api/keys", content=_dumps({"name": "big", **body}), headers=admin_headers()
    )
    assert error_field(response) == field


async def test_top_ups_cannot_pass_the_maximum_balance(gw: Gateway) -> None:
    response = await gw.client.post(
        "/api/keys", json={"name": "rich", "credits": MAX_CREDITS - 5}, headers=admin_headers()
    )
    assert response.status_code == 201, response.text
    key_id = response.json()["id"]
    url = f"/api/keys/{key_id}/credits"
    # revoking takes negative amounts: bounded the same way
    for amount in (2**63 - 1, 2**63 - 1, MAX_CREDITS + 1, -(2**63), -(2**70), -(MAX_CREDITS + 1)):
        assert (
            error_field(await gw.client.post(url, json={"amount": amount}, headers=admin_headers()))
            == "amount"
        )
    assert error_field(await gw.client.post(url, json={"amount": 6}, headers=admin_headers())) == "amount"
    done = await gw.client.post(url, json={"amount": 5}, headers=admin_headers())
    assert done.status_code == 200 and done.json()["credits"] == MAX_CREDITS
    with sync_redis.Redis.from_url(gw.settings.redis_url or "") as r:
        assert int(r.hget(CREDITS_KEY, key_id) or 0) == MAX_CREDITS  # type: ignore[arg-type]
    listed = (await gw.client.get("/api/keys", headers=admin_headers())).json()["data"]
    assert [k["credits"] for k in listed if k["id"] == key_id] == [MAX_CREDITS]


def test_the_cli_refuses_credits_and_limits_past_their_maxima(env: dict[str, str]) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import process_env

    exe = str(Path(sys.executable).with_name("switchyard"))
    for extra in (["--credits", str(2**63)], ["--limits", '{"hourly": 18446744073709551616}']):
        done = subprocess.run(
            [exe, "keys", "create", "big", *extra],
            env=process_env(env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "--credits" in done.stderr or "--limits" in done.stderr


# --- 6. NUL characters ---------------------------------------------------------------------------
async def test_nul_in_stored_text_is_a_400(gw: Gateway, key: str) -> None:
    """On SQLite and on PostgreSQL (whose text cannot hold U+0000)."""
    made = await gw.client.post("/api/v1/custom", json=persona("mentor"), headers=bearer(key))
    assert made.status_code == 201, made.text
    model_id = made.json()["data"]["id"]
    for body, field in (
        (persona("a\x00b"), "name"),
        (persona(description="d\x00"), "description"),
        (persona(personality_summary="You are \x00 kind and patient with everyone."), "personality_summary"),
    ):
        assert error_field(await gw.client.post("/api/v1/custom", json=body, headers=bearer(key))) == field
    update = await gw.client.put(
        f"/api/v1/custom/{model_id}", json={"description": "\x00"}, headers=bearer(key)
    )
    assert error_field(update) == "description"
    named = await gw.client.post("/api/keys", json={"name": "k\x00"}, headers=admin_headers())
    assert error_field(named) == "name"
    listed = await gw.client.get("/api/keys", headers=admin_headers())
    assert listed.status_code == 200


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/jobs/ab%00cd", "job_id"),
        ("/api/v1/custom/%00", "model_id"),
        ("/api/v1/files/x%00y", "file_id"),
        ("/api/models/mock%00echo", "model_id"),
        ("/v1/models/mock%00", "model_id"),
        ("/api/v1/custom?category=%00", "category"),
        ("/api/models/search?q=a%00", "q"),
    ],
)
async def test_nul_in_path_and_query_parameters_is_a_400(
    gw: Gateway, key: str, path: str, field: str
) -> None:
    assert error_field(await gw.client.get(path, headers=bearer(key))) == field
