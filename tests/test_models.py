"""Model discovery, the model routes of every dialect, and routing around failing providers.

Two stand-in providers over real HTTP: `alpha` has no model list in the file (its models are
discovered from its `GET /models`), `beta` lists its models with metadata and prices.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from jobs.catalog import CATALOG_KEY, STATUS_KEY
from jobs.discovery import COOLDOWN_KEY, FAILS_KEY, request_refresh
from switchyard.redis_server import free_port
from switchyard.settings import Settings
from switchyard.standin import StandIn
from tests.conftest import (
    ADMIN_KEY,
    Gateway,
    admin_headers,
    base_env,
    eventually,
    get_job,
    make_settings,
    running_gateway,
)

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


async def test_a_plain_list_of_ids_is_a_listing(mgw: Gateway, redis: aioredis.Redis, alpha: StandIn) -> None:
    """Pollinations' image API lists its models as `["flux", "turbo", ...]`."""
    alpha.models_body = orjson.dumps([*ALPHA_MODELS, "alpha/plain"])
    outcome = await request_refresh(redis, ["alpha"], 10)
    assert outcome is not None and outcome["status"] == "success", outcome
    stored = orjson.loads(await redis.hget(CATALOG_KEY, "alpha"))
    assert [m["id"] for m in stored["models"]] == [*ALPHA_MODELS, "alpha/plain"]
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


# --- discovery (003) -------------------------------------------------------------------------------
DISCOVERY_FIELDS = {
    "id", "name", "provider", "providers", "type", "company", "context_length", "max_tokens", "supports_chat",
    "supports_completion", "supports_thinking", "input_cost", "output_cost", "description", "capabilities",
    "created_at", "updated_at",
}  # fmt: skip


async def test_discovery_list_shape_and_filters(mgw: Gateway) -> None:
    response = await mgw.client.get("/api/models")  # no key needed
    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["id"] for m in body["models"]] == sorted([*ALPHA_MODELS, *BETA_MODELS[1:]])
    assert body["count"] == 6
    assert body["providers"] == ["alpha", "beta"]
    assert body["cache_hit"] is True
    assert body["timestamp"].endswith("Z")
    assert body["pagination"] == {
        "limit": 50, "offset": 0, "total": 6, "has_next": False, "next_offset": None, "next_cursor": None,
    }  # fmt: skip
    shared = next(m for m in body["models"] if m["id"] == "shared/model")
    assert set(shared) >= DISCOVERY_FIELDS
    assert shared["providers"] == ["alpha", "beta"] and shared["provider"] == "alpha"
    assert shared["input_cost"] == 1.0 and shared["output_cost"] == 2.0
    assert shared["supports_chat"] is True and shared["supports_completion"] is True

    async def ids(params: dict[str, Any]) -> list[str]:
        r = await mgw.client.get("/api/models", params=params)
        assert r.status_code == 200, (params, r.text)
        return [m["id"] for m in r.json()["models"]]

    assert await ids({"provider": "beta"}) == ["beta/clip", "beta/painter", "beta/thinker", "shared/model"]
    assert await ids({"supports_chat": "false"}) == ["beta/clip", "beta/painter"]
    assert await ids({"min_context": "100000"}) == ["beta/thinker"]
    assert await ids({"max_cost": "2.5"}) == ["shared/model"]
    assert await ids({"max_cost": "1.5"}) == []
    assert await ids({"capabilities": "vision,function_calling"}) == ["beta/thinker"]
    assert await ids({"capabilities": '["vision"]', "provider": "alpha"}) == []
    assert await ids({"type": "video"}) == ["beta/clip"]


async def test_discovery_pagination_by_offset_and_cursor(mgw: Gateway) -> None:
    everything = [m["id"] for m in (await mgw.client.get("/api/models")).json()["models"]]
    first = (await mgw.client.get("/api/models?limit=4")).json()
    assert [m["id"] for m in first["models"]] == everything[:4]
    assert first["pagination"]["has_next"] is True and first["pagination"]["next_offset"] == 4
    by_offset = (await mgw.client.get("/api/models?limit=4&offset=4")).json()
    assert [m["id"] for m in by_offset["models"]] == everything[4:]
    assert by_offset["pagination"]["has_next"] is False
    cursor = first["pagination"]["next_cursor"]
    by_cursor = (await mgw.client.get("/api/models", params={"limit": 4, "cursor": cursor})).json()
    assert [m["id"] for m in by_cursor["models"]] == everything[4:]
    assert by_cursor["pagination"]["offset"] == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("supports_chat=perhaps", "supports_chat"),
        ("min_context=lots", "min_context"),
        ("min_context=-1", "min_context"),
        ("max_cost=-2", "max_cost"),
        ("max_cost=nan", "max_cost"),
        ("provider=nobody", "provider"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=x", "offset"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=eyJpZCI6ImEifQ&offset=1", "cursor"),
        ("type=audio", "type"),
        ("capabilities=[1,2]", "capabilities"),
        ("sort=name", "sort"),
    ],
)
async def test_discovery_bad_filters_are_400_invalid_filter(mgw: Gateway, query: str, field: str) -> None:
    response = await mgw.client.get(f"/api/models?{query}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"]["code"] == "INVALID_FILTER"
    assert body["error"]["details"]["field"] == field
    assert field in body["error"]["message"]
    assert body["timestamp"].endswith("Z")


async def test_discovery_search(mgw: Gateway) -> None:
    response = await mgw.client.get("/api/models/search", params={"q": "chat", "supports_chat": "true"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["id"] for m in body["models"]] == ["alpha/chat-one", "alpha/chat-two"]
    assert body["count"] == 2 and body["query"] == "chat"
    assert body["filters_applied"] == {"supports_chat": True}
    described = (await mgw.client.get("/api/models/search", params={"q": "paints"})).json()
    assert [m["id"] for m in described["models"]] == ["beta/painter"]
    exact_first = (await mgw.client.get("/api/models/search", params={"q": "shared/model"})).json()
    assert exact_first["models"][0]["id"] == "shared/model"
    filtered = (
        await mgw.client.get(
            "/api/models/search",
            params={"q": "beta", "min_context": "1000", "max_input_cost": "5", "capabilities": "vision"},
        )
    ).json()
    assert filtered["models"] == []
    assert filtered["filters_applied"] == {
        "min_context": 1000,
        "max_input_cost": 5.0,
        "capabilities": ["vision"],
    }
    thinker = (
        await mgw.client.get(
            "/api/models/search", params={"q": "thinker", "capabilities": ["vision", "function_calling"]}
        )
    ).json()
    assert [m["id"] for m in thinker["models"]] == ["beta/thinker"]
    empty_q = await mgw.client.get("/api/models/search?q=")
    assert empty_q.status_code == 400 and empty_q.json()["error"]["details"]["field"] == "q"


async def test_discovery_model_details_and_unknown_model(mgw: Gateway) -> None:
    response = await mgw.client.get("/api/models/beta/thinker")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["id"] == "beta/thinker" and body["model"]["context_length"] == 200000
    assert set(body["model"]) >= DISCOVERY_FIELDS | {"training_data", "knowledge_cutoff"}
    assert body["provider_info"]["name"] == "beta" and body["provider_info"]["status"] == "active"
    assert body["provider_info"]["last_check"].endswith("Z")
    missing = await mgw.client.get("/api/models/beta/thinkr")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "MODEL_NOT_FOUND"
    assert error["details"]["model_id"] == "beta/thinkr"
    assert error["details"]["available_models"][0] == "beta/thinker"  # the closest first


async def test_discovery_refresh_needs_a_key_and_validates_its_body(mgw: Gateway, alpha: StandIn) -> None:
    anonymous = await mgw.client.post("/api/models/refresh")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "UNAUTHORIZED"
    key = await mgw.create_key()
    headers = {"Authorization": f"Bearer {key}"}
    for body, field in [
        ({"providers": ["nobody"]}, "providers"),
        ({"providers": "alpha"}, "providers"),
        ({"force": "yes"}, "force"),
        ({"everything": True}, "everything"),
    ]:
        bad = await mgw.client.post("/api/models/refresh", json=body, headers=headers)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json()["error"]["details"]["field"] == field
    calls = alpha.models_calls
    alpha.models = ["alpha/only"]
    done = await mgw.client.post(
        "/api/models/refresh", json={"providers": ["alpha"], "force": True}, headers=headers
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "success" and body["message"] == "Models refreshed successfully"
    assert body["providers_updated"] == ["alpha"] and body["models_discovered"] == 5
    assert body["duration_ms"] >= 0 and body["timestamp"].endswith("Z")
    assert alpha.models_calls == calls + 1
    listed = (await mgw.client.get("/api/providers/alpha/models")).json()
    assert [m["id"] for m in listed["models"]] == ["alpha/only"]
    gone = await mgw.client.post(
        "/api/v1/chat",
        json={"model": "alpha/chat-one", "messages": [{"role": "user", "content": "x"}]},
        headers=headers,
    )
    assert gone.status_code == 404


async def test_discovery_refresh_without_a_worker_is_202(models_settings: Settings) -> None:
    async with running_gateway(models_settings) as gw:
        key = await gw.create_key()
        response = await gw.client.post(
            "/api/models/refresh", headers={"Authorization": f"Bearer {key}", "Prefer": "wait=0.2"}
        )
        assert response.status_code == 202
        assert response.json()["status"] == "queued"


async def test_provider_status_and_provider_models(mgw: Gateway, alpha: StandIn) -> None:
    status = (await mgw.client.get("/api/providers/status")).json()
    assert set(status["providers"]) == {"alpha", "beta"}
    a = status["providers"]["alpha"]
    assert a["status"] == "active" and a["models_count"] == 3 and a["error"] is None
    assert a["last_check"].endswith("Z") and a["response_time_ms"] >= 0
    assert status["summary"]["total_providers"] == 2 and status["summary"]["active_providers"] == 2
    assert status["summary"]["total_models"] == 6 and status["summary"]["last_update"].endswith("Z")

    models = (await mgw.client.get("/api/providers/beta/models")).json()
    assert models["provider"] == "beta" and models["count"] == 4 and models["cache_hit"] is True
    assert [m["id"] for m in models["models"]] == [
        "beta/clip",
        "beta/painter",
        "beta/thinker",
        "shared/model",
    ]
    assert models["last_updated"].endswith("Z")
    unknown = await mgw.client.get("/api/providers/nobody/models")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "PROVIDER_NOT_FOUND"
    needs_key = await mgw.client.get("/api/providers/alpha/models?refresh=true")
    assert needs_key.status_code == 401
    key = await mgw.create_key()
    alpha.models = [*ALPHA_MODELS, "alpha/fresh"]
    refreshed = await mgw.client.get("/api/providers/alpha/models?refresh=true", headers={"X-API-Key": key})
    assert refreshed.json()["cache_hit"] is False
    assert "alpha/fresh" in [m["id"] for m in refreshed.json()["models"]]
    bad = await mgw.client.get("/api/providers/alpha/models?refresh=sometimes")
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "refresh"


async def test_cache_stats_and_clear(mgw: Gateway, redis: aioredis.Redis) -> None:
    await mgw.client.get("/api/models")
    await mgw.client.get("/api/providers/alpha/models")
    stats = (await mgw.client.get("/api/cache/stats")).json()
    cache = stats["cache_stats"]
    assert cache["hits"] == 2 and cache["misses"] == 0 and cache["hit_rate"] == 100.0
    assert cache["total_entries"] == 6 and cache["memory_usage_mb"] > 0
    assert cache["oldest_entry"].endswith("Z") and cache["newest_entry"].endswith("Z")
    assert stats["provider_stats"]["alpha"] == {"hits": 2, "misses": 0, "hit_rate": 100.0}
    assert stats["provider_stats"]["beta"] == {"hits": 1, "misses": 0, "hit_rate": 100.0}

    anonymous = await mgw.client.delete("/api/cache?provider=alpha")
    assert anonymous.status_code == 401
    key = await mgw.create_key()
    not_admin = await mgw.client.delete("/api/cache?provider=alpha", headers={"X-API-Key": key})
    assert not_admin.status_code == 403
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    bad = await mgw.client.delete("/api/cache?provider=nobody", headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "provider"
    cleared = await mgw.client.delete("/api/cache?provider=alpha", headers=admin)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json() == {
        "status": "success",
        "message": "Cache cleared for provider: alpha",
        "cleared_entries": 3,
    }
    # A worker lists the provider again at once.
    await eventually(lambda: redis.hexists(CATALOG_KEY, "alpha"), what="alpha's listing to come back")
    stats = (await mgw.client.get("/api/cache/stats")).json()
    assert stats["provider_stats"]["alpha"]["hits"] == 0


async def test_health_in_the_discovery_shape(mgw: Gateway) -> None:
    response = await mgw.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    # the fixture's Redis has no persistence: degraded, saying so (healthy: tests/test_health.py)
    assert body["status"] == "degraded" and body["timestamp"].endswith("Z")
    assert len(body["warnings"]) == 1 and "Redis has no persistence" in body["warnings"][0]
    assert body["services"]["redis"] == "ok" and body["services"]["database"] == "ok"
    assert body["services"]["discovery"] == "ok" and body["services"]["cache"] == "ok"
    assert body["services"]["providers"] == {"alpha": "ok", "beta": "ok"}
    assert body["metrics"]["uptime_seconds"] >= 0 and body["metrics"]["memory_usage_mb"] > 0
    assert 0 <= body["metrics"]["cache_hit_rate"] <= 100


# --- /ws/models ----------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[str]:
    """Another web process: the app under uvicorn, with WebSockets, on a free loopback port."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _next(ws: Any) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[no-any-return]


async def test_a_refresh_that_changes_the_catalog_pushes_events_to_every_web_process(
    mgw: Gateway, models_settings: Settings, alpha: StandIn, redis: aioredis.Redis
) -> None:
    key = await mgw.create_key()
    async with served(models_settings) as first, served(models_settings) as second:
        async with (
            connect(f"{first}/ws/models?api_key={key}") as ws1,
            connect(second + "/ws/models", additional_headers={"X-API-Key": key}) as ws2,
        ):
            for ws in (ws1, ws2):
                hello = await _next(ws)
                assert hello["type"] == "connected" and hello["models"] == 6
            # alpha drops chat-two, adds brand-new and names chat-one
            listing = {"data": [{"id": "alpha/chat-one", "name": "Chat One"}, {"id": "alpha/brand-new"},
                                {"id": "shared/model"}]}  # fmt: skip
            alpha.models_body = orjson.dumps(listing)
            refreshed = await mgw.client.post("/api/models/refresh", headers={"X-API-Key": key})
            assert refreshed.json()["changes"] == 3
            for ws in (ws1, ws2):
                events = [await _next(ws) for _ in range(3)]
                by_type = {e["type"]: e for e in events}
                assert set(by_type) == {"model_added", "model_updated", "model_removed"}
                assert by_type["model_added"]["model"]["id"] == "alpha/brand-new"
                assert by_type["model_added"]["model"]["provider"] == "alpha"
                assert by_type["model_updated"]["model"]["id"] == "alpha/chat-one"
                assert by_type["model_updated"]["model"]["name"] == "Chat One"
                assert by_type["model_updated"]["changes"] == ["name"]
                assert by_type["model_removed"]["model"]["id"] == "alpha/chat-two"
                assert all(e["timestamp"].endswith("Z") for e in events)
            # A refresh that changes nothing sends nothing.
            again = await mgw.client.post("/api/models/refresh", headers={"X-API-Key": key})
            assert again.json()["changes"] == 0
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws1.recv(), 0.3)


async def _close_code(ws: Any) -> int:
    """The code the server closed this socket with (it sends nothing before)."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return int(closed.value.rcvd.code)


async def test_a_model_updates_socket_needs_a_valid_key(mgw: Gateway, models_settings: Settings) -> None:
    key = await mgw.create_key()
    revoked = await mgw.client.post("/api/keys", json={"name": "gone"}, headers=admin_headers())
    await mgw.client.delete(f"/api/keys/{revoked.json()['id']}", headers=admin_headers())
    async with served(models_settings) as url:
        for suffix, headers in (
            ("", {}),
            ("?api_key=sk-not-a-key", {}),
            ("", {"Authorization": "Bearer sk-not-a-key"}),
            (f"?api_key={revoked.json()['key']}", {}),
        ):
            async with connect(url + "/ws/models" + suffix, additional_headers=headers) as ws:
                assert await _close_code(ws) == 1008, (suffix, headers)
        for suffix, headers in (
            (f"?api_key={key}", {}),
            ("", {"Authorization": f"Bearer {key}"}),
            ("", {"X-API-Key": key}),
        ):
            async with connect(url + "/ws/models" + suffix, additional_headers=headers) as ws:
                assert (await _next(ws))["type"] == "connected"


@pytest.mark.settings(SWITCHYARD_WS_MAX_SOCKETS="3")
async def test_model_updates_sockets_are_capped_per_process(mgw: Gateway, models_settings: Settings) -> None:
    key = await mgw.create_key()
    async with served(models_settings) as url:
        target = f"{url}/ws/models?api_key={key}"
        async with contextlib.AsyncExitStack() as stack:
            held = [await stack.enter_async_context(connect(target)) for _ in range(3)]
            for ws in held:
                assert (await _next(ws))["type"] == "connected"
            async with connect(target) as over:
                assert await _close_code(over) == 1013
            async with connect(url + "/ws/models") as anonymous:  # over the cap: refused before the key
                assert await _close_code(anonymous) == 1013
            await held[0].close()

            async def admitted() -> bool:
                async with connect(target) as again:
                    try:
                        return (await _next(again))["type"] == "connected"
                    except ConnectionClosed:
                        return False

            await eventually(admitted, what="a socket to be let in once one closed")


# --- routing: fallbacks and cooldowns ----------------------------------------------------------------
def _chat(model: str, text: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def test_first_provider_down_the_fallback_serves_and_the_job_says_so(
    mgw: Gateway, alpha: StandIn, beta: StandIn
) -> None:
    key = await mgw.create_key()
    await alpha.stop()  # connection refused
    response = await mgw.client.post(
        "/api/v1/completion", json=_chat("shared/model"), headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text
    job = await get_job(mgw.client, key, response.headers["x-job-id"])
    assert job["provider"] == "beta"
    assert job["attempts"] == 3  # two on alpha, then beta
    assert beta.chat_calls == 1


@pytest.mark.settings(SWITCHYARD_PROVIDER_COOLDOWN_FAILURES="2", SWITCHYARD_PROVIDER_COOLDOWN_S="30")
async def test_a_provider_failing_in_a_row_cools_down_and_is_skipped(
    mgw: Gateway, alpha: StandIn, beta: StandIn, redis: aioredis.Redis
) -> None:
    key = await mgw.create_key()
    headers = {"X-API-Key": key}
    alpha.status = 500
    first = await mgw.client.post("/api/v1/completion", json=_chat("shared/model", "one"), headers=headers)
    assert first.status_code == 200, first.text
    job = await get_job(mgw.client, key, first.headers["x-job-id"])
    assert (job["provider"], job["attempts"]) == ("beta", 3)
    assert alpha.chat_calls == 2
    ttl = await redis.pttl(COOLDOWN_KEY + "alpha")
    assert 0 < ttl <= 30_000

    status = (await mgw.client.get("/api/providers/status")).json()["providers"]["alpha"]
    assert status["status"] == "error" and "cooling down" in status["error"]
    assert status["cooldown_until"].endswith("Z")
    health = (await mgw.client.get("/health")).json()
    assert health["services"]["providers"]["alpha"] == "error"

    # While alpha cools down, beta serves at once: no call goes to alpha.
    second = await mgw.client.post("/api/v1/completion", json=_chat("shared/model", "two"), headers=headers)
    job = await get_job(mgw.client, key, second.headers["x-job-id"])
    assert (job["provider"], job["attempts"]) == ("beta", 1)
    assert alpha.chat_calls == 2

    # A model only alpha serves still goes to alpha: no other provider is left.
    alpha.status = None
    only = await mgw.client.post("/api/v1/completion", json=_chat("alpha/chat-one"), headers=headers)
    assert only.status_code == 200
    assert (await get_job(mgw.client, key, only.headers["x-job-id"]))["provider"] == "alpha"

    # The order a job took at its first attempt holds for its retries: beta first, then alpha.
    beta.status = 500
    fourth = await mgw.client.post("/api/v1/completion", json=_chat("shared/model", "four"), headers=headers)
    assert fourth.status_code == 200, fourth.text
    job = await get_job(mgw.client, key, fourth.headers["x-job-id"])
    assert (job["provider"], job["attempts"]) == ("alpha", 3)  # two on beta, then alpha
    beta.status = None
    await redis.delete(COOLDOWN_KEY + "beta")

    # Once the cooldown is over (its key expired), alpha is first again.
    await redis.delete(COOLDOWN_KEY + "alpha")

    async def served_by_alpha() -> bool:
        r = await mgw.client.post("/api/v1/completion", json=_chat("shared/model", "three"), headers=headers)
        return (await get_job(mgw.client, key, r.headers["x-job-id"]))["provider"] == "alpha"

    await eventually(served_by_alpha, interval=0.1, what="alpha to serve again")
    status = (await mgw.client.get("/api/providers/status")).json()["providers"]["alpha"]
    assert status["status"] == "active" and status["cooldown_until"] is None


@pytest.mark.settings(SWITCHYARD_PROVIDER_COOLDOWN_FAILURES="3")
async def test_a_success_ends_a_run_of_failures(mgw: Gateway, alpha: StandIn, redis: aioredis.Redis) -> None:
    key = await mgw.create_key()
    headers = {"X-API-Key": key}
    for round_ in range(3):
        # [fail:1]: alpha fails once for this text, then answers: two failures never add up to three
        response = await mgw.client.post(
            "/api/v1/completion", json=_chat("alpha/chat-one", f"[fail:1] {round_}"), headers=headers
        )
        assert response.status_code == 200, response.text
    assert await redis.exists(COOLDOWN_KEY + "alpha") == 0
    assert await redis.exists(FAILS_KEY + "alpha") == 0
