"""Lyrics and movie look-ups: one HTTP call to a content provider of the providers file.

Lyrics come from an LRCLIB-compatible API (`kind = "lrclib"`, `GET {base_url}/api/search?q=`),
movies from a TMDB-compatible one (`kind = "tmdb"`, `GET {base_url}/movie/popular`,
`/search/movie?query=`, `/movie/{id}`; `api_key` as TMDB's v3 key or v4 bearer token).
Providers of a kind are tried in file order: a failing one (5xx, timeout) passes to the next.
Results are cached per service (`storage.result_cache`).
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from jobs.content import LYRICS_SERVICE, MOVIES_SERVICE, LyricsPayload, MoviesPayload
from storage.result_cache import ResultCache
from switchyard.errors import NotFound, NotSupported, ProviderFailed
from switchyard.providers import ProviderConfig
from workers.context import WorkerCtx

TMDB_IMAGES = "https://image.tmdb.org/t/p/"
_TIMESTAMP = re.compile(r"^\s*(\[\d+:\d+(?:[.:]\d+)?\]\s*)+", re.MULTILINE)


class LyricsNotFound(NotFound):
    error_type = "lyrics_not_found"


class MovieNotFound(NotFound):
    error_type = "movie_not_found"


def providers_of(ctx: WorkerCtx, kind: str) -> list[ProviderConfig]:
    found = [p for p in ctx["catalog"].config.providers if p.kind == kind]
    if not found:
        raise NotSupported(f'no provider of kind "{kind}" is configured in the providers file')
    return found


class _Unavailable(Exception):
    """This provider failed through no fault of the request: try the next one."""


async def _get_json(
    ctx: WorkerCtx, provider: ProviderConfig, path: str, params: dict[str, Any], headers: dict[str, str]
) -> tuple[int, Any]:
    timeout = provider.timeout_s or min(ctx["settings"].provider_timeout_s, 20.0)
    try:
        response = await ctx["http"].client.get(
            provider.base_url + path, params=params, headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise _Unavailable(f"{provider.name}: {exc.__class__.__name__}") from None
    if response.status_code >= 500 or response.status_code == 429:
        raise _Unavailable(f"{provider.name} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise _Unavailable(f"{provider.name} answered something that is not JSON") from None
    return response.status_code, body


def plain_lyrics(song: dict[str, Any]) -> str | None:
    if song.get("plainLyrics"):
        return str(song["plainLyrics"])
    if song.get("syncedLyrics"):
        return _TIMESTAMP.sub("", str(song["syncedLyrics"])).strip()
    return None


def lyrics_body(song: dict[str, Any], provider: ProviderConfig) -> dict[str, Any]:
    return {
        "id": song.get("id"),
        "title": song.get("trackName") or song.get("name"),
        "artist": song.get("artistName"),
        "album": song.get("albumName"),
        "year": None,  # LRCLIB does not say
        "duration": song.get("duration"),
        "instrumental": bool(song.get("instrumental")),
        "lyrics": plain_lyrics(song) or "",
        "synced_lyrics": song.get("syncedLyrics"),
        "url": None,  # the song's page: LRCLIB has none; a details provider (itunes) fills it
        "thumbnail": None,
        "source": provider.name,
        "source_url": f"{provider.base_url}/api/get/{song['id']}" if song.get("id") is not None else None,
    }


async def song_details(ctx: WorkerCtx, title: str | None, artist: str | None) -> dict[str, Any]:
    """`year`, `thumbnail` and `url` (the song's page) from an iTunes-Search-compatible provider
    (`kind = "itunes"`, `GET {base_url}/search?term=&entity=song`); best effort: nothing when
    none is configured or none answers."""
    if not title:
        return {}
    term = f"{artist or ''} {title}".strip()
    for provider in (p for p in ctx["catalog"].config.providers if p.kind == "itunes"):
        try:
            status, body = await _get_json(
                ctx, provider, "/search", {"term": term, "entity": "song", "limit": 10}, {}
            )
        except _Unavailable:
            continue
        results = body.get("results") if status == 200 and isinstance(body, dict) else None
        if not isinstance(results, list):
            continue
        songs = [r for r in results if isinstance(r, dict)]
        same = [r for r in songs if str(r.get("trackName", "")).lower() == title.lower()]
        if artist:
            same = [r for r in same if str(r.get("artistName", "")).lower() == artist.lower()] or same
        if not songs:
            continue
        match = (same or songs)[0]
        released = str(match.get("releaseDate") or "")
        artwork = match.get("artworkUrl100")
        return {
            "year": int(released[:4]) if re.match(r"\d{4}", released) else None,
            # 100x100 is what the search lists; the same artwork comes in larger sizes by name
            "thumbnail": str(artwork).replace("100x100bb", "600x600bb") if artwork else None,
            "url": match.get("trackViewUrl"),
        }
    return {}


async def lyrics_search(ctx: WorkerCtx, job_id: str, payload: LyricsPayload) -> dict[str, Any]:
    cache = ResultCache(ctx["redis"], LYRICS_SERVICE, ctx["settings"].media_cache_ttl_s)
    hit = await cache.get(payload["cache_key"])
    if hit is not None:
        return {"result": {"data": hit, "cached": True}, "provider": "cache"}
    failures = []
    for provider in providers_of(ctx, "lrclib"):
        try:
            status, songs = await _get_json(ctx, provider, "/api/search", {"q": payload["query"]}, {})
        except _Unavailable as exc:
            failures.append(str(exc))
            continue
        if status != 200 or not isinstance(songs, list):
            raise ProviderFailed(f"{provider.name} refused the search (HTTP {status})")
        songs = [s for s in songs if isinstance(s, dict)]
        best = next((s for s in songs if plain_lyrics(s)), None) or next(
            (s for s in songs if s.get("instrumental")), None
        )
        if best is None:
            raise LyricsNotFound(f"no lyrics found for {payload['query']!r}")
        data = lyrics_body(best, provider)
        details = await song_details(ctx, data["title"], data["artist"])
        data.update({k: v for k, v in details.items() if v is not None})
        await cache.put(payload["cache_key"], data)
        return {"result": {"data": data, "cached": False}, "provider": provider.name}
    raise ProviderFailed("every lyrics provider failed: " + "; ".join(failures))


# --- movies ----------------------------------------------------------------------------------------
def _image(path: Any, size: str) -> str | None:
    return f"{TMDB_IMAGES}{size}{path}" if isinstance(path, str) and path else None


def movie_summary(movie: dict[str, Any]) -> dict[str, Any]:
    release = movie.get("release_date") or None
    year = int(release[:4]) if isinstance(release, str) and re.match(r"\d{4}", release) else None
    return {
        "id": movie.get("id"),
        "title": movie.get("title"),
        "original_title": movie.get("original_title"),
        "overview": movie.get("overview"),
        "release_date": release,
        "year": year,
        "rating": movie.get("vote_average"),
        "votes": movie.get("vote_count"),
        "popularity": movie.get("popularity"),
        "language": movie.get("original_language"),
        "poster": _image(movie.get("poster_path"), "w500"),
        "backdrop": _image(movie.get("backdrop_path"), "w1280"),
        "genre_ids": movie.get("genre_ids") or [g.get("id") for g in movie.get("genres") or []],
    }


def movie_details(movie: dict[str, Any]) -> dict[str, Any]:
    return {
        **movie_summary(movie),
        "genres": [g.get("name") for g in movie.get("genres") or [] if isinstance(g, dict)],
        "runtime": movie.get("runtime"),
        "tagline": movie.get("tagline") or None,
        "status": movie.get("status"),
        "imdb_id": movie.get("imdb_id"),
        "homepage": movie.get("homepage") or None,
    }


def _auth(provider: ProviderConfig) -> tuple[dict[str, str], dict[str, str]]:
    """TMDB takes a v3 key as `?api_key=` and a v4 read token (a JWT) as a bearer token."""
    key = provider.resolved_api_key()
    if not key:
        return {}, {}
    if key.startswith("eyJ"):
        return {}, {"authorization": f"Bearer {key}"}
    return {"api_key": key}, {}


async def movies(ctx: WorkerCtx, job_id: str, payload: MoviesPayload) -> dict[str, Any]:
    cache = ResultCache(ctx["redis"], MOVIES_SERVICE, ctx["settings"].media_cache_ttl_s)
    hit = await cache.get(payload["cache_key"])
    if hit is not None:
        return {"result": {"data": hit, "cached": True}, "provider": "cache"}
    operation = payload["operation"]
    params: dict[str, Any] = {}
    if payload.get("language"):
        params["language"] = payload["language"]
    if operation == "details":
        path = f"/movie/{payload['movie_id']}"
    else:
        params["page"] = payload["page"]
        path = "/movie/popular" if operation == "list" else "/search/movie"
        if operation == "search":
            params["query"] = payload["query"]
    failures = []
    for provider in providers_of(ctx, "tmdb"):
        auth_params, headers = _auth(provider)
        try:
            status, body = await _get_json(ctx, provider, path, {**params, **auth_params}, headers)
        except _Unavailable as exc:
            failures.append(str(exc))
            continue
        if status == 404 and operation == "details":
            raise MovieNotFound(f"movie {payload['movie_id']} not found")
        if status in (401, 403):
            raise ProviderFailed(
                f"{provider.name} refused its API key (HTTP {status}): check the providers file"
            )
        if status != 200 or not isinstance(body, dict):
            raise ProviderFailed(f"{provider.name} answered HTTP {status}")
        if operation == "details":
            data = movie_details(body)
        else:
            found = [movie_summary(m) for m in body.get("results") or [] if isinstance(m, dict)]
            data = {
                **({"query": payload["query"]} if operation == "search" else {}),
                "movies": found,
                "count": len(found),
                "page": body.get("page", payload["page"]),
                "total_pages": body.get("total_pages"),
                "total_results": body.get("total_results"),
            }
        await cache.put(payload["cache_key"], data)
        return {"result": {"data": data, "cached": False}, "provider": provider.name}
    raise ProviderFailed("every movie-database provider failed: " + "; ".join(failures))
