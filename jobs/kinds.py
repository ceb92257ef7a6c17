"""Job kinds: the name a worker function is registered under, and the shape of its payload."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

CHAT_COMPLETION = "chat_completion"
EMBEDDING = "embedding"
KINDS: tuple[str, ...] = (CHAT_COMPLETION, EMBEDDING)


class UpstreamOverride(TypedDict, total=False):
    """The upstream a caller named for one call (X-OpenAI-Base-URL / X-OpenAI-Key). It travels
    only in the queued job's body, which the worker deletes when the job finishes: never in the
    job's record or result."""

    base_url: str  # absent: the catalog's providers, called with `api_key`
    api_key: str


class ChatPayload(TypedDict):
    model: str
    request: dict[str, Any]  # the OpenAI chat-completions body sent upstream, model included
    upstream: NotRequired[UpstreamOverride]
    stream: NotRequired[bool]  # relay the provider's chunks through the job's stream (jobs.streams)


class EmbeddingPayload(TypedDict):
    model: str
    request: dict[str, Any]  # the OpenAI embeddings body (input, encoding_format, dimensions...)
    upstream: NotRequired[UpstreamOverride]
