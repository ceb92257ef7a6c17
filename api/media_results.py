"""Media and content jobs' results as api-reference 000's bodies: `data`, `cached`, `timestamp`."""

from __future__ import annotations

from typing import Any

from jobs.records import JobRecord, iso_s


def content_body(record: JobRecord) -> dict[str, Any]:
    result = record.result or {}
    return {
        "success": True,
        "data": result.get("data"),
        "cached": bool(result.get("cached")),
        "timestamp": iso_s(record.finished_ms or record.created_ms),
    }
