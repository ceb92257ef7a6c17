"""api-reference 000's lyrics example: `year`, `thumbnail` and `url` (the song's page) from a
provider that has them (an iTunes-Search-compatible one beside LRCLIB)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchyard.media_standin import ContentStandIn
from switchyard.providers import default_providers
from switchyard.standin import StandIn
from tests.conftest import Gateway, write_providers


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
async def content() -> AsyncIterator[ContentStandIn]:
    server = await ContentStandIn().start()
    yield server
    await server.stop()


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn, content: ContentStandIn) -> Path:
    return write_providers(
        tmp_path / "providers.toml",
        [
            {"name": "standin", "kind": "openai", "base_url": standin.base_url, "models": standin.models},
            {"name": "lyrics", "kind": "lrclib", "base_url": content.lrclib_url},
            {"name": "songs", "kind": "itunes", "base_url": content.itunes_url},
        ],
    )


async def test_lyrics_have_the_year_the_artwork_and_the_songs_page(
    gw: Gateway, key: str, content: ContentStandIn
) -> None:
    gw.start_worker()
    response = await gw.client.post(
        "/api/v1/lyrics/search", json={"query": "bohemian rhapsody queen"}, headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["title"] == "Bohemian Rhapsody" and data["artist"] == "Queen"
    assert data["album"] == "A Night at the Opera" and data["year"] == 1975
    assert data["thumbnail"] == "https://is1-ssl.mzstatic.com/image/thumb/Music/queen/600x600bb.jpg"
    assert data["url"].startswith("https://music.apple.com/")
    assert data["lyrics"].startswith("Is this the real life?")
    # A song the details provider does not know keeps its lyrics, without the details.
    other = await gw.client.post(
        "/api/v1/lyrics/search", json={"query": "imagine dragons believer"}, headers={"X-API-Key": key}
    )
    assert other.status_code == 200, other.text
    assert other.json()["data"]["year"] is None and other.json()["data"]["url"] is None
    assert content.hits["/itunes/search"] == 2


def test_the_keyless_defaults_include_a_song_details_provider() -> None:
    assert any(p.kind == "itunes" for p in default_providers().providers)
