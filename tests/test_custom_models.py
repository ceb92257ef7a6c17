"""Custom persona models (api-reference 000, "Custom Models"): the CRUD routes and their shapes,
every validation error, ownership by key, the prompt template, suggestions, preview, stats, and
chat calls through `@org/name` reaching the stand-in provider with the persona's system prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from api.personas import SUGGESTIONS, render_prompt
from switchyard.standin import StandIn
from tests.conftest import Gateway, chat_body, eventually, make_settings, running_gateway, write_providers
from tests.llm_support import EMBED, write_llm_providers

BASE = "mock/echo"
ORG = "switchyard"


def persona(name: str = "coding-mentor", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "display_name": "Coding Mentor",
        "personality_summary": "You are an experienced programming mentor who explains code with patience.",
        "base_model": BASE,
        **extra,
    }


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def create(gw: Gateway, key: str, **body: Any) -> dict[str, Any]:
    response = await gw.client.post("/api/v1/custom", json=persona(**body), headers=h(key))
    assert response.status_code == 201, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def assert_native_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    if field is not None:
        assert body["details"] and body["details"][0]["field"] == field, body
        assert body["details"][0]["message"]
    return body  # type: ignore[no-any-return]


# --- CRUD ----------------------------------------------------------------------------------------
async def test_create_get_list_update_delete(gw: Gateway, key: str) -> None:
    response = await gw.client.post(
        "/api/v1/custom",
        json={
            "name": "coding-mentor",
            "display_name": "Coding Mentor",
            "personality_summary": "  You are an experienced programming mentor who explains code.  ",
            "base_model": BASE,
        },
        headers=h(key),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["success"] is True and body["message"]
    data = body["data"]
    assert isinstance(data["id"], int)
    assert data["name"] == "coding-mentor"
    assert data["display_name"] == "Coding Mentor"
    assert data["full_name"] == f"@{ORG}/coding-mentor"
    assert data["description"] == ""
    assert data["personality_summary"] == "You are an experienced programming mentor who explains code."
    assert data["system_prompt"].startswith("# Role: Coding Mentor\n\nYou are an experienced programming")
    assert data["system_prompt"] == render_prompt(
        display_name="Coding Mentor", personality_summary=data["personality_summary"]
    )
    assert data["base_model"] == BASE
    assert data["usage_count"] == 0
    assert data["created_at"].endswith("Z") and data["updated_at"].endswith("Z")

    got = await gw.client.get(f"/api/v1/custom/{data['id']}", headers=h(key))
    assert got.status_code == 200, got.text
    assert got.json() == {"success": True, "data": data}

    second = await create(gw, key, name="travel_guide", display_name=None, description="Trips")
    assert second["display_name"] == "Travel Guide"  # derived from the name when none is given
    assert "## About you\nTrips" in second["system_prompt"]
    third = await create(gw, key, name="Writer2")

    listed = await gw.client.get("/api/v1/custom", params={"page": 1, "limit": 2}, headers=h(key))
    assert listed.status_code == 200, listed.text
    page = listed.json()["data"]
    assert page["pagination"] == {"page": 1, "limit": 2, "total": 3, "pages": 2}
    assert [m["name"] for m in page["models"]] == ["coding-mentor", "travel_guide"]
    assert set(page["models"][0]) == {
        "id", "name", "display_name", "full_name", "description", "base_model", "usage_count",
        "created_at", "updated_at",
    }  # fmt: skip
    page2 = (await gw.client.get("/api/v1/custom?page=2&limit=2", headers=h(key))).json()["data"]
    assert [m["id"] for m in page2["models"]] == [third["id"]]
    default = (await gw.client.get("/api/v1/custom", headers=h(key))).json()["data"]
    assert default["pagination"] == {"page": 1, "limit": 20, "total": 3, "pages": 1}

    updated = await gw.client.put(
        f"/api/v1/custom/{data['id']}", json={"description": "Updated description"}, headers=h(key)
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["data"]["description"] == "Updated description"
    assert updated.json()["data"]["system_prompt"] == data["system_prompt"]  # not asked to regenerate

    deleted = await gw.client.delete(f"/api/v1/custom/{data['id']}", headers=h(key))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["data"] == {
        "id": data["id"], "name": "coding-mentor", "full_name": f"@{ORG}/coding-mentor", "deleted": True
    }  # fmt: skip
    for method in ("GET", "PUT", "DELETE"):
        again = await gw.client.request(
            method, f"/api/v1/custom/{data['id']}", json={"description": "x"}, headers=h(key)
        )
        assert_native_error(again, 404)
    # The name is free again.
    assert (await create(gw, key))["name"] == "coding-mentor"


async def test_names_are_unique_per_key(gw: Gateway, key: str) -> None:
    first = await create(gw, key)
    clash = await gw.client.post("/api/v1/custom", json=persona(), headers=h(key))
    body = assert_native_error(clash, 409, "name")
    assert "coding-mentor" in body["message"]
    # Another key may use the same name; each key's @org/name is its own.
    other = await gw.create_key("other")
    assert (await create(gw, other))["name"] == "coding-mentor"
    # Renaming onto a name the key uses is the same conflict.
    await create(gw, key, name="second")
    rename = await gw.client.put(f"/api/v1/custom/{first['id']}", json={"name": "second"}, headers=h(key))
    assert_native_error(rename, 409, "name")


async def test_another_keys_model_is_not_found(gw: Gateway, key: str) -> None:
    mine = await create(gw, key)
    other = await gw.create_key("other")
    url = f"/api/v1/custom/{mine['id']}"
    assert_native_error(await gw.client.get(url, headers=h(other)), 404)
    assert_native_error(await gw.client.put(url, json={"description": "mine now"}, headers=h(other)), 404)
    assert_native_error(await gw.client.delete(url, headers=h(other)), 404)
    listed = (await gw.client.get("/api/v1/custom", headers=h(other))).json()["data"]
    assert listed["models"] == [] and listed["pagination"]["total"] == 0
    # Untouched for its owner.
    assert (await gw.client.get(url, headers=h(key))).json()["data"]["description"] == ""


async def test_routes_need_a_key(gw: Gateway) -> None:
    for method, path in (
        ("GET", "/api/v1/custom"), ("POST", "/api/v1/custom"), ("GET", "/api/v1/custom/1"),
        ("GET", "/api/v1/custom/suggestions"), ("POST", "/api/v1/custom/preview-prompt"),
        ("GET", "/api/v1/custom/stats"),
    ):  # fmt: skip
        assert_native_error(await gw.client.request(method, path, json={}), 401)


# --- validation ----------------------------------------------------------------------------------
CREATE_INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("name missing", {"name": None}, "name"),
    ("name too short", {"name": "a"}, "name"),
    ("name too long", {"name": "a" * 51}, "name"),
    ("name with a space", {"name": "coding mentor"}, "name"),
    ("name with a slash", {"name": "org/name"}, "name"),
    ("name with an @", {"name": "@mentor"}, "name"),
    ("name with a dot", {"name": "mentor.v2"}, "name"),
    ("name not a string", {"name": 42}, "name"),
    ("personality missing", {"personality_summary": None}, "personality_summary"),
    ("personality too short", {"personality_summary": "Too short"}, "personality_summary"),
    ("personality only spaces", {"personality_summary": "   short    "}, "personality_summary"),
    ("personality too long", {"personality_summary": "x" * 2001}, "personality_summary"),
    ("display_name too long", {"display_name": "d" * 101}, "display_name"),
    ("description too long", {"description": "d" * 501}, "description"),
    ("base_model unknown", {"base_model": "mock/nope"}, "base_model"),
    ("base_model empty", {"base_model": ""}, "base_model"),
    ("base_model a persona", {"base_model": f"@{ORG}/coding-mentor"}, "base_model"),
    ("system_prompt blank", {"system_prompt": "   "}, "system_prompt"),
    ("system_prompt too long", {"system_prompt": "p" * 8001}, "system_prompt"),
    ("temperature above 2", {"temperature": 2.5}, "temperature"),
    ("temperature negative", {"temperature": -0.1}, "temperature"),
    ("top_p above 1", {"top_p": 1.5}, "top_p"),
    ("max_tokens zero", {"max_tokens": 0}, "max_tokens"),
    ("max_tokens above 32768", {"max_tokens": 32769}, "max_tokens"),
    ("unknown field", {"personality": "You are a friendly assistant."}, "personality"),
]


async def test_create_rejects_invalid_fields(gw: Gateway, key: str) -> None:
    for what, change, field in CREATE_INVALID:
        body = {k: v for k, v in {**persona(), **change}.items() if v is not None}
        response = await gw.client.post("/api/v1/custom", json=body, headers=h(key))
        assert response.status_code == 400, (what, response.text)
        assert_native_error(response, 400, field)
    for raw, field in ((b"", "body"), (b"{not json", "body"), (b"[1, 2]", "body")):
        response = await gw.client.post("/api/v1/custom", content=raw, headers=h(key))
        assert_native_error(response, 400, field)
    # Nothing was stored by any of them.
    assert (await gw.client.get("/api/v1/custom", headers=h(key))).json()["data"]["pagination"]["total"] == 0
    # The bounds themselves are accepted.
    await create(gw, key, name="ab", personality_summary="x" * 10, display_name="d" * 100)
    await create(gw, key, name="b" * 50, personality_summary="y" * 2000, description="e" * 500)
    await create(gw, key, name="A_b-9", temperature=0, top_p=1, max_tokens=32768)


async def test_unknown_base_model_names_close_matches(gw: Gateway, key: str) -> None:
    response = await gw.client.post("/api/v1/custom", json=persona(base_model="mock/ech"), headers=h(key))
    body = assert_native_error(response, 400, "base_model")
    assert "mock/echo" in body["details"][0]["suggestions"]


async def test_update_rejects_invalid_fields(gw: Gateway, key: str) -> None:
    made = await create(gw, key)
    url = f"/api/v1/custom/{made['id']}"
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "body"),
        ({"regenerate_prompt": False}, "body"),
        ({"name": "x"}, "name"),
        ({"name": "bad name"}, "name"),
        ({"name": None}, "name"),
        ({"personality_summary": "short"}, "personality_summary"),
        ({"display_name": "d" * 101}, "display_name"),
        ({"description": "d" * 501}, "description"),
        ({"base_model": "mock/nope"}, "base_model"),
        ({"temperature": 3}, "temperature"),
        ({"regenerate_prompt": "yes"}, "regenerate_prompt"),
        ({"system_prompt": "Mine.", "regenerate_prompt": True}, "regenerate_prompt"),
        ({"id": 5}, "id"),
    ]
    for change, field in cases:
        assert_native_error(await gw.client.put(url, json=change, headers=h(key)), 400, field)
    for bad_id in ("abc", "0", "-3", "1.5"):
        assert_native_error(await gw.client.get(f"/api/v1/custom/{bad_id}", headers=h(key)), 400, "id")
    assert_native_error(await gw.client.get("/api/v1/custom/99999999999", headers=h(key)), 404)
    # Still as it was made.
    current = (await gw.client.get(url, headers=h(key))).json()["data"]
    assert {k: current[k] for k in ("name", "system_prompt", "temperature")} == {
        "name": made["name"], "system_prompt": made["system_prompt"], "temperature": None
    }  # fmt: skip


async def test_list_and_stats_reject_bad_query_parameters(gw: Gateway, key: str) -> None:
    for params, field in (
        ({"page": "0"}, "page"), ({"page": "x"}, "page"), ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
    ):  # fmt: skip
        assert_native_error(await gw.client.get("/api/v1/custom", params=params, headers=h(key)), 400, field)
    for days in ("0", "366", "many"):
        response = await gw.client.get("/api/v1/custom/stats", params={"days": days}, headers=h(key))
        assert_native_error(response, 400, "days")


# --- the prompt ----------------------------------------------------------------------------------
async def test_regenerate_prompt_and_own_prompts(gw: Gateway, key: str) -> None:
    made = await create(gw, key, description="Helps with code")
    url = f"/api/v1/custom/{made['id']}"

    # Without regenerate_prompt the stored prompt stays, whatever else changes.
    kept = (await gw.client.put(url, json={"display_name": "Senior Coding Mentor"}, headers=h(key))).json()
    assert kept["data"]["display_name"] == "Senior Coding Mentor"
    assert kept["data"]["system_prompt"] == made["system_prompt"]

    regenerated = await gw.client.put(
        url,
        json={
            "personality_summary": "You are a senior engineer who reviews code tersely.",
            "regenerate_prompt": True,
        },
        headers=h(key),
    )
    assert regenerated.status_code == 200, regenerated.text
    prompt = regenerated.json()["data"]["system_prompt"]
    assert prompt == render_prompt(
        display_name="Senior Coding Mentor",
        personality_summary="You are a senior engineer who reviews code tersely.",
        description="Helps with code",
    )
    assert prompt.startswith("# Role: Senior Coding Mentor\n\nYou are a senior engineer")

    # An own prompt replaces it and is kept through later edits until asked to regenerate.
    own = await gw.client.put(url, json={"system_prompt": "  Answer only in haiku.  "}, headers=h(key))
    assert own.json()["data"]["system_prompt"] == "Answer only in haiku."
    later = await gw.client.put(
        url, json={"personality_summary": "You are patient and kind to beginners."}, headers=h(key)
    )
    assert later.json()["data"]["system_prompt"] == "Answer only in haiku."
    back = await gw.client.put(url, json={"regenerate_prompt": True}, headers=h(key))
    assert back.json()["data"]["system_prompt"].startswith(
        "# Role: Senior Coding Mentor\n\nYou are patient and kind to beginners."
    )
    # null resets the display name to the name's and removes a default.
    reset = await gw.client.put(url, json={"display_name": None, "temperature": None}, headers=h(key))
    assert reset.json()["data"]["display_name"] == "Coding Mentor"

    created_own = await create(gw, key, name="haiku", system_prompt="Only haiku.")
    assert created_own["system_prompt"] == "Only haiku."


async def test_preview_prompt_matches_what_create_stores(gw: Gateway, key: str) -> None:
    fields = {
        "display_name": "Friendly AI",
        "description": "A helpful assistant",
        "personality_summary": "You are a friendly assistant who answers briefly.",
    }
    preview = await gw.client.post("/api/v1/custom/preview-prompt", json=fields, headers=h(key))
    assert preview.status_code == 200, preview.text
    data = preview.json()["data"]
    assert data["display_name"] == "Friendly AI"
    assert data["length"] == len(data["system_prompt"])
    made = await create(gw, key, name="friendly", **fields)
    assert made["system_prompt"] == data["system_prompt"]
    # The same fields always give the same text.
    again = await gw.client.post("/api/v1/custom/preview-prompt", json=fields, headers=h(key))
    assert again.json()["data"]["system_prompt"] == data["system_prompt"]
    # Nothing was stored by previewing.
    assert (await gw.client.get("/api/v1/custom", headers=h(key))).json()["data"]["pagination"]["total"] == 1

    for body, field in (
        ({}, "personality_summary"),
        ({"personality_summary": "short"}, "personality_summary"),
        ({"personality_summary": "x" * 2001}, "personality_summary"),
        ({**fields, "display_name": "d" * 101}, "display_name"),
        ({**fields, "description": "d" * 501}, "description"),
        ({**fields, "name": "bad name"}, "name"),
    ):
        response = await gw.client.post("/api/v1/custom/preview-prompt", json=body, headers=h(key))
        assert_native_error(response, 400, field)


@pytest.mark.standin(models=[BASE, "mock/other", "microsoft/phi-3-medium-128k-instruct"])
async def test_suggestions_are_valid_personas(gw: Gateway, key: str) -> None:
    response = await gw.client.get("/api/v1/custom/suggestions", headers=h(key))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["total"] == len(data["suggestions"]) == len(SUGGESTIONS) >= 5
    assert set(data["categories"]) == {s["category"] for s in data["suggestions"]}
    for s in data["suggestions"]:
        assert set(s) == {"name", "display_name", "category", "description", "personality_summary"}
        made = await gw.client.post(
            "/api/v1/custom", json={k: v for k, v in s.items() if k != "category"}, headers=h(key)
        )
        assert made.status_code == 201, made.text
        # No base model given: the documented default, served here.
        assert made.json()["data"]["base_model"] == "microsoft/phi-3-medium-128k-instruct"
    education = (
        await gw.client.get("/api/v1/custom/suggestions", params={"category": "education"}, headers=h(key))
    ).json()["data"]
    assert education["suggestions"] and {s["category"] for s in education["suggestions"]} == {"education"}
    bad = await gw.client.get("/api/v1/custom/suggestions", params={"category": "nope"}, headers=h(key))
    assert_native_error(bad, 400, "category")


async def test_default_base_model_is_the_first_chat_model_when_the_documented_one_is_not_served(
    gw: Gateway, key: str
) -> None:
    body = persona()
    del body["base_model"]
    made = await gw.client.post("/api/v1/custom", json=body, headers=h(key))
    assert made.status_code == 201, made.text
    assert made.json()["data"]["base_model"] == BASE


# --- chat through "@org/name" --------------------------------------------------------------------
async def test_chat_runs_the_base_model_with_the_persona_prompt_first(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    standin.record = True
    made = await create(gw, key, temperature=0.2, top_p=0.5, max_tokens=77)
    model = f"@{ORG}/coding-mentor"

    native = await gw.client.post(
        "/api/v1/completion", json=chat_body("Explain recursion", model=model), headers=h(key)
    )
    assert native.status_code == 200, native.text
    body = native.json()
    assert body["success"] is True
    assert body["data"]["model"] == model
    assert body["data"]["choices"][0]["message"]["content"] == "echo: Explain recursion"
    sent = standin.requests[-1]
    assert sent["model"] == BASE
    assert sent["messages"] == [
        {"role": "system", "content": made["system_prompt"]},
        {"role": "user", "content": "Explain recursion"},
    ]
    # The persona's defaults, where the caller set none.
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.2, 0.5, 77)
    job = (await gw.client.get(f"/api/v1/jobs/{native.headers['x-job-id']}", headers=h(key))).json()["data"]
    assert job["model"] == model and job["status"] == "succeeded"

    # OpenAI's routes; the caller's own settings win and its system message follows the persona's.
    for path in ("/v1/chat/completions", "/openai/v1/chat/completions"):
        response = await gw.client.post(
            path,
            json={
                "model": model,
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                "temperature": 1.1,
                "max_tokens": 20,
            },
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["model"] == model
        sent = standin.requests[-1]
        assert sent["messages"] == [
            {"role": "system", "content": made["system_prompt"] + "\n\nBe brief."},
            {"role": "user", "content": "hi"},
        ]
        assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (1.1, 0.5, 20)

    # An edit is seen by the next call (the lookup cache is invalidated).
    await gw.client.put(f"/api/v1/custom/{made['id']}", json={"system_prompt": "Only haiku."}, headers=h(key))
    await gw.client.post("/api/v1/completion", json=chat_body("again", model=model), headers=h(key))
    assert standin.requests[-1]["messages"][0] == {"role": "system", "content": "Only haiku."}


async def test_chat_with_another_keys_or_a_deleted_persona_is_not_found(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    made = await create(gw, key)
    other = await gw.create_key("other")
    model = f"@{ORG}/coding-mentor"
    calls_before = standin.chat_calls

    native = await gw.client.post("/api/v1/completion", json=chat_body(model=model), headers=h(other))
    body = assert_native_error(native, 404, "model")
    assert model in body["message"]
    openai_style = await gw.client.post(
        "/v1/chat/completions", json=chat_body(model=model), headers={"Authorization": f"Bearer {other}"}
    )
    assert openai_style.status_code == 404, openai_style.text
    assert openai_style.json()["error"]["code"] == "model_not_found"
    for wrong in ("@cognima/coding-mentor", f"@{ORG}/", f"@{ORG}/nobody", "@coding-mentor"):
        response = await gw.client.post("/api/v1/completion", json=chat_body(model=wrong), headers=h(key))
        assert_native_error(response, 404, "model")

    ok = await gw.client.post("/api/v1/completion", json=chat_body(model=model), headers=h(key))
    assert ok.status_code == 200, ok.text
    assert (await gw.client.delete(f"/api/v1/custom/{made['id']}", headers=h(key))).status_code == 200
    gone = await gw.client.post("/api/v1/completion", json=chat_body(model=model), headers=h(key))
    assert_native_error(gone, 404, "model")
    # Only the one allowed call reached the provider, and no refused one became a job.
    assert standin.chat_calls == calls_before + 1
    jobs = (await gw.client.get("/api/v1/jobs", headers=h(key))).json()["data"]
    assert len(jobs) == 1
    assert (await gw.client.get("/api/v1/jobs", headers=h(other))).json()["data"] == []


async def test_persona_whose_base_model_is_no_longer_served(
    gw: Gateway, key: str, standin: StandIn, env: dict[str, str], tmp_path: Path
) -> None:
    await create(gw, key, base_model="mock/other")
    narrower = write_providers(
        tmp_path / "narrower.toml",
        [{"name": "standin", "kind": "openai", "base_url": standin.base_url, "models": [BASE]}],
    )
    async with running_gateway(make_settings({**env, "SWITCHYARD_PROVIDERS": str(narrower)})) as later:
        response = await later.client.post(
            "/api/v1/completion", json=chat_body(model=f"@{ORG}/coding-mentor"), headers=h(key)
        )
        body = assert_native_error(response, 404)
        assert "mock/other" in body["message"] and f"@{ORG}/coding-mentor" in body["message"]


@pytest.mark.settings(SWITCHYARD_CUSTOM_ORG="acme")
async def test_org_comes_from_the_settings(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    made = await create(gw, key)
    assert made["full_name"] == "@acme/coding-mentor"
    ok = await gw.client.post(
        "/api/v1/completion", json=chat_body(model="@acme/coding-mentor"), headers=h(key)
    )
    assert ok.status_code == 200, ok.text
    wrong = await gw.client.post(
        "/api/v1/completion", json=chat_body(model=f"@{ORG}/coding-mentor"), headers=h(key)
    )
    assert_native_error(wrong, 404, "model")


async def test_persona_default_max_tokens_stays_within_the_keys_cap(gw: Gateway, standin: StandIn) -> None:
    gw.start_worker()
    standin.record = True
    key = await gw.create_key("capped", limits={"max_tokens_per_request": 50})
    await create(gw, key, max_tokens=4000)
    response = await gw.client.post(
        "/api/v1/completion", json=chat_body(model=f"@{ORG}/coding-mentor"), headers=h(key)
    )
    assert response.status_code == 200, response.text
    assert standin.requests[-1]["max_tokens"] == 50


async def test_stats_and_usage_count_come_from_recorded_usage(gw: Gateway, key: str) -> None:
    gw.start_worker()
    mentor = await create(gw, key)
    guide = await create(gw, key, name="travel-guide")
    idle = await create(gw, key, name="idle")
    for text in ("one", "two", "three"):
        response = await gw.client.post(
            "/api/v1/completion", json=chat_body(text, model=f"@{ORG}/coding-mentor"), headers=h(key)
        )
        assert response.status_code == 200, response.text
    failed = await gw.client.post(
        "/api/v1/completion", json=chat_body("[400]", model=f"@{ORG}/travel-guide"), headers=h(key)
    )
    assert failed.status_code >= 400
    # Another key's calls on its own persona of the same name do not count for this key.
    other = await gw.create_key("other")
    await create(gw, other)
    await gw.client.post(
        "/api/v1/completion", json=chat_body(model=f"@{ORG}/coding-mentor"), headers=h(other)
    )
    # A call to the base model directly is not a use of the persona.
    await gw.client.post("/api/v1/completion", json=chat_body(), headers=h(key))

    async def recorded() -> dict[str, Any] | None:
        data = (await gw.client.get("/api/v1/custom/stats", headers=h(key))).json()["data"]
        return data if data["total_requests"] == 4 else None

    data = await eventually(recorded, what="persona usage to be recorded")
    assert data["days"] == 30 and data["total_models"] == 3
    assert data["most_used"] == f"@{ORG}/coding-mentor"
    by_name = {m["name"]: m for m in data["models"]}
    assert [m["name"] for m in data["models"]] == ["coding-mentor", "travel-guide", "idle"]
    assert by_name["coding-mentor"]["requests"] == 3
    assert by_name["coding-mentor"]["successful_requests"] == 3
    assert by_name["coding-mentor"]["total_tokens"] > 0
    assert by_name["coding-mentor"]["last_used_at"].endswith("Z")
    assert by_name["travel-guide"]["requests"] == 1
    assert by_name["travel-guide"]["failed_requests"] == 1
    assert by_name["idle"]["requests"] == 0 and by_name["idle"]["last_used_at"] is None

    listed = (await gw.client.get("/api/v1/custom", headers=h(key))).json()["data"]["models"]
    assert {m["id"]: m["usage_count"] for m in listed} == {mentor["id"]: 3, guide["id"]: 1, idle["id"]: 0}
    one = (await gw.client.get(f"/api/v1/custom/{mentor['id']}", headers=h(key))).json()["data"]
    assert one["usage_count"] == 3

    async def other_recorded() -> dict[str, Any] | None:
        data = (await gw.client.get("/api/v1/custom/stats", headers=h(other))).json()["data"]
        return data if data["total_requests"] == 1 else None

    other_stats = await eventually(other_recorded, what="the other key's persona usage")
    assert other_stats["total_models"] == 1 and other_stats["models"][0]["requests"] == 1

    # A persona made again under a deleted one's name starts from zero.
    await gw.client.delete(f"/api/v1/custom/{mentor['id']}", headers=h(key))
    remade = await create(gw, key)
    fresh = (await gw.client.get(f"/api/v1/custom/{remade['id']}", headers=h(key))).json()["data"]
    assert fresh["usage_count"] == 0
    one_day = (await gw.client.get("/api/v1/custom/stats?days=1", headers=h(key))).json()["data"]
    assert one_day["days"] == 1 and one_day["total_requests"] == 1


async def test_persona_on_the_other_chat_routes(gw: Gateway, key: str, standin: StandIn) -> None:
    """cloudgpt's /api/chat and 004's /api/llm routes share the chat flow: the persona applies,
    and its default wins over the dialect's own (/api/chat's temperature 0.7)."""
    gw.start_worker()
    standin.record = True
    made = await create(gw, key, temperature=0.3)
    model = f"@{ORG}/coding-mentor"
    bearer = {"Authorization": f"Bearer {key}"}
    response = await gw.client.post("/api/chat", json=chat_body("hello", model=model), headers=bearer)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == model
    sent = standin.requests[-1]
    assert sent["model"] == BASE and sent["temperature"] == 0.3
    assert sent["messages"][0] == {"role": "system", "content": made["system_prompt"]}
    await gw.client.put(f"/api/v1/custom/{made['id']}", json={"temperature": None}, headers=h(key))
    await gw.client.post("/api/chat", json=chat_body("hello", model=model), headers=bearer)
    assert standin.requests[-1]["temperature"] == 0.7  # no persona default left: the dialect's

    generated = await gw.client.post("/api/llm/generate/", json=chat_body("hi", model=model), headers=bearer)
    assert generated.status_code == 200, generated.text
    assert standin.requests[-1]["messages"][0]["role"] == "system"

    other = await gw.create_key("other")
    missing = await gw.client.post(
        "/api/chat", json=chat_body(model=model), headers={"Authorization": f"Bearer {other}"}
    )
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_streamed_chat_through_a_persona(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    standin.record = True
    made = await create(gw, key)
    model = f"@{ORG}/coding-mentor"
    response = await gw.client.post(
        "/v1/chat/completions",
        json=chat_body("stream me", model=model, stream=True),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [orjson.loads(line) for line in lines[:-1]]
    assert chunks and {c["model"] for c in chunks} == {model}
    sent = standin.requests[-1]
    assert sent["stream"] is True and sent["model"] == BASE
    assert sent["messages"][0] == {"role": "system", "content": made["system_prompt"]}
    # The job is recorded under the persona's name, so its use counts.
    job = (await gw.client.get(f"/api/v1/jobs/{response.headers['x-job-id']}", headers=h(key))).json()["data"]
    assert job["model"] == model

    async def counted() -> bool:
        one = (await gw.client.get(f"/api/v1/custom/{made['id']}", headers=h(key))).json()["data"]
        return bool(one["usage_count"] == 1)

    await eventually(counted, what="the streamed call to count as a use")


async def test_base_model_must_be_a_chat_model(standin: StandIn, env: dict[str, str], tmp_path: Path) -> None:
    providers = write_llm_providers(tmp_path / "typed.toml", ("standin", standin.base_url))
    async with running_gateway(make_settings({**env, "SWITCHYARD_PROVIDERS": str(providers)})) as gw:
        key = await gw.create_key("typed")
        response = await gw.client.post("/api/v1/custom", json=persona(base_model=EMBED), headers=h(key))
        body = assert_native_error(response, 400, "base_model")
        assert "embedding" in body["message"]
        made = await create(gw, key)
        update = await gw.client.put(
            f"/api/v1/custom/{made['id']}", json={"base_model": EMBED}, headers=h(key)
        )
        assert_native_error(update, 400, "base_model")


async def test_a_key_limited_to_some_models_cannot_build_on_others(gw: Gateway) -> None:
    key = await gw.create_key("limited", models=[BASE])
    refused = await gw.client.post("/api/v1/custom", json=persona(base_model="mock/other"), headers=h(key))
    assert_native_error(refused, 403)
    assert (await create(gw, key))["base_model"] == BASE
