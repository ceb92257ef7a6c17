"""Lyrics and movies: jobs that call an LRCLIB-compatible and a TMDB-compatible provider, here
local stand-ins named in the providers file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from switchyard.media_standin import ContentStandIn
from switchyard.providers import default_providers, parse_providers
from switchyard.standin import StandIn
from tests.conftest import (
    Gateway,
    admin_headers,
    get_job,
    make_settings,
    running_gateway,
    wait_for_status,
    write_providers,
)

TMDB_KEY = "tmdb-v3-key"


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
async def content() -> AsyncIterator[ContentStandIn]:
    server = await ContentStandIn(api_key=TMDB_KEY).start()
    yield server
    await server.stop()


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn, content: ContentStandIn) -> Path:
    return write_providers(
        tmp_path / "providers.toml",
        [
            {"name": "standin", "kind": "openai", "base_url": standin.base_url, "models": standin.models},
            {"name": "lyrics", "kind": "lrclib", "base_url": content.lrclib_url},
            {"name": "movies", "kind": "tmdb", "base_url": content.tmdb_url, "api_key": TMDB_KEY},
        ],
    )


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


# --- lyrics --------------------------------------------------------------------------------------
async def test_lyrics_search_in_the_documented_shape(gw: Gateway, key: str, content: ContentStandIn) -> None:
    gw.start_worker()
    response = await gw.client.post(
        "/api/v1/lyrics/search", json={"query": "  bohemian   rhapsody QUEEN "}, headers=h(key)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["cached"] is False and body["timestamp"].endswith("Z")
    data = body["data"]
    assert data["title"] == "Bohemian Rhapsody" and data["artist"] == "Queen"
    assert data["album"] == "A Night at the Opera" and data["year"] is None
    assert data["lyrics"] == "Is this the real life?\nIs this just fantasy?"
    assert data["url"] is None  # LRCLIB has no page of the song; no details provider here
    assert data["source_url"] == f"{content.lrclib_url}/api/get/101"
    assert data["source"] == "lyrics"
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["kind"] == "lyrics_search" and job["result"] == body

    # The same words in another spacing and case: the cache answers, the provider is not called.
    again = await gw.client.post(
        "/api/v1/lyrics/search", json={"query": "Bohemian Rhapsody queen"}, headers=h(key)
    )
    assert again.json()["cached"] is True and again.json()["data"] == data
    assert content.hits["/api/search"] == 1
    stats = (await gw.client.get("/api/v1/lyrics/cache/stats", headers=h(key))).json()["data"]
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 1, 1)
    cleared = await gw.client.delete(
        "/api/v1/lyrics/cache", headers=admin_headers()
    )  # shared: the admin empties it
    assert cleared.json()["data"] == {"service": "lyrics", "cleared": 1}


async def test_lyrics_from_synced_lines_and_not_found(gw: Gateway, key: str) -> None:
    gw.start_worker()
    synced = await gw.client.post("/api/v1/lyrics/search", json={"query": "believer"}, headers=h(key))
    assert synced.json()["data"]["lyrics"] == "First things first\nI'ma say all the words inside my head"
    assert synced.json()["data"]["synced_lyrics"].startswith("[00:01.00]")
    missing = await gw.client.post("/api/v1/lyrics/search", json={"query": "no such song"}, headers=h(key))
    assert missing.status_code == 404 and missing.json()["error"] == "Not Found"
    assert "no lyrics found for 'no such song'" in missing.json()["message"]
    batch = await gw.client.post("/api/v1/lyrics/search?batch=1", json={"query": "believer"}, headers=h(key))
    assert batch.status_code == 202
    job = await wait_for_status(gw.client, key, batch.json()["data"]["job_id"], "succeeded")
    assert job["priority"] == "batch" and job["result"]["cached"] is True


async def test_a_failing_lyrics_provider_is_a_502_with_the_reason(
    gw: Gateway, key: str, content: ContentStandIn
) -> None:
    gw.start_worker()
    content.fail_status = 503
    response = await gw.client.post("/api/v1/lyrics/search", json={"query": "believer"}, headers=h(key))
    assert response.status_code == 502
    assert "lyrics answered HTTP 503" in response.json()["message"]


# --- movies --------------------------------------------------------------------------------------
async def test_movies_list_search_and_details(gw: Gateway, key: str, content: ContentStandIn) -> None:
    gw.start_worker()
    listed = await gw.client.get("/api/v1/filmes", headers=h(key))
    assert listed.status_code == 200, listed.text
    data = listed.json()["data"]
    assert data["count"] == 2 and data["page"] == 1
    inception = data["movies"][0]
    assert inception == {
        "id": 27205,
        "title": "Inception",
        "original_title": "Inception",
        "overview": "A thief who steals secrets...",
        "release_date": "2010-07-15",
        "year": 2010,
        "rating": 8.4,
        "votes": 35000,
        "popularity": 90.5,
        "language": "en",
        "poster": "https://image.tmdb.org/t/p/w500/inception.jpg",
        "backdrop": "https://image.tmdb.org/t/p/w1280/inception-bg.jpg",
        "genre_ids": [28, 878],
    }
    again = await gw.client.get("/api/v1/filmes", headers=h(key))
    assert again.json()["cached"] is True and content.hits["/3/movie/popular"] == 1

    found = await gw.client.get("/api/v1/filmes/buscar", params={"nome": "pulp"}, headers=h(key))
    assert found.status_code == 200
    assert found.json()["data"]["query"] == "pulp"
    assert [m["title"] for m in found.json()["data"]["movies"]] == ["Pulp Fiction"]
    assert found.json()["data"]["movies"][0]["poster"] is None

    details = await gw.client.get("/api/v1/filmes/27205", params={"language": "pt-BR"}, headers=h(key))
    assert details.status_code == 200
    movie = details.json()["data"]
    assert movie["genres"] == ["Action", "Science Fiction"] and movie["runtime"] == 148
    assert movie["imdb_id"] == "tt1375666" and movie["tagline"] == "Your mind is the scene of the crime."

    missing = await gw.client.get("/api/v1/filmes/999", headers=h(key))
    assert missing.status_code == 404 and "movie 999 not found" in missing.json()["message"]
    assert missing.json()["error"] == "Not Found"  # the job failed, but not as a "Bad Gateway"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/filmes/buscar", {}, "nome"),
        ("/api/v1/filmes/buscar", {"nome": "   "}, "nome"),
        ("/api/v1/filmes/buscar", {"nome": "x" * 201}, "nome"),
        ("/api/v1/filmes/buscar", {"nome": "x", "page": "0"}, "page"),
        ("/api/v1/filmes", {"page": "abc"}, "page"),
        ("/api/v1/filmes", {"page": "501"}, "page"),
        ("/api/v1/filmes", {"language": "portuguese"}, "language"),
        ("/api/v1/filmes/abc", {}, "id"),
        ("/api/v1/filmes/-3", {}, "id"),
    ],
)
async def test_bad_movie_input_is_a_400(
    gw: Gateway, key: str, path: str, params: dict[str, str], field: str
) -> None:
    response = await gw.client.get(path, params=params, headers=h(key))
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["field"] == field


@pytest.mark.parametrize(
    "body",
    [{}, {"query": ""}, {"query": "   "}, {"query": 5}, {"query": "x" * 201}],
)
async def test_bad_lyrics_input_is_a_400(gw: Gateway, key: str, body: dict[str, Any]) -> None:
    response = await gw.client.post("/api/v1/lyrics/search", json=body, headers=h(key))
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["field"] == "query"
    assert (await gw.client.post("/api/v1/lyrics/search", content=b"nope", headers=h(key))).status_code == 400
    assert (await gw.client.post("/api/v1/lyrics/search", json={"query": "x"})).status_code == 401
    assert (await gw.client.get("/api/v1/filmes")).status_code == 401


async def test_a_wrong_movie_key_is_a_502_naming_the_provider(
    tmp_path: Path, env: dict[str, str], standin: StandIn, content: ContentStandIn
) -> None:
    providers = write_providers(
        tmp_path / "bad.toml",
        [{"name": "movies", "kind": "tmdb", "base_url": content.tmdb_url, "api_key": "wrong"}],
    )
    async with running_gateway(make_settings({**env, "SWITCHYARD_PROVIDERS": str(providers)})) as gw:
        key = await gw.create_key()
        gw.start_worker()
        response = await gw.client.get("/api/v1/filmes", headers=h(key))
        assert response.status_code == 502
        assert "movies refused its API key (HTTP 401)" in response.json()["message"]
        # No lyrics provider in this file: the route says so.
        lyrics = await gw.client.post("/api/v1/lyrics/search", json={"query": "x"}, headers=h(key))
        assert lyrics.status_code == 501 and 'kind "lrclib"' in lyrics.json()["message"]


def test_content_providers_in_the_file() -> None:
    config = parse_providers(
        '[[providers]]\nname = "l"\nkind = "lrclib"\nbase_url = "https://lrclib.net/"\n'
        '[[providers]]\nname = "t"\nkind = "tmdb"\nbase_url = "https://api.themoviedb.org/3"\n'
        'api_key = "env:TMDB"\n'
    )
    lrclib, tmdb = config.providers
    assert lrclib.base_url == "https://lrclib.net" and lrclib.models == ()
    assert tmdb.models == () and tmdb.api_key == "env:TMDB"
    assert any(p.kind == "lrclib" for p in default_providers().providers)
