"""Job `metadata`: a bounded string map given in the body (or the `X-Metadata` header), stored
with the job in Redis and in the database, returned by the jobs API, never sent to the
provider, and filterable with `GET /api/v1/jobs?metadata[k]=v` (on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from switchyard.standin import StandIn
from tests.conftest import Gateway, chat_body, eventually, get_job, wait_for_status
from tests.llm_support import EMBED, write_llm_providers
from tests.test_jobs_api import db_rows


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn) -> Path:
    return write_llm_providers(tmp_path / "providers.toml", ("standin", standin.base_url))


def xkey(key: str, **more: str) -> dict[str, str]:
    return {"X-API-Key": key, **more}


async def listed(gw: Gateway, key: str, params: Any) -> list[str]:
    response = await gw.client.get("/api/v1/jobs", params=params, headers=xkey(key))
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["data"]]


async def test_metadata_in_the_body_is_kept_with_the_job_and_not_sent_upstream(
    gw: Gateway, key: str, standin: StandIn
) -> None:
    gw.start_worker()
    standin.record = True
    labels = {"customer": "c-42", "run": "nightly", "note": "é" * 512}
    response = await gw.client.post(
        "/v1/chat/completions",
        json=chat_body("labelled", metadata=labels),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    assert "metadata" not in standin.requests[-1]
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["metadata"] == labels

    plain = await gw.client.post("/api/v1/completion", json=chat_body("plain"), headers=xkey(key))
    assert (await get_job(gw.client, key, plain.headers["x-job-id"]))["metadata"] == {}


async def test_metadata_in_the_x_metadata_header(gw: Gateway, key: str, standin: StandIn) -> None:
    response = await gw.client.post(
        "/api/v1/completion?batch=1",
        json=chat_body("by header"),
        headers=xkey(key, **{"X-Metadata": '{"source": "cron", "attempt": "2"}'}),
    )
    assert response.status_code == 202, response.text
    assert response.json()["data"]["job"]["metadata"] == {"source": "cron", "attempt": "2"}


async def test_embeddings_keep_metadata_to_themselves(gw: Gateway, key: str, standin: StandIn) -> None:
    gw.start_worker()
    standin.record = True
    response = await gw.client.post(
        "/v1/embeddings",
        json={"model": EMBED, "input": "vector me", "metadata": {"k": "v"}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    assert "metadata" not in standin.requests[-1]
    assert (await get_job(gw.client, key, response.headers["x-job-id"]))["metadata"] == {"k": "v"}


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
        ({"k" * 65: "v"}, "metadata"),
        ({"": "v"}, "metadata"),
        ({"k": "v" * 513}, "metadata.k"),
        ({"k": 1}, "metadata.k"),
        ({"k": None}, "metadata.k"),
        ({"k": {"nested": "no"}}, "metadata.k"),
        ({"k": "nul\x00"}, "metadata.k"),
        (["not", "a", "map"], "metadata"),
        ("text", "metadata"),
    ],
)
async def test_bad_metadata_is_a_400_naming_the_field(
    gw: Gateway, key: str, standin: StandIn, metadata: Any, field: str
) -> None:
    for route, auth in (
        ("/api/v1/completion", xkey(key)),
        ("/v1/chat/completions", {"Authorization": f"Bearer {key}"}),
    ):
        response = await gw.client.post(route, json=chat_body("bad", metadata=metadata), headers=auth)
        assert response.status_code == 400, response.text
        body = response.json()
        if "details" in body:
            assert body["details"][0]["field"] == field
        else:
            assert body["error"]["param"] == field
    assert standin.chat_calls == 0


@pytest.mark.parametrize(
    "header",
    ["not json", "[1, 2]", '{"k": 1}', orjson.dumps({f"k{i}": "v" for i in range(17)}).decode()],
)
async def test_a_bad_x_metadata_header_is_a_400_naming_it(gw: Gateway, key: str, header: str) -> None:
    response = await gw.client.post(
        "/api/v1/completion?batch=1",
        json=chat_body("bad header"),
        headers=xkey(key, **{"X-Metadata": header}),
    )
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["field"].startswith("X-Metadata")


async def test_metadata_in_the_body_and_the_header_at_once_is_a_400(gw: Gateway, key: str) -> None:
    response = await gw.client.post(
        "/api/v1/completion?batch=1",
        json=chat_body("both", metadata={"a": "1"}),
        headers=xkey(key, **{"X-Metadata": '{"b": "2"}'}),
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "X-Metadata"


async def test_the_list_filters_on_metadata_in_redis_and_in_the_database(
    gw: Gateway, key: str, standin: StandIn, redis_url: str
) -> None:
    """Finished jobs are listed from the database (SQLite and PostgreSQL), queued ones from
    Redis: the filter is the same on both, and several filters are AND-ed."""
    gw.start_worker()
    labels = [
        {"team": "red", "env": "prod"},
        {"team": "red", "env": "dev"},
        {"team": "blue", "env": "prod"},
        {"team": "red", "env": "prod", 'odd "key".$[0]': "yes"},
        {},
    ]
    finished = []
    for i, meta in enumerate(labels):
        response = await gw.client.post(
            "/api/v1/completion", json=chat_body(f"done {i}", metadata=meta or None), headers=xkey(key)
        )
        assert response.status_code == 200, response.text
        finished.append(response.headers["x-job-id"])
    await eventually(lambda: _all_persisted(redis_url, key, finished), what="finished jobs in the database")
    await gw.stop_workers()
    queued = []
    for i, meta in enumerate(labels):
        response = await gw.client.post(
            "/api/v1/completion?batch=1",
            json=chat_body(f"queued {i}", metadata=meta or None),
            headers=xkey(key),
        )
        queued.append(response.json()["data"]["job_id"])

    def both(*indexes: int) -> list[str]:  # newest first: the queued ones, then the finished ones
        return [queued[i] for i in reversed(indexes)] + [finished[i] for i in reversed(indexes)]

    assert await listed(gw, key, {"metadata[team]": "red"}) == both(0, 1, 3)
    assert await listed(gw, key, {"metadata[team]": "red", "metadata[env]": "prod"}) == both(0, 3)
    assert await listed(gw, key, {"metadata[env]": "prod", "status": "succeeded"}) == [
        finished[3],
        finished[2],
        finished[0],
    ]
    assert await listed(gw, key, {'metadata[odd "key".$[0]]': "yes"}) == both(3)
    assert await listed(gw, key, {"metadata[team]": "green"}) == []
    assert await listed(gw, key, {"metadata[team]": "RED"}) == []
    # paging through a filtered listing
    page = await gw.client.get(
        "/api/v1/jobs", params={"metadata[team]": "red", "limit": 4}, headers=xkey(key)
    )
    cursor = page.json()["pagination"]["next_cursor"]
    rest = await listed(gw, key, {"metadata[team]": "red", "limit": 4, "cursor": cursor})
    assert [j["id"] for j in page.json()["data"]] + rest == both(0, 1, 3)

    rows = await db_rows(gw.settings.database_url_or_default, *finished)
    assert rows[finished[0]].job_metadata == labels[0]
    assert rows[finished[4]].job_metadata is None


async def _all_persisted(redis_url: str, key: str, ids: list[str]) -> bool:
    r = aioredis.Redis.from_url(redis_url)
    try:
        owner = (await r.hget(f"sy:job:{ids[0]}", "owner")).decode()
        return not any([await r.zscore(f"sy:owner:{owner}", job_id) for job_id in ids])
    finally:
        await r.aclose()


async def test_metadata_is_read_back_from_the_database_once_redis_let_the_job_go(
    gw: Gateway, key: str, redis_url: str
) -> None:
    gw.start_worker()
    response = await gw.client.post(
        "/api/v1/completion", json=chat_body("kept", metadata={"kept": "yes"}), headers=xkey(key)
    )
    job_id = response.headers["x-job-id"]
    await eventually(lambda: _all_persisted(redis_url, key, [job_id]), what="the job in the database")
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.delete(f"sy:job:{job_id}")
    finally:
        await r.aclose()
    job = await get_job(gw.client, key, job_id)
    assert job["metadata"] == {"kept": "yes"} and job["status"] == "succeeded"


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"metadata": "team:red"}, "metadata"),
        ({"metadata[]": "x"}, "metadata[]"),
        ({"metadata[" + "k" * 65 + "]": "x"}, "metadata[" + "k" * 65 + "]"),
        ({"metadata[k]": "v" * 513}, "metadata[k]"),
        ({f"metadata[k{i}]": "v" for i in range(17)}, "metadata"),
        ({"metadata[k": "v"}, "metadata[k"),
    ],
)
async def test_a_bad_metadata_filter_is_a_400_naming_it(
    gw: Gateway, key: str, params: Any, name: str
) -> None:
    response = await gw.client.get("/api/v1/jobs", params=params, headers=xkey(key))
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["field"] == name


async def test_a_job_s_metadata_is_its_own_owner_s_only(gw: Gateway, key: str) -> None:
    other = await gw.create_key("other")
    mine = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("mine", metadata={"t": "1"}), headers=xkey(key)
    )
    await gw.client.post("/api/v1/completion?batch=1", json=chat_body("mine, plain"), headers=xkey(key))
    theirs = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("theirs", metadata={"t": "1"}), headers=xkey(other)
    )
    assert await listed(gw, key, {"metadata[t]": "1"}) == [mine.json()["data"]["job_id"]]
    assert await listed(gw, other, {"metadata[t]": "1"}) == [theirs.json()["data"]["job_id"]]


async def test_wait_for_status_helper_still_sees_metadata(gw: Gateway, key: str) -> None:
    response = await gw.client.post(
        "/api/v1/completion?batch=1", json=chat_body("later", metadata={"x": "y"}), headers=xkey(key)
    )
    job_id = response.json()["data"]["job_id"]
    gw.start_worker()
    job = await wait_for_status(gw.client, key, job_id, "succeeded")
    assert job["metadata"] == {"x": "y"}
