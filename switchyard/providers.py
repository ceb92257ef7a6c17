"""The providers file: which upstream APIs serve which models, loaded and checked at startup."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from switchyard.errors import ConfigError

KNOWN_KINDS: tuple[str, ...] = ("openai",)
KNOWN_KINDS += ("pollinations-image", "http-video")
# Content services, not model providers: an LRCLIB-compatible lyrics API and a TMDB-compatible
# movie database. They serve no models (none are discovered for them).
# lrclib: lyrics; tmdb: movies; itunes: a song's year, artwork and page (iTunes Search API)
CONTENT_KINDS: tuple[str, ...] = ("lrclib", "tmdb", "itunes")
KNOWN_KINDS += CONTENT_KINDS

MODEL_TYPES: tuple[str, ...] = ("chat", "completion", "embedding", "image", "video")
# What a model of a provider is when the file says nothing about it.
DEFAULT_TYPE_BY_KIND: dict[str, str] = {"openai": "chat"}
DEFAULT_TYPE_BY_KIND.update({"pollinations-image": "image", "http-video": "video"})

# The keyless default when no providers file is given: Pollinations' OpenAI-compatible text API.
POLLINATIONS_TEXT_MODELS = [
    "openai", "openai-fast", "openai-large", "claude", "claude-fast", "gemini", "gemini-large",
    "deepseek", "grok", "mistral", "qwen-coder", "perplexity-fast", "perplexity-reasoning",
    "kimi-k2-thinking", "nova-micro",
]  # fmt: skip
# The keyless default image API: GET https://image.pollinations.ai/prompt/{prompt}.
POLLINATIONS_IMAGE_MODELS = ["flux", "turbo", "kontext", "gptimage", "seedream", "nanobanana"]


class ModelPrice(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: float = Field(default=0.0, ge=0)
    completion: float = Field(default=0.0, ge=0)
    image: float = Field(default=0.0, ge=0)  # per image generated
    video_second: float = Field(default=0.0, ge=0)  # per second of video generated

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (self.prompt * prompt_tokens + self.completion * completion_tokens) / 1_000_000


class ModelMeta(BaseModel):
    """What the providers file may say about one model; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["chat", "completion", "embedding", "image", "video"] | None = None
    name: str | None = None
    company: str | None = None
    description: str | None = None
    context_length: int | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    capabilities: tuple[str, ...] = ()
    supports_thinking: bool = False
    max_duration_s: float | None = Field(default=None, gt=0)  # video models
    deterministic: bool = False  # same prompt and seed give the same output: cacheable


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: str
    base_url: str
    api_key: str | None = None
    models: tuple[str, ...] | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)  # model id -> price; unknown: 0
    meta: dict[str, ModelMeta] = Field(default_factory=dict)  # model id -> what the file says of it
    # Fields of 000's image request an OpenAI-compatible images API takes beside OpenAI's own
    # (a diffusers server's `num_inference_steps`, `scheduler`...); OpenAI itself takes none.
    image_params: tuple[
        Literal["num_inference_steps", "scheduler", "safety_checker", "guidance_scale"], ...
    ] = ()

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KNOWN_KINDS:
            raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(KNOWN_KINDS)}")
        return kind

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _content_services_list_no_models(self) -> ProviderConfig:
        if self.kind in CONTENT_KINDS and self.models is None:
            object.__setattr__(self, "models", ())
        return self

    def model_type(self, model: str) -> str:
        meta = self.meta.get(model)
        if meta is not None and meta.type is not None:
            return meta.type
        return DEFAULT_TYPE_BY_KIND.get(self.kind, "chat")

    def resolved_api_key(self) -> str | None:
        """`env:NAME` reads the key from the environment at use, so secrets stay out of the file."""
        if self.api_key and self.api_key.startswith("env:"):
            return os.environ.get(self.api_key[4:])
        return self.api_key


class ProvidersConfig(BaseModel):
    providers: tuple[ProviderConfig, ...]

    def serving(self, model: str) -> list[ProviderConfig]:
        """Providers that list `model`, in file order: the first serves, the rest are fallbacks."""
        return [p for p in self.providers if p.models is not None and model in p.models]

    def static_models(self) -> set[str]:
        return {m for p in self.providers for m in (p.models or ())}


def default_providers() -> ProvidersConfig:
    return ProvidersConfig(
        providers=(
            ProviderConfig(
                name="pollinations",
                kind="openai",
                base_url="https://text.pollinations.ai/openai",
                models=tuple(POLLINATIONS_TEXT_MODELS),
            ),
            ProviderConfig(
                name="pollinations-image",
                kind="pollinations-image",
                base_url="https://image.pollinations.ai",
                models=tuple(POLLINATIONS_IMAGE_MODELS),
            ),
            ProviderConfig(name="lrclib", kind="lrclib", base_url="https://lrclib.net"),
            ProviderConfig(name="itunes", kind="itunes", base_url="https://itunes.apple.com"),
        )
    )


def parse_providers(text: str, source: str = "<providers>") -> ProvidersConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    entries = raw.get("providers")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: expected at least one [[providers]] table")
    providers: list[ProviderConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        label = f"{source}: providers[{index}]" + (
            f" ({entry.get('name')!r})" if isinstance(entry, dict) and entry.get("name") else ""
        )
        try:
            provider = ProviderConfig.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {_reason(err)}" for err in exc.errors()
            )
            raise ConfigError(f"{label}: {problems}") from None
        if provider.name in seen:
            raise ConfigError(f"{label}: duplicate provider name {provider.name!r}")
        seen.add(provider.name)
        providers.append(provider)
    return ProvidersConfig(providers=tuple(providers))


def _reason(err: Any) -> str:
    if err["type"] == "missing":
        return "is required"
    if err["type"] == "extra_forbidden":
        return "is not a known field"
    return str(err["msg"]).removeprefix("Value error, ")


def load_providers(path: Path | None) -> ProvidersConfig:
    if path is None:
        return default_providers()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read providers file {path}: {exc.strerror}") from exc
    return parse_providers(text, str(path))
