"""Content jobs' payloads: lyrics (an LRCLIB-compatible provider) and movies (TMDB-compatible)."""

from __future__ import annotations

from typing import Literal, TypedDict

LYRICS_SERVICE, MOVIES_SERVICE = "lyrics", "movies"


class LyricsPayload(TypedDict):
    query: str  # whitespace collapsed
    cache_key: str


class MoviesPayload(TypedDict):
    operation: Literal["list", "search", "details"]
    query: str | None  # search words
    movie_id: int | None  # details
    page: int
    language: str | None  # e.g. pt-BR; None: the provider's default
    cache_key: str
