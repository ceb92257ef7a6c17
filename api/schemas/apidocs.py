"""The apidocs dialect's answers (api-reference 004): the text, the vector or the image, and
little else."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from api.schemas.openai import CompletionUsage, EmbeddingUsage, Image


class Generated(msgspec.Struct):
    content: str
    usage: CompletionUsage


class OneEmbedding(msgspec.Struct):
    embedding: list[float] | str | None  # a string: base64, with `encoding_format: base64`
    usage: EmbeddingUsage


class GeneratedImage(msgspec.Struct):
    """The first image; `data` lists every image when more than one was asked for."""

    url: str | None | UnsetType = UNSET
    b64_json: str | UnsetType = UNSET
    revised_prompt: str | None | UnsetType = UNSET
    data: list[Image] | UnsetType = UNSET
