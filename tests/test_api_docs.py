"""The API docs: `/docs` is Swagger UI from this app's own assets (no CDN: it works offline),
and the OpenAPI schema at /schema/openapi.json describes bodies, security, `?batch=1`,
`Prefer` and each dialect's error shape."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin, urlsplit

from tests.conftest import Gateway


async def test_docs_page_uses_only_same_origin_assets_and_each_answers(gw: Gateway) -> None:
    page = await gw.client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "SwaggerUIBundle(" in html
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert len(urls) >= 3, urls  # the bundle, the standalone preset, the stylesheet
    for url in urls:
        absolute = urljoin(str(page.url), url)
        assert urlsplit(absolute).netloc == urlsplit(str(page.url)).netloc, f"{url} is not same-origin"
        asset = await gw.client.get(absolute)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    assert "https://" not in re.sub(r"(?s)spec: \{.*\},\s*dom_id", "", html)  # nothing fetched from outside
    assert "validatorUrl: null" in html  # no badge fetched from swagger.io
    for name in ("index.html", "..%2Fapi.py", "x" * 600):  # only the page's own assets, by name
        missing = await gw.client.get(f"/docs/assets/{name}")
        assert missing.status_code == 404 and missing.json()["success"] is False, name


async def _schema(gw: Gateway) -> dict[str, Any]:
    response = await gw.client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def test_schema_describes_bodies_work_parameters_security_and_dialect_errors(gw: Gateway) -> None:
    schema = await _schema(gw)
    assert schema["openapi"].startswith("3.1")
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`",
    }
    assert schemes["apiKey"] == {"type": "apiKey", "name": "X-API-Key", "in": "header"}
    assert schema["security"] == [
        {"bearer": []},
        {"apiKey": []},
        {"apiKeyQuery": []},
        {"sessionCookie": [], "sessionKey": []},
    ]
    assert schemes["sessionKey"]["name"] == "X-Switchyard-Key" and schemes["sessionCookie"]["in"] == "cookie"

    chat = schema["paths"]["/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"model", "messages"}
    assert body["properties"]["temperature"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 2}
    assert body["properties"]["messages"]["minItems"] == 1
    params = {(p["in"], p["name"]) for p in chat["parameters"]}
    assert {("query", "batch"), ("header", "Prefer")} <= params
    assert set(chat["responses"]) >= {"200", "202", "4XX", "5XX"}
    openai_error = chat["responses"]["4XX"]["content"]["application/json"]["schema"]
    assert openai_error["required"] == ["error"]
    assert set(openai_error["properties"]["error"]["properties"]) == {"message", "type", "code", "param"}

    native = schema["paths"]["/api/v1/completion"]["post"]["responses"]["4XX"]["content"]
    assert set(native["application/json"]["schema"]["required"]) == {"success", "error", "message"}
    credits = schema["paths"]["/api/v1/chat"]["post"]["responses"]["4XX"]["content"]
    assert credits["application/json"]["schema"]["required"] == ["error"]
    discovery = schema["paths"]["/api/models"]["get"]["responses"]["4XX"]["content"]
    assert set(discovery["application/json"]["schema"]["required"]) == {"error", "timestamp"}

    keys = schema["paths"]["/api/keys"]["post"]
    assert set(keys["responses"]) >= {"201", "4XX"}
    assert "202" not in keys["responses"]  # creates no job
    assert keys["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]
    assert schema["paths"]["/health"]["get"]["security"] == []  # public


async def test_every_operation_has_its_error_shape_and_no_string_answers(gw: Gateway) -> None:
    schema = await _schema(gw)
    assert len(schema["paths"]) >= 80
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            assert "4XX" in op["responses"], f"{method} {path}"
            for status, answer in op["responses"].items():
                for media in answer.get("content", {}).values():
                    assert media.get("schema") != {"type": "string"}, f"{method} {path} {status}"


# JSON answers whose shape the schema leaves open, each with why.
OPEN_ANSWERS: dict[str, str] = {}


def _spelled_out(schema: dict[str, Any]) -> bool:
    """An object with its properties, a list of such, or a union of them: not `{}`."""
    if "properties" in schema:
        return True
    if schema.get("type") == "array":
        return _spelled_out(schema.get("items") or {})
    union = schema.get("anyOf") or schema.get("oneOf")
    return bool(union) and all(_spelled_out(s) or s.get("type") == "null" for s in union)


async def test_every_json_answer_spells_out_its_shape(gw: Gateway) -> None:
    schema = await _schema(gw)
    vague = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            name = f"{method.upper()} {path}"
            for status, answer in op["responses"].items():
                json = answer.get("content", {}).get("application/json")
                if json is None or name in OPEN_ANSWERS:
                    continue
                if not _spelled_out(json.get("schema") or {}):
                    vague.append(f"{name} {status}")
    assert not vague, "answers with no declared shape:\n" + "\n".join(sorted(vague))
    assert set(OPEN_ANSWERS) <= {f"{m.upper()} {p}" for p, item in schema["paths"].items() for m in item}
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    completion = chat["200"]["content"]["application/json"]["schema"]
    assert set(completion["required"]) >= {"id", "object", "created", "model", "choices"}
    assert "text/event-stream" in chat["200"]["content"]  # `"stream": true`
    assert chat["202"]["content"]["application/json"]["schema"]["properties"]["object"] == {"enum": ["job"]}
