"""Media jobs' contract: which URLs each service accepts, their canonical form, and the payloads.

Importable from both sides: the API checks a URL and builds the payload (and the cache key)
before it enqueues anything; the worker trusts the canonical URL it is given. A URL is
accepted on a route when it is a link of that route's site, or, on the download routes, a
direct link to a media file (a path ending in a media extension), which yt-dlp's generic
extractor downloads as it is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal, TypedDict
from urllib.parse import parse_qs, urlsplit, urlunsplit

from switchyard.errors import InvalidRequest

YOUTUBE, TIKTOK, INSTAGRAM, PINTEREST, LYRICS = "youtube", "tiktok", "instagram", "pinterest", "lyrics"
SERVICES: tuple[str, ...] = (YOUTUBE, TIKTOK, INSTAGRAM, PINTEREST, LYRICS)
SITE_NAMES = {YOUTUBE: "YouTube", TIKTOK: "TikTok", INSTAGRAM: "Instagram", PINTEREST: "Pinterest"}

MP3, MP4 = "mp3", "mp4"
VIDEO_QUALITIES: dict[str, int] = {"360p": 360, "720p": 720, "1080p": 1080}
AUDIO_QUALITIES: dict[str, str] = {"mp3": "192", "128k": "128", "192k": "192", "256k": "256", "320k": "320"}

MEDIA_EXTENSIONS: dict[str, str] = {
    "mp4": "video", "m4v": "video", "webm": "video", "mkv": "video", "mov": "video",
    "mp3": "audio", "m4a": "audio", "aac": "audio", "ogg": "audio", "opus": "audio", "wav": "audio",
    "flac": "audio", "jpg": "image", "jpeg": "image", "png": "image", "gif": "image", "webp": "image",
}  # fmt: skip

_YT_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_YT_HOSTS = ("youtube.com", "youtube-nocookie.com")
_YT_PATH = re.compile(r"^/(?:shorts|embed|live|v|e)/([A-Za-z0-9_-]{11})(?:[/?#]|$)")
_TT_VIDEO = re.compile(r"^/@([^/]+)/(?:video|photo)/(\d+)")
_TT_SHORT = re.compile(r"^/(?:t/)?([A-Za-z0-9]+)/?$")
_IG_POST = re.compile(r"^/(?:[A-Za-z0-9_.]+/)?(p|reels?|tv)/([A-Za-z0-9_-]+)")
_IG_STORY = re.compile(r"^/stories/([A-Za-z0-9_.]+)/(\d+)")
_PIN = re.compile(r"^/pin/(?:[^/]*--)?(\d+)")
_PIN_SHORT = re.compile(r"^/([A-Za-z0-9]+)/?$")


@dataclass(frozen=True, slots=True)
class MediaTarget:
    """A URL a route accepted: its site (or `generic`), the id there, and its canonical form."""

    site: str  # a service name, or "generic" for a direct media link
    canonical: str  # what the cache is keyed by and what yt-dlp is given
    media_id: str | None = None
    kind: str | None = None  # instagram: post, reel, tv, story; generic: video, audio, image

    @property
    def generic(self) -> bool:
        return self.site == "generic"


def _host(netloc_host: str | None) -> str:
    host = (netloc_host or "").lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def _on(host: str, *domains: str) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def _is_pinterest(host: str) -> bool:
    # pinterest.com, br.pinterest.com, pinterest.co.uk, pinterest.de, ...
    return (
        re.fullmatch(r"(?:[a-z]{2}\.)?pinterest\.(?:com|[a-z]{2}|co\.[a-z]{2}|com\.[a-z]{2})", host)
        is not None
    )


def _youtube(parts: tuple[str, str, str, str], host: str) -> MediaTarget | None:
    _, _, path, query = parts
    video_id = None
    if host == "youtu.be":
        video_id = path.strip("/").split("/")[0]
    elif _on(host, *_YT_HOSTS):
        if path.rstrip("/") == "/watch":
            video_id = (parse_qs(query).get("v") or [""])[0]
        else:
            m = _YT_PATH.match(path)
            video_id = m.group(1) if m else None
    if not video_id or not _YT_ID.match(video_id):
        return None
    return MediaTarget(YOUTUBE, f"https://www.youtube.com/watch?v={video_id}", video_id, "video")


def _tiktok(parts: tuple[str, str, str, str], host: str) -> MediaTarget | None:
    path = parts[2]
    if host in ("tiktok.com", "m.tiktok.com"):
        m = _TT_VIDEO.match(path)
        if m:
            return MediaTarget(TIKTOK, f"https://www.tiktok.com/@{m.group(1)}/video/{m.group(2)}", m.group(2))
        m = _TT_SHORT.match(path) if path.startswith("/t/") else None
        if m:
            return MediaTarget(TIKTOK, f"https://www.tiktok.com/t/{m.group(1)}/", None)
    if host in ("vm.tiktok.com", "vt.tiktok.com"):
        m = _TT_SHORT.match(path)
        if m:
            return MediaTarget(TIKTOK, f"https://{host}/{m.group(1)}/", None)
    return None


def _instagram(parts: tuple[str, str, str, str], host: str) -> MediaTarget | None:
    if host not in ("instagram.com", "m.instagram.com"):
        return None
    path = parts[2]
    m = _IG_STORY.match(path)
    if m:
        return MediaTarget(
            INSTAGRAM, f"https://www.instagram.com/stories/{m.group(1)}/{m.group(2)}/", m.group(2), "story"
        )
    m = _IG_POST.match(path)
    if not m:
        return None
    segment, shortcode = m.group(1), m.group(2)
    kind = {"p": "post", "reel": "reel", "reels": "reel", "tv": "tv"}[segment]
    canonical_segment = {"post": "p", "reel": "reel", "tv": "tv"}[kind]
    return MediaTarget(
        INSTAGRAM, f"https://www.instagram.com/{canonical_segment}/{shortcode}/", shortcode, kind
    )


def _pinterest(parts: tuple[str, str, str, str], host: str) -> MediaTarget | None:
    path = parts[2]
    if _is_pinterest(host):
        m = _PIN.match(path)
        if m:
            return MediaTarget(PINTEREST, f"https://www.pinterest.com/pin/{m.group(1)}/", m.group(1))
    if host == "pin.it":
        m = _PIN_SHORT.match(path)
        if m:
            return MediaTarget(PINTEREST, f"https://pin.it/{m.group(1)}", None)
    return None


_SITES = {YOUTUBE: _youtube, TIKTOK: _tiktok, INSTAGRAM: _instagram, PINTEREST: _pinterest}


def direct_media(url: str) -> MediaTarget | None:
    """A direct link to a media file: http(s), a path ending in a media extension."""
    parts = urlsplit(url)
    ext = parts.path.rsplit(".", 1)[-1].lower() if "." in parts.path.rsplit("/", 1)[-1] else ""
    if ext not in MEDIA_EXTENSIONS:
        return None
    canonical = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))
    return MediaTarget("generic", canonical, None, MEDIA_EXTENSIONS[ext])


def media_target(service: str, url: object, *, allow_direct: bool = True, field: str = "url") -> MediaTarget:
    """The accepted form of `url` on a route of `service`, or a 400 naming the field and why.

    This checks the shape only; whether the host may be fetched (public addresses) is
    `switchyard.urls`' check, made before any download.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest.field(field, "is required: a non-empty URL string", url if url else None)
    url = url.strip()
    if len(url) > 2048:
        raise InvalidRequest.field(field, "is longer than 2048 characters", url[:100] + "...")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        raise InvalidRequest.field(field, f"is not a valid URL: {exc}", url) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidRequest.field(field, "must be an http:// or https:// URL", url)
    host = _host(parts.hostname)
    target = _SITES[service]((parts.scheme, parts.netloc, parts.path, parts.query), host)
    if target is not None:
        return target
    if allow_direct:
        direct = direct_media(url)
        if direct is not None:
            return direct
    name = SITE_NAMES[service]
    what = f"a {name} link" + (" or a direct link to a media file" if allow_direct else "")
    raise InvalidRequest.field(field, f"is not {what}; this route does not download from {host!r}", url)


def cache_key(service: str, operation: str, *parts: str | int | None) -> str:
    """The normalized request as a short, stable cache key."""
    raw = "\x1f".join([service, operation, *("" if p is None else str(p) for p in parts)])
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


class MediaDownloadPayload(TypedDict):
    """Download one video or audio file with yt-dlp and store it."""

    service: str
    site: str  # the service, or "generic" for a direct media link
    format: Literal["mp3", "mp4"]
    url: str  # canonical
    quality: str
    cache_key: str


class MediaInfoPayload(TypedDict):
    """Look something up with yt-dlp without downloading: a search, or a post's media links."""

    service: str
    site: str  # the service, or "generic" for a direct media link
    operation: Literal["search", "info"]
    query: str  # the search words, or the canonical URL
    limit: int
    cache_key: str
    media_id: str | None  # the site's id of the post, when the URL says it
    kind: str | None  # instagram: post, reel, tv, story
