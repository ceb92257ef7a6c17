"""Model discovery, the model routes of every dialect, and routing around failing providers.

Two stand-in providers over real HTTP: `alpha` has no model list in the file (its models are
discovered from its `GET /models`), `beta` lists its models with metadata and prices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from jobs.catalog import CATALOG_KEY, STATUS_KEY
from jobs.discovery import request_refresh
from switchyard.settings import Settings
from switchyard.standin import StandIn
from tests.conftest import Gateway, base_env, eventually, make_settings, running_gateway

ALPHA_MODELS = ["alpha/chat-one", "alpha/chat-two", "shared/model"]
BETA_MODELS = ["shared/model", "beta/painter", "beta/thinker", "beta/clip"]


def providers_toml(alpha_url: str, beta_url: str) -> str:
    return f"""
[[providers]]
name = "alpha"
kind = "openai"
base_url = "{alpha_url}"

[[providers]]
name = "beta"
kind = "openai"
base_url = "{beta_url}"
models = {orjson.dumps(BETA_MODELS).decode()}

[providers.prices."shared/model"]
prompt = 1000.0
completion = 2000.0

[providers.meta."beta/painter"]
type = "image"
company = "Painters"
description = "Paints pictures"

[providers.meta."beta/thinker"]
type = "chat"
name = "Beta Thinker"
context_length = 200000
supports_thinking = true
capabilities = ["vision", "function_calling"]

[providers.meta."beta/clip"]
type = "video"
max_duration_s = 8
"""


@pytest.fixture
async def alpha() -> AsyncIterator[StandIn]:
    server = await StandIn(models=list(ALPHA_MODELS)).start()
    yield server
    await server.stop()


@pytest.fixture
async def beta() -> AsyncIterator[StandIn]:
    server = await StandIn(models=["shared/model", "beta/painter", "beta/thinker", "beta/clip"]).start()
    yield server
    await server.stop()


@pytest.fixture
def models_settings(
    request: pytest.FixtureRequest,
    redis_url: str,
    sqlite_url: str,
    tmp_path: Path,
    alpha: StandIn,
    beta: StandIn,
) -> Settings:
    path = tmp_path / "providers.toml"
    path.write_text(providers_toml(alpha.base_url, beta.base_url))
    env = base_env(redis_url, sqlite_url, path, tmp_path / "data")
    marker = request.node.get_closest_marker("settings")
    if marker:
        env.update({k: str(v) for k, v in marker.kwargs.items()})
    return make_settings(env)


@pytest.fixture
async def mgw(models_settings: Settings) -> AsyncIterator[Gateway]:
    """The gateway with one worker, once its first discovery run has stored both listings."""
    async with running_gateway(models_settings) as gateway:
        gateway.start_worker()
        async with aioredis.Redis.from_url(models_settings.redis_url) as r:  # type: ignore[arg-type]
            await eventually(lambda: _statuses_of(r, "alpha", "beta"), what="the first discovery run")
        yield gateway


async def _statuses_of(r: aioredis.Redis, *names: str) -> dict[str, Any] | None:
    raw = await r.hgetall(STATUS_KEY)
    found = {k.decode(): orjson.loads(v) for k, v in raw.items()}
    return found if all(n in found for n in names) else None


@pytest.fixture
async def redis(models_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    async with aioredis.Redis.from_url(models_settings.redis_url) as r:  # type: ignore[arg-type]
        yield r


# --- discovery -----------------------------------------------------------------------------------
async def test_discovery_stores_listings_and_provider_status(
    mgw: Gateway, redis: aioredis.Redis, alpha: StandIn, beta: StandIn
) -> None:
    statuses = await _statuses_of(redis, "alpha", "beta")
    assert statuses is not None
    assert statuses["alpha"]["status"] == "active" and statuses["alpha"]["error"] is None
    assert statuses["alpha"]["models_count"] == 3
    assert statuses["beta"]["models_count"] == 4
    assert statuses["alpha"]["response_time_ms"] >= 0 and statuses["alpha"]["last_check"] > 0
    stored = orjson.loads(await redis.hget(CATALOG_KEY, "alpha"))
    assert [m["id"] for m in stored["models"]] == ALPHA_MODELS
    assert alpha.models_calls == 1 and beta.models_calls == 1


async def test_one_worker_runs_each_period_s_discovery(
    mgw: Gateway, redis: aioredis.Redis, alpha: StandIn
) -> None:
    mgw.start_worker()

    async def both_waiting_for_requests() -> bool:
        clients = await redis.client_list()
        return sum(1 for c in clients if c.get("cmd") == "blpop") == 2

    # Both workers are past their period check and wait for refresh requests: one listing call.
    await eventually(both_waiting_for_requests, what="both workers to wait for refresh requests")
    assert alpha.models_calls == 1
    assert (await request_refresh(redis, None, 10) or {}).get("status") == "success"
    assert alpha.models_calls == 2


async def test_a_failing_or_garbage_listing_keeps_the_old_catalog_and_shows_the_error(
    mgw: Gateway, redis: aioredis.Redis, alpha: StandIn
) -> None:
    before = await redis.hget(CATALOG_KEY, "alpha")
    for status, body, reason in [
        (500, None, "HTTP 500"),
        (200, b"<html>not a listing</html>", "not JSON"),
        (200, b'{"data": "nope"}', "no list of models"),
        (200, b'{"data": [{"name": "no id"}]}', "no model ids"),
    ]:
        alpha.models_status, alpha.models_body = status, body
        outcome = await request_refresh(redis, None, 10)
        assert outcome is not None
        assert outcome["status"] == "partial"
        assert outcome["providers_updated"] == ["beta"]
        assert reason in outcome["providers_failed"]["alpha"]
        statuses = await _statuses_of(redis, "alpha")
        assert statuses is not None
        assert statuses["alpha"]["status"] == "error"
        assert reason in statuses["alpha"]["error"]
        assert statuses["alpha"]["models_count"] == 3  # still routed from the old listing
        assert await redis.hget(CATALOG_KEY, "alpha") == before
    alpha.models_status, alpha.models_body = 200, None
    outcome = await request_refresh(redis, ["alpha"], 10)
    assert outcome is not None and outcome["status"] == "success"
    assert outcome["providers_updated"] == ["alpha"]
    statuses = await _statuses_of(redis, "alpha")
    assert statuses is not None and statuses["alpha"]["status"] == "active"


# --- native (000) and cloudgpt (001) listings ------------------------------------------------------
async def test_native_list_groups_by_type_with_counts(mgw: Gateway) -> None:
    key = await mgw.create_key()
    response = await mgw.client.get("/api/v1/models", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    models = data["models"]
    assert set(models) >= {"chat", "image", "completion", "video", "embedding"}
    assert [m["id"] for m in models["chat"]] == [
        "alpha/chat-one",
        "alpha/chat-two",
        "shared/model",
        "beta/thinker",
    ]
    assert [m["id"] for m in models["image"]] == ["beta/painter"]
    assert [m["id"] for m in models["video"]] == ["beta/clip"]
    thinker = models["chat"][3]
    assert thinker == {
        "id": "beta/thinker",
        "nvidia_model_id": "beta/thinker",
        "name": "Beta Thinker",
        "type": "chat",
        "description": None,
        "max_tokens": 200000,
        "context_length": 200000,
        "supports_thinking": True,
        "empresa": "beta",
        "provider": "beta",
        "capabilities": ["vision", "function_calling"],
    }
    assert models["image"][0]["empresa"] == "Painters"
    assert data["total"] == 6
    assert data["counts"] == {"alpha": 3, "beta": 3, "total": 6}


async def test_native_list_needs_a_key_and_follows_the_key_s_models(mgw: Gateway) -> None:
    anonymous = await mgw.client.get("/api/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["success"] is False
    narrow = await mgw.create_key("narrow", models=["beta/painter"])
    response = await mgw.client.get("/api/v1/models", params={"api_key": narrow})
    assert response.status_code == 200
    assert response.json()["data"]["total"] == 1
    hidden = await mgw.client.get("/api/v1/models/shared/model/info", headers={"X-API-Key": narrow})
    assert hidden.status_code == 404


async def test_native_list_with_stats_and_sync(mgw: Gateway, alpha: StandIn) -> None:
    key = await mgw.create_key()
    chat = await mgw.client.post(
        "/api/v1/completion",
        json={"model": "alpha/chat-one", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-API-Key": key},
    )
    assert chat.status_code == 200, chat.text

    async def counted() -> dict[str, Any] | None:
        response = await mgw.client.get("/api/v1/models?include_stats=true", headers={"X-API-Key": key})
        chat_models = response.json()["data"]["models"]["chat"]
        one = next(m for m in chat_models if m["id"] == "alpha/chat-one")
        return one["stats"] if one["stats"]["requests"] == 1 else None

    stats = await eventually(counted, what="usage to reach the database")
    assert stats["successful_requests"] == 1 and stats["total_tokens"] > 0

    alpha.models = [*ALPHA_MODELS, "alpha/new-one"]
    synced = await mgw.client.get("/api/v1/models?sync=true", headers={"X-API-Key": key})
    data = synced.json()["data"]
    assert data["sync"]["status"] == "success"
    assert "alpha/new-one" in [m["id"] for m in data["models"]["chat"]]
    assert "stats" not in data["models"]["chat"][0]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/api/v1/models?sync=maybe", "sync"),
        ("/api/v1/models?include_stats=2", "include_stats"),
        ("/api/v1/models?colour=red", "colour"),
        ("/api/v1/models/chat?limit=3", "limit"),
    ],
)
async def test_native_bad_query_is_400_naming_the_field(mgw: Gateway, path: str, problem: str) -> None:
    key = await mgw.create_key()
    response = await mgw.client.get(path, headers={"X-API-Key": key})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["details"][0]["field"] == problem


async def test_native_by_type_company_thinking_and_info(mgw: Gateway) -> None:
    key = await mgw.create_key()
    headers = {"X-API-Key": key}

    async def get(path: str) -> dict[str, Any]:
        response = await mgw.client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
        return response.json()["data"]  # type: ignore[no-any-return]

    image = await get("/api/v1/models/image")
    assert image["type"] == "image" and [m["id"] for m in image["models"]] == ["beta/painter"]
    thinking = await get("/api/v1/models/thinking")
    assert [m["id"] for m in thinking["models"]] == ["beta/thinker"]
    company = await get("/api/v1/models/ALPHA")
    assert company["company"] == "alpha" and company["total"] == 3  # its company, or its provider
    painters = await get("/api/v1/models/painters")
    assert [m["id"] for m in painters["models"]] == ["beta/painter"]
    info = await get("/api/v1/models/shared/model/info")
    assert info["id"] == "shared/model"
    assert info["providers"] == [{"name": "alpha", "status": "active"}, {"name": "beta", "status": "active"}]
    assert info["pricing"] == {"input_per_1k": 1.0, "output_per_1k": 2.0, "currency": "USD"}

    unknown = await mgw.client.get("/api/v1/models/alpha/chat-on/info", headers=headers)
    assert unknown.status_code == 404
    assert "alpha/chat-one" in unknown.json()["details"][0]["suggestions"]
    nobody = await mgw.client.get("/api/v1/models/nobody", headers=headers)
    assert nobody.status_code == 404
    assert "types: chat" in nobody.json()["message"]


async def test_cloudgpt_lists_per_modality_with_bearer_auth(mgw: Gateway) -> None:
    key = await mgw.create_key()
    headers = {"Authorization": f"Bearer {key}"}
    chat = (await mgw.client.get("/api/models/chat", headers=headers)).json()
    assert chat["object"] == "list"
    assert [m["id"] for m in chat["data"]] == [
        "alpha/chat-one",
        "alpha/chat-two",
        "shared/model",
        "beta/thinker",
    ]
    assert chat["data"][3] == {
        "id": "beta/thinker",
        "name": "Beta Thinker",
        "provider": "beta",
        "description": "Beta Thinker via beta",
        "context_window": 200000,
    }
    image = (await mgw.client.get("/api/models/image", headers=headers)).json()
    assert image["data"][0]["description"] == "Paints pictures"
    video = (await mgw.client.get("/api/models/video", headers=headers)).json()
    assert video["data"] == [
        {"id": "beta/clip", "name": "beta/clip", "provider": "beta", "description": "beta/clip via beta",
         "maxDuration": 8.0}
    ]  # fmt: skip
    anonymous = await mgw.client.get("/api/models/chat")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    bad = await mgw.client.get("/api/models/chat?page=2", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "page"
