"""A finished job's result as each dialect's synchronous response body.

The jobs API uses the same functions, so a polled job's `result` is exactly what the
synchronous call would have returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.errors import APIDOCS, CREDITS, NATIVE
from api.image_results import image_body, video_body
from api.media_results import content_body
from jobs.kinds import (
    CHAT_COMPLETION,
    EMBEDDING,
    IMAGE_GENERATION,
    LYRICS_SEARCH,
    MEDIA_DOWNLOAD,
    MEDIA_INFO,
    MOVIES,
    VIDEO_GENERATION,
)
from jobs.queues import BATCH
from jobs.records import JobRecord


def _usage(completion: dict[str, Any]) -> dict[str, int]:
    usage = completion.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion_tokens = int(usage.get("completion_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion_tokens),
    }


def _reasoning_tokens(completion: dict[str, Any]) -> int:
    """What the provider says the model spent thinking (OpenAI's `completion_tokens_details`)."""
    details = (completion.get("usage") or {}).get("completion_tokens_details") or {}
    try:
        return int(details.get("reasoning_tokens") or 0)
    except (TypeError, ValueError):
        return 0


def chat_body(record: JobRecord) -> dict[str, Any]:
    completion = dict(record.result or {})
    completion.setdefault("object", "chat.completion")
    completion.setdefault("id", "chatcmpl-" + record.id)
    completion.setdefault("created", record.created_ms // 1000)
    if record.model:
        completion["model"] = record.model
    if record.dialect == CREDITS:
        completion["usage"] = _usage(completion)
        completion["credits_charged"] = record.credits_charged
        completion["credits_remaining"] = record.balance  # None: the key is not credit-metered
        completion["batch_request"] = record.priority == BATCH
        return completion
    if record.dialect == NATIVE:
        usage = _usage(completion)
        body: dict[str, Any] = {
            "success": True,
            "data": completion,
            "usage": {
                **usage,
                "thinking_tokens": _reasoning_tokens(completion),
                "estimated_cost": record.estimated_cost,
            },
        }
        if record.limits_remaining is not None:  # after the call; null: unlimited
            remaining = {k: (v if v >= 0 else None) for k, v in record.limits_remaining.items()}
            body["limits"] = {"remaining": remaining}
        body["request_id"] = "req_" + record.id
        body["processing_time_ms"] = (record.finished_ms or record.created_ms) - record.created_ms
        return body
    if record.dialect == APIDOCS:  # api-reference 004: the text and the usage, nothing else
        choices = completion.get("choices") or [{}]
        message = choices[0].get("message") or {}
        return {"content": message.get("content") or "", "usage": _usage(completion)}
    return completion


def embedding_body(record: JobRecord) -> dict[str, Any]:
    """OpenAI's embeddings list; api-reference 004's `/api/embedding/` takes one text and answers
    its one vector."""
    result = dict(record.result or {})
    if record.model:
        result["model"] = record.model
    if record.dialect == APIDOCS:
        data = result.get("data") or [{}]
        usage = result.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        return {
            "embedding": data[0].get("embedding"),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    return result


RENDERERS: dict[str, Callable[[JobRecord], dict[str, Any]]] = {
    CHAT_COMPLETION: chat_body,
    EMBEDDING: embedding_body,
    MEDIA_DOWNLOAD: content_body,
    MEDIA_INFO: content_body,
    LYRICS_SEARCH: content_body,
    MOVIES: content_body,
}
RENDERERS.update({IMAGE_GENERATION: image_body, VIDEO_GENERATION: video_body})


def result_body(record: JobRecord) -> Any:
    if record.result is None:
        return None
    renderer = RENDERERS.get(record.kind)
    return renderer(record) if renderer else record.result
