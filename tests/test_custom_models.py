"""Custom persona models (api-reference 000, "Custom Models"): the CRUD routes and their shapes,
every validation error, ownership by key, the prompt template, suggestions, preview, stats, and
chat calls through `@org/name` reaching the stand-in provider with the persona's system prompt."""

from __future__ import annotations

from typing import Any

import pytest

from api.personas import SUGGESTIONS, render_prompt
from tests.conftest import Gateway

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
