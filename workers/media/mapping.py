"""yt-dlp's metadata (its info dicts) as the response bodies api-reference 000 documents.

Pure functions of an info dict, so they are tested on recorded metadata.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jobs.media import INSTAGRAM, MEDIA_EXTENSIONS, PINTEREST, TIKTOK, YOUTUBE

_PINIMG_SIZE = re.compile(r"^https?://i\.pinimg\.com/([^/]+)/")


def iso_duration(seconds: Any) -> str | None:
    """ISO 8601 duration (`PT45M30S`), as the documented search result gives it."""
    if not isinstance(seconds, int | float) or seconds < 0:
        return None
    total = int(round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    out = "PT" + (f"{h}H" if h else "") + (f"{m}M" if m else "")
    return out + (f"{s}S" if s or total == 0 else "")


def iso_time(info: dict[str, Any]) -> str | None:
    """When it was published: a timestamp if the site gave one, else its upload date."""
    for key in ("timestamp", "release_timestamp"):
        ts = info.get(key)
        if isinstance(ts, int | float):
            return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    date = info.get("upload_date") or info.get("release_date")
    if isinstance(date, str) and re.fullmatch(r"\d{8}", date):
        return f"{date[:4]}-{date[4:6]}-{date[6:]}T00:00:00Z"
    return None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def best_thumbnail(info: dict[str, Any]) -> str | None:
    thumbs = [t for t in info.get("thumbnails") or [] if isinstance(t, dict) and t.get("url")]
    if thumbs:
        best = max(
            thumbs, key=lambda t: (t.get("preference") or 0, (t.get("width") or 0) * (t.get("height") or 0))
        )
        return str(best["url"])
    thumb = info.get("thumbnail")
    return str(thumb) if thumb else None


# --- YouTube -------------------------------------------------------------------------------------
def youtube_video_url(entry: dict[str, Any]) -> str | None:
    vid = entry.get("id")
    if isinstance(vid, str) and re.fullmatch(r"[A-Za-z0-9_-]{11}", vid):
        return f"https://www.youtube.com/watch?v={vid}"
    url = entry.get("webpage_url") or entry.get("url")
    return str(url) if url else None


def youtube_search(info: dict[str, Any], payload: Any) -> dict[str, Any]:
    results = []
    for entry in info.get("entries") or []:
        if not isinstance(entry, dict) or entry.get("ie_key") not in (None, "Youtube"):
            continue  # channels and playlists in the results are not videos
        channel_url = entry.get("channel_url") or (
            f"https://www.youtube.com/channel/{entry['channel_id']}" if entry.get("channel_id") else None
        )
        results.append(
            {
                "id": entry.get("id"),
                "title": entry.get("title"),
                "description": entry.get("description"),
                "thumbnail": best_thumbnail(entry),
                "url": youtube_video_url(entry),
                "channel": {"name": entry.get("channel") or entry.get("uploader"), "url": channel_url},
                "duration": iso_duration(entry.get("duration")),
                "views": _int(entry.get("view_count")),
                "published": iso_time(entry),
            }
        )
    return {"query": payload["query"], "results": results, "count": len(results)}


# --- TikTok --------------------------------------------------------------------------------------
def _video_formats(info: dict[str, Any]) -> list[dict[str, Any]]:
    formats = [f for f in info.get("formats") or [] if isinstance(f, dict) and f.get("url")]
    if not formats and info.get("url"):
        formats = [info]
    return [f for f in formats if f.get("vcodec") != "none"]


def _generic_urls(info: dict[str, Any]) -> list[dict[str, Any]]:
    url = info.get("url") or info.get("webpage_url")
    ext = info.get("ext") or "mp4"
    return [{"quality": "original", "url": url, "format": ext}] if url else []


def tiktok_video(info: dict[str, Any], payload: Any) -> dict[str, Any]:
    urls: list[dict[str, Any]] = []
    seen: set[str] = set()

    def watermarked(f: dict[str, Any]) -> bool:
        return "watermark" in f"{f.get('format_note') or ''} {f.get('format_id') or ''}".lower()

    def short_side(f: dict[str, Any]) -> int:  # TikTok is portrait: 720p is 720 wide
        sides = [v for v in (f.get("width"), f.get("height")) if isinstance(v, int | float)]
        return int(min(sides)) if sides else 0

    # Clean copies first, best first; the watermarked ones last.
    formats = sorted(
        _video_formats(info),
        key=lambda f: (not watermarked(f), short_side(f), f.get("tbr") or 0),
        reverse=True,
    )
    for f in formats:
        if f["url"] in seen:
            continue
        seen.add(f["url"])
        quality = "watermark" if watermarked(f) else ("hd" if short_side(f) >= 720 else "sd")
        urls.append({"quality": quality, "url": f["url"], "format": f.get("ext") or "mp4"})
    if payload.get("site") == "generic":
        urls = _generic_urls(info)
    music = None
    if info.get("track") or info.get("artist"):
        music = {
            "title": info.get("track"),
            "author": info.get("artist") or (info.get("artists") or [None])[0],
            "url": None,  # yt-dlp does not give the sound's own file
        }
    return {
        "id": info.get("id"),
        "title": info.get("title") or info.get("description"),
        "author": {
            "username": info.get("uploader") or info.get("uploader_id"),
            "nickname": info.get("channel") or info.get("creator") or info.get("uploader"),
            "avatar": None,
        },
        "stats": {
            "views": _int(info.get("view_count")),
            "likes": _int(info.get("like_count")),
            "comments": _int(info.get("comment_count")),
            "shares": _int(info.get("repost_count")),
        },
        "duration": _int(info.get("duration")),
        "thumbnail": best_thumbnail(info),
        "urls": urls,
        "music": music,
    }


# --- Instagram -----------------------------------------------------------------------------------
def _media_item(entry: dict[str, Any]) -> dict[str, Any] | None:
    formats = [f for f in entry.get("formats") or [] if isinstance(f, dict) and f.get("url")]
    if not formats and entry.get("url"):
        formats = [entry]
    if not formats:
        return None
    best = max(formats, key=lambda f: ((f.get("height") or 0) * (f.get("width") or 0), f.get("tbr") or 0))
    ext = (best.get("ext") or entry.get("ext") or "").lower()
    is_image = MEDIA_EXTENSIONS.get(ext) == "image" or (
        best.get("vcodec") == "none" and best.get("acodec") in (None, "none") and ext not in ("mp3", "m4a")
    )
    return {
        "type": "image" if is_image else "video",
        "url": best["url"],
        "width": _int(best.get("width") or entry.get("width")),
        "height": _int(best.get("height") or entry.get("height")),
        "thumbnail": best_thumbnail(entry),
    }


def instagram_post(info: dict[str, Any], payload: Any) -> dict[str, Any]:
    entries = info.get("entries") if info.get("_type") in ("playlist", "multi_video") else [info]
    media = [m for m in (_media_item(e) for e in entries or [] if isinstance(e, dict)) if m]
    first = next((e for e in entries or [] if isinstance(e, dict)), {})

    def pick(key: str) -> Any:
        return info.get(key) if info.get(key) is not None else first.get(key)

    kind = payload.get("kind") or ("post" if payload.get("site") != "generic" else "media")
    return {
        "id": pick("id") if payload.get("site") == "generic" else payload.get("media_id") or pick("id"),
        "type": kind,
        "caption": pick("description") or pick("title"),
        "author": {
            "username": pick("channel") or pick("uploader_id"),
            "full_name": pick("uploader"),
            "avatar": None,
        },
        "timestamp": iso_time(info) or iso_time(first),
        "likes": _int(pick("like_count")),
        "comments": _int(pick("comment_count")),
        "media": media,
        "count": len(media),
    }


# --- Pinterest -----------------------------------------------------------------------------------
def pinterest_pin(info: dict[str, Any], payload: Any) -> dict[str, Any]:
    urls: list[dict[str, Any]] = []
    seen: set[str] = set()
    formats = [f for f in info.get("formats") or [] if isinstance(f, dict) and f.get("url")]
    for f in sorted(formats, key=lambda f: f.get("height") or 0, reverse=True):
        if f["url"] not in seen:
            seen.add(f["url"])
            label = f"{f['height']}p" if f.get("height") else (f.get("format_id") or "video")
            urls.append({"quality": label, "url": f["url"], "format": f.get("ext")})
    images = [t for t in info.get("thumbnails") or [] if isinstance(t, dict) and t.get("url")]
    if info.get("url") and not formats:
        images.insert(0, {"url": info["url"]})
    for t in images:
        if t["url"] in seen:
            continue
        seen.add(t["url"])
        m = _PINIMG_SIZE.match(t["url"])
        label = (
            m.group(1)
            if m
            else ("original" if not urls else f"{t.get('width') or ''}x".strip("x") or "image")
        )
        urls.append({"quality": label, "url": t["url"]})
    if payload.get("site") == "generic":
        urls = _generic_urls(info)
    return {
        "id": info.get("id"),
        "title": info.get("title"),
        "description": info.get("description"),
        "urls": urls,
        "author": info.get("uploader") or info.get("uploader_id"),
        "board": None,  # yt-dlp does not give the pin's board
    }


MAPPERS: dict[tuple[str, str], Callable[[dict[str, Any], Any], dict[str, Any]]] = {
    (YOUTUBE, "search"): youtube_search,
    (TIKTOK, "info"): tiktok_video,
    (INSTAGRAM, "info"): instagram_post,
    (PINTEREST, "info"): pinterest_pin,
}
