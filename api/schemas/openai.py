"""OpenAI's objects as this gateway answers them (`/v1/*`, `/openai/v1/*`, and the dialects
that answer an OpenAI object, such as 001's chat): chat.completion, the model list, the
embedding list, the image response, the file and batch objects."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType


class ChatMessage(msgspec.Struct):
    role: str
    content: str | None
    refusal: str | None | UnsetType = UNSET
    tool_calls: list[dict[str, Any]] | UnsetType = UNSET  # the provider's, as it sent them
    reasoning_content: str | None | UnsetType = UNSET


class ChatChoice(msgspec.Struct):
    index: int
    message: ChatMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None | UnsetType = UNSET


class CompletionUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: dict[str, Any] | None | UnsetType = UNSET
    prompt_tokens_details: dict[str, Any] | None | UnsetType = UNSET


class ChatCompletion(msgspec.Struct):
    """OpenAI's chat.completion: the provider's answer, with this gateway's `id`, `created`
    and `model` where the provider left them out."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage | UnsetType = UNSET
    system_fingerprint: str | None | UnsetType = UNSET
    service_tier: str | None | UnsetType = UNSET


class ChunkDelta(msgspec.Struct):
    role: str | UnsetType = UNSET
    content: str | None | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET
    tool_calls: list[dict[str, Any]] | UnsetType = UNSET
    reasoning_content: str | None | UnsetType = UNSET


class ChunkChoice(msgspec.Struct):
    index: int
    delta: ChunkDelta
    finish_reason: str | None
    logprobs: dict[str, Any] | None | UnsetType = UNSET


class ChatCompletionChunk(msgspec.Struct):
    """One server-sent event of a streamed chat (`"stream": true`); the last before `[DONE]`
    carries the usage, with no choices, when `stream_options.include_usage` asked for it."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None | UnsetType = UNSET
    system_fingerprint: str | None | UnsetType = UNSET


class Model(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[Model]


class Embedding(msgspec.Struct):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # a string: base64, with `encoding_format: base64`


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage | UnsetType = UNSET


class Image(msgspec.Struct):
    """One image: its URL (this gateway's file) or, with `response_format: b64_json`, its bytes."""

    url: str | None | UnsetType = UNSET
    b64_json: str | UnsetType = UNSET
    revised_prompt: str | None | UnsetType = UNSET


class ImagesResponse(msgspec.Struct):
    created: int | None
    data: list[Image]


class FileObject(msgspec.Struct):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int | None
    filename: str
    purpose: str
    status: str
    expires_at: int | None
    status_details: str | None


class FileList(msgspec.Struct):
    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(msgspec.Struct):
    id: str
    object: Literal["file"]
    deleted: bool


class BatchError(msgspec.Struct):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(msgspec.Struct):
    object: Literal["list"]
    data: list[BatchError]


class BatchRequestCounts(msgspec.Struct):
    total: int
    completed: int
    failed: int


class Batch(msgspec.Struct):
    """OpenAI's Batch object; timestamps are Unix seconds, null until the batch gets there."""

    id: str
    object: Literal["batch"]
    endpoint: str
    model: str | None
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int | None
    expires_at: int | None
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None


class BatchList(msgspec.Struct):
    object: Literal["list"]
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


class JobError(msgspec.Struct):
    type: str | None
    message: str | None


class Job(msgspec.Struct):
    """202 in this dialect: the job flat, as OpenAI spells its long-running objects (Unix
    seconds), to poll at `url` (the `Location` header)."""

    id: str
    object: Literal["job"]
    kind: str
    status: str
    priority: str
    model: str | None
    created_at: int | None
    started_at: int | None
    finished_at: int | None
    error: JobError | None
    result: Any  # the synchronous answer once the job succeeded
    metadata: dict[str, str]
    url: str
