"""Job kinds: the name a worker function is registered under, and the shape of its payload."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

CHAT_COMPLETION = "chat_completion"
EMBEDDING = "embedding"
KINDS: tuple[str, ...] = (CHAT_COMPLETION, EMBEDDING)
IMAGE_GENERATION = "image_generation"
VIDEO_GENERATION = "video_generation"
KINDS += (IMAGE_GENERATION, VIDEO_GENERATION)
MEDIA_DOWNLOAD = "media_download"  # payload: jobs.media.MediaDownloadPayload; media lane
MEDIA_INFO = "media_info"  # payload: jobs.media.MediaInfoPayload; media lane
KINDS += (MEDIA_DOWNLOAD, MEDIA_INFO)
LYRICS_SEARCH = "lyrics_search"  # payload: jobs.content.LyricsPayload
MOVIES = "movies"  # payload: jobs.content.MoviesPayload
KINDS += (LYRICS_SEARCH, MOVIES)


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


class ImagePayload(TypedDict):
    model: str
    prompt: str
    width: int
    height: int
    n: int
    format: str  # png, jpeg or webp: what the caller receives
    quality: int | None  # JPEG/WebP encoder quality, 1-100
    seed: int | None
    response_format: str  # url, b64_json or binary (the route returns the bytes themselves)
    options: dict[str, Any]  # what else the caller asked of the provider (negative_prompt, style...)
    files_base: NotRequired[str]  # where the API serves files (`{files_base}/api/v1/files/{id}`)
    upstream: NotRequired[UpstreamOverride]  # 004's X-OpenAI-Base-URL / X-OpenAI-Key


class VideoPayload(TypedDict):
    model: str
    prompt: str
    width: int
    height: int
    duration: float
    seed: int | None
    files_base: NotRequired[str]
