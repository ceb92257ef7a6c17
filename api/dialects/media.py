"""`native` social-media and YouTube routes (api-reference 000: Social Media, Content Services).

Each route checks its body and its URL (the site's own links, or a direct media link on the
download routes; a public address unless private ones are allowed), then submits a media job
on the media lane. TikTok and Pinterest searches answer 000's shape with no results and the reason.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.response import Stream
from msgspec import Meta

from api.errors import NATIVE, handlers_for
from api.files import file_fields, serve_file, wants_raw
from api.media_results import content_body
from api.openapi import docs
from api.responses import json_response
from api.schemas import native
from api.state import Services, services
from api.submit import submit
from api.validation import convert, decode_object
from jobs.client import redis_call
from jobs.kinds import MEDIA_DOWNLOAD, MEDIA_INFO
from jobs.media import (
    AUDIO_QUALITIES,
    INSTAGRAM,
    LYRICS,
    MP3,
    MP4,
    PINTEREST,
    TIKTOK,
    VIDEO_QUALITIES,
    YOUTUBE,
    MediaDownloadPayload,
    MediaInfoPayload,
    MediaTarget,
    cache_key,
    media_target,
)
from jobs.queues import MEDIA_LANE
from jobs.records import iso_s, now_ms
from storage.result_cache import ResultCache
from switchyard.errors import InvalidRequest, ProviderFailed
from switchyard.urls import check_url_async

CACHED_SERVICES = (YOUTUBE, TIKTOK, INSTAGRAM, PINTEREST, LYRICS)


class DownloadBody(msgspec.Struct, forbid_unknown_fields=False):
    url: str
    quality: str | None = None
    direct: bool = False


class UrlBody(msgspec.Struct, forbid_unknown_fields=False):
    url: str


# `direct: true` (or an `Accept` naming the type): the file itself instead of JSON about it.
DOWNLOADED = ("audio/mpeg", "video/mp4")


class SearchBody(msgspec.Struct, forbid_unknown_fields=False):
    query: Annotated[str, Meta(min_length=1, max_length=200)]
    limit: Annotated[int, Meta(ge=1, le=50)] = 10


async def _checked_target(svc: Services, service: str, url: Any, *, allow_direct: bool) -> MediaTarget:
    target = media_target(service, url, allow_direct=allow_direct)
    await check_url_async(target.canonical, allow_private=svc.settings.allow_private_urls)
    return target


async def _run(
    request: Request,
    svc: Services,
    kind: str,
    payload: dict[str, Any],
    modality: str,
    *,
    direct: bool | None = None,
) -> Response[bytes] | Stream:
    principal = await svc.keys.authenticate(request)
    outcome, headers = await submit(
        request,
        svc,
        principal=principal,
        kind=kind,
        payload=payload,
        dialect=NATIVE,
        model=None,
        modality=modality,
        lane=MEDIA_LANE,
    )
    if isinstance(outcome, Response):
        return outcome
    headers = {"x-job-id": outcome.id, **headers}
    body = content_body(outcome)
    data = body["data"] or {}
    if kind != MEDIA_DOWNLOAD or not data.get("file_id"):
        return json_response(body, headers=headers)
    file = await svc.files.get(data["file_id"])
    if file is None:
        raise ProviderFailed("the downloaded file is no longer available; ask again")
    if wants_raw(request, file.mime_type, direct):
        raw = await serve_file(request, svc.files, file)
        raw.headers.update(headers)
        return raw
    # The documented body (title, duration, quality, filename, buffer, source) and the file's
    # link and details; a polled job's result has the same fields but `url` in place of `buffer`.
    fields = await file_fields(request, file)
    body["data"] = {**data, "buffer": fields.pop("buffer"), "source": data.get("source"), **fields}
    return json_response(body, headers=headers)


async def _download(request: Request, fmt: str) -> Response[bytes] | Stream:
    svc = services(request)
    await svc.keys.authenticate(request)
    body = convert(decode_object(await request.body()), DownloadBody)
    if fmt == MP3:
        quality = body.quality or "mp3"
        if quality not in AUDIO_QUALITIES:
            raise InvalidRequest.field(
                "quality", f"must be one of {', '.join(AUDIO_QUALITIES)}", body.quality
            )
    else:
        quality = body.quality or "360p"
        if quality not in VIDEO_QUALITIES:
            raise InvalidRequest.field(
                "quality", f"must be one of {', '.join(VIDEO_QUALITIES)}", body.quality
            )
    target = await _checked_target(svc, YOUTUBE, body.url, allow_direct=True)
    payload: MediaDownloadPayload = {
        "service": YOUTUBE,
        "site": target.site,
        "format": "mp3" if fmt == MP3 else "mp4",
        "url": target.canonical,
        "quality": quality,
        "cache_key": cache_key(YOUTUBE, fmt, target.canonical, quality),
    }
    return await _run(request, svc, MEDIA_DOWNLOAD, dict(payload), "video", direct=body.direct)


@post(
    "/api/v1/youtube/mp3",
    status_code=200,
    opt=docs(body=DownloadBody, answers=native.Content, binary=DOWNLOADED, work=True),
)
async def youtube_mp3(request: Request) -> Response[bytes] | Stream:
    """A video's audio as MP3 (`quality`: mp3 (192 kbit/s), 128k, 192k, 256k, 320k)."""
    return await _download(request, MP3)


@post(
    "/api/v1/youtube/mp4",
    status_code=200,
    opt=docs(body=DownloadBody, answers=native.Content, binary=DOWNLOADED, work=True),
)
async def youtube_mp4(request: Request) -> Response[bytes] | Stream:
    """A video as MP4, at most `quality` (360p, 720p, 1080p) tall."""
    return await _download(request, MP4)


@post("/api/v1/youtube/search", status_code=200, opt=docs(body=SearchBody, answers=native.Content, work=True))
async def youtube_search(request: Request) -> Response[bytes] | Stream:
    svc = services(request)
    await svc.keys.authenticate(request)
    body = convert(decode_object(await request.body()), SearchBody)
    query = " ".join(body.query.split())
    if not query:
        raise InvalidRequest.field("query", "must not be blank", body.query)
    payload: MediaInfoPayload = {
        "service": YOUTUBE,
        "site": YOUTUBE,
        "operation": "search",
        "query": query,
        "limit": body.limit,
        "cache_key": cache_key(YOUTUBE, "search", query.lower(), body.limit),
        "media_id": None,
        "kind": None,
    }
    return await _run(request, svc, MEDIA_INFO, dict(payload), "chat")


async def _post_info(request: Request, service: str) -> Response[bytes] | Stream:
    svc = services(request)
    await svc.keys.authenticate(request)
    body = convert(decode_object(await request.body()), UrlBody)
    target = await _checked_target(svc, service, body.url, allow_direct=True)
    payload: MediaInfoPayload = {
        "service": service,
        "site": target.site,
        "operation": "info",
        "query": target.canonical,
        "limit": 0,
        "cache_key": cache_key(service, "info", target.canonical),
        "media_id": target.media_id,
        "kind": target.kind if not target.generic else None,
    }
    return await _run(request, svc, MEDIA_INFO, dict(payload), "video")


@post("/api/v1/tiktok/download", status_code=200, opt=docs(body=UrlBody, answers=native.Content, work=True))
async def tiktok_download(request: Request) -> Response[bytes] | Stream:
    """A TikTok video's details and media links (no watermark where the site offers one)."""
    return await _post_info(request, TIKTOK)


@post(
    "/api/v1/instagram/download", status_code=200, opt=docs(body=UrlBody, answers=native.Content, work=True)
)
async def instagram_download(request: Request) -> Response[bytes] | Stream:
    """A post's, reel's or story's media; a carousel gives several."""
    return await _post_info(request, INSTAGRAM)


@post(
    "/api/v1/pinterest/download", status_code=200, opt=docs(body=UrlBody, answers=native.Content, work=True)
)
async def pinterest_download(request: Request) -> Response[bytes] | Stream:
    """A pin's image or video links, largest first."""
    return await _post_info(request, PINTEREST)


_NO_SEARCH = {
    TIKTOK: "TikTok offers no search without a signed-in account (its search API needs a logged-in "
    "session's cookies and request signatures), so this gateway cannot search it",
    PINTEREST: "Pinterest offers no search without a signed-in account (its API needs an app's OAuth "
    "token; the site's search needs a login), so this gateway cannot search it",
}


async def _no_search(request: Request, service: str) -> Response[bytes]:
    """000's search shape with no results and the reason (yt-dlp has no search extractor for
    these sites, and their own search needs an account): `available: false` says it is not
    an empty search."""
    svc = services(request)
    await svc.keys.authenticate(request)
    body = convert(decode_object(await request.body()), SearchBody)  # bad input is still a 400
    query = " ".join(body.query.split())
    if not query:
        raise InvalidRequest.field("query", "must not be blank", body.query)
    data = {"query": query, "results": [], "count": 0, "available": False, "reason": _NO_SEARCH[service]}
    return json_response({"success": True, "data": data, "cached": False, "timestamp": iso_s(now_ms())})


@post(
    "/api/v1/tiktok/search",
    status_code=200,
    opt=docs(body=SearchBody, answers=native.NoSearchAnswer, work=True),
)
async def tiktok_search(request: Request) -> Response[bytes]:
    return await _no_search(request, TIKTOK)


@post(
    "/api/v1/pinterest/search",
    status_code=200,
    opt=docs(body=SearchBody, answers=native.NoSearchAnswer, work=True),
)
async def pinterest_search(request: Request) -> Response[bytes]:
    return await _no_search(request, PINTEREST)


def _service_of(request: Request) -> str:
    return request.url.path.split("/")[3]  # /api/v1/{service}/cache...


def result_cache(svc: Services, service: str) -> ResultCache:
    return ResultCache(svc.redis, service, svc.settings.media_cache_ttl_s)


@get([f"/api/v1/{s}/cache/stats" for s in CACHED_SERVICES], opt=docs(answers=native.ResultCacheStatsAnswer))
async def cache_stats(request: Request) -> Response[bytes]:
    """Hits, misses, hit rate, entries and bytes of this service's result cache."""
    svc = services(request)
    await svc.keys.authenticate(request)
    stats = await redis_call(result_cache(svc, _service_of(request)).stats)
    return json_response({"success": True, "data": stats})


@delete(
    [f"/api/v1/{s}/cache" for s in CACHED_SERVICES],
    status_code=200,
    opt=docs(answers=native.ResultCacheClearedAnswer),
)
async def cache_clear(request: Request) -> Response[bytes]:
    """Empty this service's result cache (the files already handed out stay). The cache is
    shared by every key: only the admin key may empty it."""
    svc = services(request)
    service = _service_of(request)
    await svc.keys.require_admin(request, f"empty the shared {service} cache")
    cleared = await redis_call(result_cache(svc, service).clear)
    return json_response({"success": True, "data": {"service": service, "cleared": cleared}})


router = Router(
    path="/",
    route_handlers=[
        youtube_mp3,
        youtube_mp4,
        youtube_search,
        tiktok_download,
        tiktok_search,
        instagram_download,
        pinterest_download,
        pinterest_search,
        cache_stats,
        cache_clear,
    ],
    exception_handlers=handlers_for(NATIVE),
)
