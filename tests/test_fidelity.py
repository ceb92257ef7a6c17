"""Fidelity to the five API documents (issue 17): each answer checked against the shape the
document's own example shows, on the prefix of that document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from switchyard.standin_images import ImageStandIn
from tests.conftest import (
    Gateway,
    admin_headers,
    chat_body,
    eventually,
    make_settings,
    running_gateway,
    wait_for_status,
)


def _dialect_of(body: Any) -> str:
    """Which documented error shape a body has."""
    if isinstance(body.get("error"), str) and "success" not in body:
        return "credits"
    if body.get("success") is False and {"error", "message", "details"} <= set(body):
        return "native"
    if isinstance(body.get("error"), dict) and "timestamp" in body:
        return "discovery"
    if isinstance(body.get("error"), dict) and {"message", "type", "code"} <= set(body["error"]):
        return "openai"
    return "unknown"


# (method, path, expected status, shape): unknown routes and wrong methods under each prefix
UNROUTED = [
    ("GET", "/v1/nothing-here", 404, "openai"),
    ("GET", "/openai/v1/nothing-here", 404, "openai"),
    ("GET", "/v1/chat/completions", 405, "openai"),
    ("GET", "/api/v1/chat", 405, "credits"),
    ("GET", "/api/v1/nothing-here", 404, "native"),
    ("PUT", "/api/v1/completion", 405, "native"),
    ("GET", "/api/chat", 405, "openai"),  # cloudgpt: OpenAI's error object (001)
    ("DELETE", "/api/keys", 405, "openai"),
    ("GET", "/api/llm/generate/", 405, "openai"),  # apidocs (004)
    ("GET", "/api/llm/nothing/", 404, "openai"),
    ("PATCH", "/api/models/refresh", 405, "discovery"),
    ("GET", "/api/providers/status/extra/more", 404, "discovery"),
    ("POST", "/health", 405, "discovery"),
    ("GET", "/nowhere", 404, "native"),
]


@pytest.mark.parametrize(("method", "path", "status", "shape"), UNROUTED)
async def test_unrouted_paths_answer_in_the_prefix_dialect(
    gw: Gateway, method: str, path: str, status: int, shape: str
) -> None:
    response = await gw.client.request(method, path)
    assert response.status_code == status, response.text
    assert _dialect_of(response.json()) == shape, response.text
    if status == 405:
        assert response.headers.get("allow")


async def test_batch_job_on_openai_routes_is_an_openai_style_object(gw: Gateway, key: str) -> None:
    response = await gw.client.post(
        "/v1/chat/completions?batch=1", json=chat_body(), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert "success" not in job and "data" not in job
    assert job["object"] == "job"
    assert job["status"] == "queued"
    assert isinstance(job["created_at"], int)  # Unix seconds, as OpenAI's own objects
    assert job["model"] == "mock/echo"
    assert job["error"] is None
    assert job["url"] == response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    native = await gw.client.post("/api/v1/completion?batch=1", json=chat_body(), headers={"X-API-Key": key})
    assert native.json()["success"] is True and native.json()["data"]["job"]["object"] == "job"


async def test_cancel_of_a_running_job_says_it_was_requested(gw: Gateway, key: str, standin: Any) -> None:
    gw.start_worker()
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("[hang] forever"), headers={"X-API-Key": key}
    )
    job_id = submitted.json()["data"]["job_id"]
    await wait_for_status(gw.client, key, job_id, "running")
    await eventually(lambda: _true(standin.chat_calls == 1), what="the provider call")
    response = await gw.client.delete(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "running" and data["cancel_requested"] is True
    job = await wait_for_status(gw.client, key, job_id, "canceled", "failed", "succeeded", timeout=5)
    assert job["status"] == "canceled"
    again = await gw.client.delete(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key})
    assert again.json()["data"]["status"] == "canceled"


async def _true(value: bool) -> bool:
    return value


async def test_job_listing_refuses_parameters_it_does_not_apply(gw: Gateway, key: str) -> None:
    response = await gw.client.get(
        "/api/v1/jobs", params={"model": "mock/echo", "kind": "chat_completion"}, headers={"X-API-Key": key}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert [d["field"] for d in body["details"]] == ["kind", "model"]
    assert body["details"][1]["value"] == "mock/echo"
    assert "kind, model" in body["message"]
    ok = await gw.client.get(
        "/api/v1/jobs", params={"status": "queued", "limit": 5}, headers={"X-API-Key": key}
    )
    assert ok.status_code == 200


@pytest.mark.settings(SWITCHYARD_PROVIDER_TIMEOUT_S="0.5")
async def test_a_job_whose_tries_ran_out_says_its_provider_timed_out(
    gw: Gateway, key: str, standin: Any
) -> None:
    """A timeout, then a try lost to a worker's shutdown: the final failure still says the
    provider timed out, and after how long."""
    worker = gw.start_worker()
    submitted = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("[sleep:5] slow"), headers={"X-API-Key": key}
    )
    job_id = submitted.json()["data"]["job_id"]
    await eventually(lambda: _true(standin.chat_calls == 2), what="the second try", timeout=5)
    await gw.stop_worker(worker)  # the second try is given back, not finished
    gw.start_worker()
    job = await wait_for_status(gw.client, key, job_id, "failed", "succeeded", timeout=10)
    assert job["status"] == "failed"
    assert "timed out after 0.5s" in job["error"]["message"], job["error"]


async def test_a_key_for_a_model_nobody_serves_is_refused(gw: Gateway) -> None:
    response = await gw.client.post(
        "/api/keys", json={"name": "typo", "models": ["mock/echo", "mock/ecko"]}, headers=admin_headers()
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "models[1]" and "mock/ecko" in error["message"]
    assert (
        await gw.client.post(
            "/api/keys", json={"name": "ok", "models": ["mock/echo"]}, headers=admin_headers()
        )
    ).status_code == 201


async def test_null_means_unlimited(gw: Gateway) -> None:
    created = await gw.client.post(
        "/api/keys",
        json={
            "name": "load-test",
            "limits": {"hourly": None, "daily_requests": None, "daily_tokens": None,
                       "max_tokens_per_request": None, "per_minute": {"chat": None}},
        },
        headers=admin_headers(),
    )  # fmt: skip
    assert created.status_code == 201, created.text
    assert created.json()["limits"]["hourly"] is None
    secret = created.json()["key"]
    for _ in range(3):
        response = await gw.client.post(
            "/api/v1/completion?batch=1", json=chat_body(max_tokens=30_000), headers={"X-API-Key": secret}
        )
        assert response.status_code == 202, response.text
        assert "x-ratelimit-limit" not in response.headers
    status = (await gw.client.get("/api/v1/status", headers={"X-API-Key": secret})).json()["data"]
    assert status["limits"]["hourly"]["limit"] is None and status["limits"]["hourly"]["used"] == 3
    assert status["limits"]["hourly"]["remaining"] is None
    assert status["health"]["usage_status"] == "healthy"
    zero = await gw.client.post(
        "/api/keys", json={"name": "blocked", "limits": {"hourly": 0}}, headers=admin_headers()
    )
    blocked = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body(), headers={"X-API-Key": zero.json()["key"]}
    )
    assert blocked.status_code == 429


async def test_status_shows_the_credit_balance(gw: Gateway, key: str) -> None:
    metered = await gw.create_key("metered", credits=10)
    await gw.client.post(
        "/api/v1/chat?batch=1", json=chat_body(), headers={"Authorization": f"Bearer {metered}"}
    )
    status = (await gw.client.get("/api/v1/status", headers={"X-API-Key": metered})).json()["data"]
    assert status["credits"] == {"metered": True, "balance": 8}  # a ?batch=1 call costs 2 (002)
    plain = (await gw.client.get("/api/v1/status", headers={"X-API-Key": key})).json()["data"]
    assert plain["credits"] == {"metered": False, "balance": None}


@pytest.mark.settings(SWITCHYARD_MAX_BODY_BYTES="2000")
async def test_the_413_says_the_limit(gw: Gateway, key: str) -> None:
    response = await gw.client.post(
        "/api/v1/completion", json=chat_body("x" * 5000), headers={"X-API-Key": key}
    )
    assert response.status_code == 413
    assert "2,000 bytes" in response.json()["message"]


async def test_validation_echoes_a_bounded_preview_of_arrays_and_objects(gw: Gateway, key: str) -> None:
    bad_object = await gw.client.post(
        "/api/v1/completion",
        json={"model": "mock/echo", "messages": {"role": "user"}},
        headers={"X-API-Key": key},
    )
    detail = bad_object.json()["details"][0]
    assert detail["field"] == "messages" and detail["value"] == {"role": "user"}
    stops = [f"stop{i}" for i in range(50)]
    bad_array = await gw.client.post(
        "/api/v1/completion", json=chat_body(stop=stops), headers={"X-API-Key": key}
    )
    detail = bad_array.json()["details"][0]
    assert detail["field"] == "stop"
    assert detail["value"] == [*stops[:5], "… (45 more)"]


async def test_apidocs_image_generate_honours_the_callers_upstream(gw: Gateway, pics: ImageStandIn) -> None:
    """004's example on `/api/image/generate/` with `X-OpenAI-Base-URL`/`X-OpenAI-Key`: the
    providers file serves no image model, the caller's upstream makes the image."""
    gw.start_worker()
    key = await gw.create_key("own-upstream", allow_upstream_override=True)
    headers = {
        "Authorization": f"Bearer {key}",
        "X-OpenAI-Base-URL": pics.base_url + "/v1",
        "X-OpenAI-Key": "sk-own",
    }
    body = {"model": "gpt-image-1", "prompt": "A beautiful sunset over mountains", "n": 1,
            "size": "1024x1024", "quality": "standard", "style": "vivid", "user": "user123"}  # fmt: skip
    response = await gw.client.post("/api/image/generate/", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"url", "revised_prompt"}
    (sent,) = [r for r in pics.requests if r["route"] == "openai"]
    assert sent["model"] == "gpt-image-1" and sent["style"] == "vivid"
    no_model = await gw.client.post("/api/image/generate/", json={"prompt": "a moon"}, headers=headers)
    assert no_model.status_code == 200, no_model.text
    assert pics.requests[-1]["model"] == "gpt-image-1"
    plain = await gw.create_key("plain")
    refused = await gw.client.post(
        "/api/image/generate/", json=body, headers={**headers, "Authorization": f"Bearer {plain}"}
    )
    assert refused.status_code == 403, refused.text


@pytest.mark.settings(
    SWITCHYARD_DEFAULT_CHAT_MODEL="mock/echo", SWITCHYARD_DEFAULT_INSTRUCT_MODEL="mock/other"
)
async def test_text_gen_and_text2text_have_their_own_default_models(
    gw: Gateway, key: str, standin: Any
) -> None:
    gw.start_worker()
    standin.record = True
    messages = [{"role": "user", "content": "Hello, world!"}]
    for path, model in (("/api/llm/generate/", "mock/echo"), ("/api/llm/instruct/", "mock/other")):
        response = await gw.client.post(
            path, json={"messages": messages}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"content", "usage"}
        assert standin.requests[-1]["model"] == model


async def test_native_completion_matches_the_documents_example(gw: Gateway, key: str, standin: Any) -> None:
    """000's example request: the documented defaults reach the provider, and the answer's
    `limits.remaining.daily_tokens` is what is left after the call (50,000 less its tokens)."""
    gw.start_worker()
    standin.record = True
    body = {
        "model": "mock/echo",
        "messages": [{"role": "user", "content": "Explain quantum computing in simple terms"}],
        "max_tokens": 500,
    }
    response = await gw.client.post("/api/v1/completion", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    sent = standin.requests[-1]
    assert sent["temperature"] == 0.7 and sent["top_p"] == 0.95 and sent["max_tokens"] == 500
    out = response.json()
    assert out["usage"]["thinking_tokens"] == 0
    assert out["limits"]["remaining"]["daily_tokens"] == 50_000 - out["usage"]["total_tokens"]
    assert out["limits"]["remaining"]["hourly"] == 99 and out["limits"]["remaining"]["daily_requests"] == 999
    own = await gw.client.post(
        "/api/v1/completion", json={**body, "temperature": 0.2, "top_p": 0.5}, headers={"X-API-Key": key}
    )
    assert own.status_code == 200
    assert standin.requests[-1]["temperature"] == 0.2 and standin.requests[-1]["top_p"] == 0.5


@pytest.mark.standin(models=["mock/echo", "mock/thinker"])
async def test_thinking_reaches_the_provider_and_its_tokens_come_back(
    gw: Gateway, key: str, standin: Any
) -> None:
    gw.start_worker()
    standin.record = True
    body = {"model": "mock/echo", "messages": [{"role": "user", "content": "why?"}], "thinking_enabled": True}
    response = await gw.client.post("/api/v1/completion", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    sent = standin.requests[-1]
    assert sent["reasoning_effort"] == "medium"
    assert "thinking_enabled" not in sent and "temperature" not in sent and "top_p" not in sent
    usage = response.json()["usage"]
    assert usage["thinking_tokens"] == 32  # the provider's completion_tokens_details.reasoning_tokens
    chosen = await gw.client.post(
        "/api/v1/completion",
        json={**body, "thinking_model": "mock/thinker", "reasoning_effort": "high"},
        headers={"X-API-Key": key},
    )
    assert chosen.status_code == 200, chosen.text
    assert (
        standin.requests[-1]["model"] == "mock/thinker" and standin.requests[-1]["reasoning_effort"] == "high"
    )
    assert chosen.json()["usage"]["thinking_tokens"] == 128
    off = await gw.client.post(
        "/api/v1/completion", json={**body, "thinking_enabled": False}, headers={"X-API-Key": key}
    )
    assert off.status_code == 200 and "reasoning_effort" not in standin.requests[-1]


async def test_image_generation_forwards_what_each_provider_takes(
    env: dict[str, str], tmp_path: Path, pics: ImageStandIn
) -> None:
    """000's `/api/v1/generate` fields: Pollinations takes `safety_checker` as `safe`; an
    OpenAI-compatible images API gets `num_inference_steps`/`scheduler` where the file says so."""
    providers = tmp_path / "images.toml"
    providers.write_text(f"""
[[providers]]
name = "polli"
kind = "pollinations-image"
base_url = "{pics.base_url}"
models = ["flux"]

[[providers]]
name = "diffusers"
kind = "openai"
base_url = "{pics.base_url}/v1"
models = ["sdxl"]
image_params = ["num_inference_steps", "scheduler"]
[providers.meta.sdxl]
type = "image"

[[providers]]
name = "openai"
kind = "openai"
base_url = "{pics.base_url}/v1"
models = ["dall-e-3"]
[providers.meta.dall-e-3]
type = "image"
""")
    settings = make_settings({**env, "SWITCHYARD_PROVIDERS": str(providers)})
    async with running_gateway(settings) as gw:
        gw.start_worker()
        key = await gw.create_key("images")
        extras = {"num_inference_steps": 30, "scheduler": "DPMSolverMultistep", "safety_checker": False}
        for model in ("flux", "sdxl", "dall-e-3"):
            response = await gw.client.post(
                "/api/v1/generate",
                json={"model": model, "prompt": "a red fox", **extras},
                headers={"X-API-Key": key},
            )
            assert response.status_code == 200, response.text
        polli, diffusers, openai = pics.requests[-3:]
        assert polli["route"] == "image" and polli["safe"] == "false"
        assert "num_inference_steps" not in polli and "scheduler" not in polli
        assert diffusers["num_inference_steps"] == 30 and diffusers["scheduler"] == "DPMSolverMultistep"
        assert "safety_checker" not in diffusers
        assert not {"num_inference_steps", "scheduler", "safety_checker"} & set(openai)


@pytest.mark.settings(SWITCHYARD_CUSTOM_ORG="cognima")
async def test_the_documents_cognima_persona_names_resolve(gw: Gateway, key: str, standin: Any) -> None:
    gw.start_worker()
    standin.record = True
    created = await gw.client.post(
        "/api/v1/custom",
        json={
            "name": "coding-mentor",
            "display_name": "Coding Mentor",
            "personality_summary": "You are an experienced programming mentor who explains code "
            "with patience and uses practical examples.",
            "base_model": "mock/echo",
        },
        headers={"X-API-Key": key},
    )
    assert created.status_code == 201, created.text
    assert created.json()["data"]["full_name"] == "@cognima/coding-mentor"
    response = await gw.client.post(
        "/api/v1/completion",
        json={
            "model": "@cognima/coding-mentor",
            "messages": [{"role": "user", "content": "Explain recursion"}],
        },
        headers={"X-API-Key": key},
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["model"] == "@cognima/coding-mentor"
    assert standin.requests[-1]["model"] == "mock/echo"


SECONDS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"  # 000 and 003: "2024-11-07T10:00:00Z"
MILLIS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"  # Switchyard's own routes


async def test_one_timestamp_form_per_dialect(gw: Gateway, key: str) -> None:
    import re

    h = {"X-API-Key": key}
    status = (await gw.client.get("/api/v1/status", headers=h)).json()["data"]
    assert re.match(SECONDS, status["api_key"]["created_at"])
    assert re.match(SECONDS, status["limits"]["hourly"]["reset_at"])
    search = (await gw.client.post("/api/v1/tiktok/search", json={"query": "cats"}, headers=h)).json()
    assert re.match(SECONDS, search["timestamp"])
    models = (await gw.client.get("/api/models")).json()
    assert re.match(SECONDS, models["timestamp"])
    missing = (await gw.client.get("/api/models/nobody/none")).json()
    assert re.match(SECONDS, missing["timestamp"])
    keys = (await gw.client.get("/api/keys", headers={"Authorization": f"Bearer {key}"})).json()["data"]
    assert isinstance(keys[0]["created"], int)  # 001: Unix seconds
    job = (await gw.client.post("/api/v1/completion?batch=1", json=chat_body(), headers=h)).json()["data"][
        "job"
    ]
    assert re.match(MILLIS, job["created_at"])
