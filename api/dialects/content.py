"""`native` lyrics and movie routes (api-reference 000: Content Services, Lyrics and Movies).

Each is a job on the default lane, answered by a content provider of the providers file
(`kind = "lrclib"` for lyrics, `kind = "tmdb"` for movies); without one, a 501 says so.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from msgspec import Meta

from api.errors import NATIVE, handlers_for
from api.media_results import content_body
from api.openapi import docs
from api.responses import json_response
from api.schemas import native
from api.state import Services, services
from api.submit import submit
from api.validation import bounded_int, convert, decode_object, query_int
from jobs.content import LYRICS_SERVICE, MOVIES_SERVICE, LyricsPayload, MoviesPayload
from jobs.kinds import LYRICS_SEARCH, MOVIES
from jobs.media import cache_key
from switchyard.errors import InvalidRequest, NotSupported

_LANGUAGE = re.compile(r"^[a-z]{2}(?:-[A-Z]{2})?$")
MAX_PAGE = 500  # TMDB's own bound


class LyricsBody(msgspec.Struct, forbid_unknown_fields=False):
    query: Annotated[str, Meta(min_length=1, max_length=200)]


def _require_provider(svc: Services, kind: str, what: str) -> None:
    if not any(p.kind == kind for p in svc.catalog.config.providers):
        raise NotSupported(
            f'{what} needs a provider of kind "{kind}" in the providers file, and none is configured'
        )


async def _run(request: Request, svc: Services, kind: str, payload: dict[str, Any]) -> Response[bytes]:
    principal = await svc.keys.authenticate(request)
    outcome, headers = await submit(
        request,
        svc,
        principal=principal,
        kind=kind,
        payload=payload,
        dialect=NATIVE,
        model=None,
        modality="chat",
    )
    if isinstance(outcome, Response):
        return outcome
    return json_response(content_body(outcome), headers={"x-job-id": outcome.id, **headers})


@post("/api/v1/lyrics/search", status_code=200, opt=docs(body=LyricsBody, answers=native.Content, work=True))
async def lyrics_search(request: Request) -> Response[bytes]:
    """A song's lyrics from words of its title and artist."""
    svc = services(request)
    await svc.keys.authenticate(request)
    body = convert(decode_object(await request.body()), LyricsBody)
    query = " ".join(body.query.split())
    if not query:
        raise InvalidRequest.field("query", "must not be blank", body.query)
    _require_provider(svc, "lrclib", "lyrics search")
    payload: LyricsPayload = {"query": query, "cache_key": cache_key(LYRICS_SERVICE, "search", query.lower())}
    return await _run(request, svc, LYRICS_SEARCH, dict(payload))


def _page(request: Request) -> int:
    return query_int(request, "page", 1, 1, MAX_PAGE)


def _language(request: Request) -> str | None:
    raw = request.query_params.get("language")
    if raw is None:
        return None
    if not _LANGUAGE.match(raw):
        raise InvalidRequest.field("language", "must be a language code like pt-BR or en", raw)
    return raw


async def _movies(
    request: Request, operation: str, *, query: str | None = None, movie_id: int | None = None
) -> Response[bytes]:
    svc = services(request)
    page = _page(request) if operation != "details" else 1
    language = _language(request)
    _require_provider(svc, "tmdb", "the movie routes")
    payload: MoviesPayload = {
        "operation": operation,  # type: ignore[typeddict-item]
        "query": query,
        "movie_id": movie_id,
        "page": page,
        "language": language,
        "cache_key": cache_key(MOVIES_SERVICE, operation, (query or "").lower(), movie_id, page, language),
    }
    return await _run(request, svc, MOVIES, dict(payload))


@get(
    "/api/v1/filmes",
    opt=docs(answers=native.Content, work=True, query={"page": "from 1", "language": "e.g. pt-BR"}),
)
async def list_movies(request: Request) -> Response[bytes]:
    """Popular movies (`page`, `language`), from the cache when they were asked for lately."""
    await services(request).keys.authenticate(request)
    return await _movies(request, "list")


@get(
    "/api/v1/filmes/buscar",
    opt=docs(
        answers=native.Content,
        work=True,
        query={"nome": "the movie's name (required)", "page": "from 1", "language": "e.g. pt-BR"},
    ),
)
async def search_movies(request: Request) -> Response[bytes]:
    """Movies whose title matches `nome`."""
    await services(request).keys.authenticate(request)
    name = " ".join((request.query_params.get("nome") or "").split())
    if not name:
        raise InvalidRequest.field("nome", "is required: the movie's name", request.query_params.get("nome"))
    if len(name) > 200:
        raise InvalidRequest.field("nome", "is longer than 200 characters", name[:50] + "...")
    return await _movies(request, "search", query=name)


@get("/api/v1/filmes/{movie_id:str}", opt=docs(answers=native.Content, work=True))
async def movie_details(request: Request, movie_id: str) -> Response[bytes]:
    """One movie's details (genres, runtime, tagline, ...)."""
    await services(request).keys.authenticate(request)
    return await _movies(request, "details", movie_id=bounded_int(movie_id, "id", 1, 2**31 - 1))


router = Router(
    path="/",
    route_handlers=[lyrics_search, list_movies, search_movies, movie_details],
    exception_handlers=handlers_for(NATIVE),
)
