"""A finished image or video job's result in each dialect's shape (see api/results.py).

The worker's result lists its images (`images`: mime, size, the stored file's id and URL, its
thumbnail's, and when the caller asked for `b64_json` the bytes inline); each dialect shows
them its own way.
"""

from __future__ import annotations

from typing import Any

from api.errors import APIDOCS, CLOUDGPT, NATIVE
from jobs.records import JobRecord


def image_ref(entry: dict[str, Any], response_format: str) -> dict[str, Any]:
    """`{"b64_json": ...}` or `{"url": ...}` for one stored image (or video)."""
    if response_format == "b64_json" and entry.get("b64") is not None:
        return {"b64_json": entry["b64"]}
    return {"url": entry.get("url")}


def _processing_ms(record: JobRecord) -> int:
    return (record.finished_ms or record.created_ms) - record.created_ms


def image_body(record: JobRecord) -> dict[str, Any]:
    result: dict[str, Any] = record.result or {}
    images: list[dict[str, Any]] = result.get("images") or []
    fmt = str(result.get("response_format") or "url")
    if record.dialect == NATIVE:
        data = [
            {
                **image_ref(e, fmt),
                "revised_prompt": e.get("revised_prompt"),
                "size": result.get("size"),
                "quality": result.get("quality") or "standard",
                "index": e.get("index", i) + 1,
                "thumbnail_url": e.get("thumbnail_url"),
            }
            for i, e in enumerate(images)
        ]
        return {
            "success": True,
            "data": {"created": result.get("created"), "data": data},
            "usage": {"images_generated": len(images), "estimated_cost": record.estimated_cost},
            "request_id": "img_" + record.id,
            "processing_time_ms": _processing_ms(record),
        }
    if record.dialect == CLOUDGPT:  # the route answers bytes; a polled job describes them
        data = [
            {**image_ref(e, fmt), "file_id": e.get("file_id"), "content_type": e.get("mime"),
             "width": e.get("width"), "height": e.get("height"), "bytes": e.get("bytes"),
             "seed": e.get("seed"), "thumbnail_url": e.get("thumbnail_url")}
            for e in images
        ]  # fmt: skip
        return {"created": result.get("created"), "model": result.get("model"), "data": data}
    data = [{**image_ref(e, fmt), "revised_prompt": e.get("revised_prompt")} for e in images]
    if record.dialect == APIDOCS:
        first = data[0] if data else {"url": None, "revised_prompt": None}
        return {**first, "data": data} if len(data) > 1 else first
    return {"created": result.get("created"), "data": data}  # OpenAI's ImagesResponse


def video_body(record: JobRecord) -> dict[str, Any]:
    result: dict[str, Any] = record.result or {}
    video: dict[str, Any] = result.get("video") or {}
    return {
        "created": result.get("created"),
        "model": result.get("model"),
        "duration": result.get("duration"),
        "width": result.get("width"),
        "height": result.get("height"),
        "content_type": video.get("mime", "video/mp4"),
        "bytes": video.get("bytes"),
        "file_id": video.get("file_id"),
        "url": video.get("url"),
    }
