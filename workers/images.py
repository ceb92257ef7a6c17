"""Image and video generation jobs: provider calls with retries and fallbacks, the Pillow
pipeline (workers/imaging.py), a cache for deterministic models, and where results are kept.

A job makes its n images with n provider calls at once; any failure fails the attempt, which is
retried (deferred, with backoff) and then falls back to the next provider serving the model,
as chat completions do. A provider that answers something other than an image of at most
`SWITCHYARD_IMAGE_MAX_PIXELS` pixels has failed, with that as its reason.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import orjson
from arq import Retry

from jobs.kinds import ImagePayload, VideoPayload
from storage.files import NewFile
from switchyard.errors import InvalidRequest, ModelNotFound, ProviderFailed
from switchyard.providers import ProviderConfig
from workers import imaging
from workers.context import WorkerCtx
from workers.fallback import all_failed, job_providers, note_failure
from workers.providers import ProviderError, http_video, openai_images, pollinations_image

T = TypeVar("T")

CACHE_KEY = "sy:imgcache:"  # string per (model, prompt, seed, size, ...): a deterministic model's images
IMAGE_KINDS = ("pollinations-image", "openai")
VIDEO_KINDS = ("http-video",)


def backoff_s(base: float, attempt: int) -> float:
    return min(base * (2 ** (attempt - 1)), 10.0)


def _provider_for_attempt(
    ctx: WorkerCtx, model: str, providers: list[ProviderConfig]
) -> tuple[ProviderConfig, bool]:
    """The provider this try goes to (each gets `provider_attempts` tries, in file order), and
    whether it is the last try left."""
    per_provider = ctx["settings"].provider_attempts
    attempt = ctx["job_try"]
    index = (attempt - 1) // per_provider
    if index >= len(providers):
        raise all_failed(ctx, model, len(providers), attempt)
    last = index == len(providers) - 1 and attempt % per_provider == 0
    return providers[index], last


async def _failed(ctx: WorkerCtx, provider: ProviderConfig, exc: ProviderError, last: bool) -> NoReturn:
    settings = ctx["settings"]
    attempt = ctx["job_try"]
    if not exc.retryable:
        refused = ProviderFailed(f"provider {provider.name!r} refused the request: {exc}")
        refused.error_type = refused.code = "provider_rejected"  # the request's fault: no refund
        raise refused from None
    await note_failure(ctx, provider, exc)
    if last:
        raise ProviderFailed(
            f"provider {provider.name!r} failed on attempt {attempt} (no fallback left): {exc}"
        ) from None
    if attempt % settings.provider_attempts == 0:  # this provider is spent: the next one goes at once
        raise Retry(defer=None) from None
    delay = exc.retry_after if exc.retry_after is not None else backoff_s(settings.retry_backoff_s, attempt)
    raise Retry(defer=min(delay, 30.0)) from None


async def _all_or_nothing(calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run the calls at once; the first ProviderError cancels the others and is raised."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks += [group.create_task(call) for call in calls]
    except* ProviderError as failures:
        raise failures.exceptions[0] from None
    return [t.result() for t in tasks]


def _providers(ctx: WorkerCtx, model: str, kinds: tuple[str, ...], what: str) -> list[ProviderConfig]:
    providers = ctx["catalog"].providers_for(model)
    if not providers:
        raise ModelNotFound(model)
    usable = [p for p in providers if p.kind in kinds]
    if not usable:
        names = ", ".join(f"{p.name} ({p.kind})" for p in providers)
        raise InvalidRequest.field("model", f"no provider makes {what} for {model!r}: {names}", model)
    return usable


# --- where results are kept --------------------------------------------------------------------------
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4"}


def file_url(base: str | None, file_id: str) -> str:
    """Where the API serves a stored file (api/files.py `file_path`): absolute when the route
    told the job its base URL."""
    return f"{(base or '').rstrip('/')}/api/v1/files/{file_id}"


def _new_file(ctx: WorkerCtx, data: bytes, mime: str, *, job_id: str, kind: str, name: str) -> NewFile:
    """A file of the job's owner."""
    owner = (ctx.get("job") or {}).get("owner")
    filename = f"{name}.{EXTENSIONS.get(mime, 'bin')}"
    return NewFile(data, mime, filename, owner_key_id=owner, kind=kind, job_id=job_id)


async def keep_images(
    ctx: WorkerCtx,
    images: list[tuple[bytes, str, bytes, str]],
    *,
    job_id: str,
    base: str | None,
    first_index: int = 0,
) -> list[dict[str, Any]]:
    """Store each image (data, mime) and its thumbnail (data, mime) in one transaction: how the
    result refers to them."""
    new: list[NewFile] = []
    for i, (data, mime, thumb, thumb_mime) in enumerate(images):
        name = f"{job_id}-{first_index + i + 1}"
        new.append(_new_file(ctx, data, mime, job_id=job_id, kind="image", name=name))
        new.append(
            _new_file(ctx, thumb, thumb_mime, job_id=job_id, kind="thumbnail", name=name + "-thumbnail")
        )
    stored = await ctx["files"].store_many(new)
    return [
        {
            "file_id": image.id,
            "url": file_url(base, image.id),
            "thumbnail_file_id": thumb.id,
            "thumbnail_url": file_url(base, thumb.id),
        }
        for image, thumb in zip(stored[::2], stored[1::2], strict=True)
    ]


async def keep_video(ctx: WorkerCtx, data: bytes, *, job_id: str, base: str | None) -> dict[str, Any]:
    (stored,) = await ctx["files"].store_many(
        [_new_file(ctx, data, "video/mp4", job_id=job_id, kind="video", name=job_id)]
    )
    return {"file_id": stored.id, "url": file_url(base, stored.id)}


# --- images -------------------------------------------------------------------------------------------
def cache_key(payload: ImagePayload) -> str:
    fields = {k: v for k, v in payload.items() if k != "response_format"}
    return CACHE_KEY + hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def _from_cache(ctx: WorkerCtx, key: str, job_id: str, payload: ImagePayload) -> dict[str, Any] | None:
    """A deterministic model's earlier images for the same request, stored again as this job's
    files; None when there are none (or their files have expired)."""
    hit = await ctx["redis"].get(key)
    if hit is None:
        return None
    outcome: dict[str, Any] = orjson.loads(hit)
    files = ctx["files"]
    found = []
    for entry in outcome["result"]["images"]:
        image = await files.get(entry["file_id"])
        thumb = await files.get(entry["thumbnail_file_id"])
        if image is None or thumb is None:
            return None
        found.append((entry, image, await files.read(image), thumb, await files.read(thumb)))
    kept = await keep_images(
        ctx,
        [(data, image.mime_type, thumb_data, thumb.mime_type) for _, image, data, thumb, thumb_data in found],
        job_id=job_id,
        base=payload.get("files_base"),
    )
    images = []
    for (entry, _, data, _, _), refs in zip(found, kept, strict=True):
        entry = {**entry, **refs}
        if payload["response_format"] == "b64_json":
            entry["b64"] = base64.b64encode(data).decode()
        images.append(entry)
    outcome["result"].update(
        images=images, created=int(time.time()), response_format=payload["response_format"]
    )
    outcome["cost"] = 0.0  # nothing was asked of the provider
    return outcome


async def _make_one(
    ctx: WorkerCtx, provider: ProviderConfig, payload: ImagePayload, index: int, timeout: float
) -> tuple[imaging.ProcessedImage, str | None, int | None]:
    settings = ctx["settings"]
    seed = payload["seed"] + index if payload["seed"] is not None else None
    common: dict[str, Any] = dict(
        model=payload["model"],
        prompt=payload["prompt"],
        width=payload["width"],
        height=payload["height"],
        seed=seed,
        options=payload["options"],
        timeout=timeout,
        max_bytes=settings.image_max_bytes,
    )
    revised: str | None = None
    if provider.kind == "openai":
        raw, revised = await openai_images.generate(
            ctx["http"], provider, allow_private_urls=settings.allow_private_urls, **common
        )
    else:
        raw = await pollinations_image.generate(ctx["http"], provider, **common)
    spec = imaging.ImageSpec(payload["width"], payload["height"], payload["format"], payload["quality"])
    try:
        processed = await imaging.process_async(raw, spec, max_pixels=settings.image_max_pixels)
    except (imaging.NotAnImage, imaging.ImageTooLarge) as exc:
        raise ProviderError(str(exc), retryable=True) from None
    return processed, revised, seed


async def image_generation(ctx: WorkerCtx, job_id: str, payload: ImagePayload) -> dict[str, Any]:
    settings = ctx["settings"]
    catalog = ctx["catalog"]
    model = payload["model"]
    await catalog.refresh()
    override = payload.get("upstream")
    if override:  # the caller's own upstream (004): its images, never the shared cache's
        providers = [p for p in await job_providers(ctx, model, override) if p.kind in IMAGE_KINDS]
        if not providers:
            raise ModelNotFound(model)
    else:
        providers = _providers(ctx, model, IMAGE_KINDS, "images")
    key = None
    if (
        not override
        and catalog.model_meta(model).deterministic
        and payload["seed"] is not None
        and settings.image_cache_ttl_s
    ):
        key = cache_key(payload)
        cached = await _from_cache(ctx, key, job_id, payload)
        if cached is not None:
            return cached
    provider, last = _provider_for_attempt(ctx, model, providers)
    timeout = provider.timeout_s or settings.provider_timeout_s
    try:
        made = await _all_or_nothing(
            [_make_one(ctx, provider, payload, i, timeout) for i in range(payload["n"])]
        )
    except ProviderError as exc:
        await _failed(ctx, provider, exc, last)
    kept = await keep_images(
        ctx,
        [(image.data, image.mime, image.thumbnail, image.thumbnail_mime) for image, _, _ in made],
        job_id=job_id,
        base=payload.get("files_base"),
    )
    images = []
    for index, ((image, revised, seed), refs) in enumerate(zip(made, kept, strict=True)):
        entry: dict[str, Any] = {
            "index": index,
            "mime": image.mime,
            "width": image.width,
            "height": image.height,
            "bytes": len(image.data),
            "revised_prompt": revised or payload["prompt"],
            "seed": seed,
            **refs,
        }
        if payload["response_format"] == "b64_json":  # the caller wants the bytes in the body
            entry["b64"] = base64.b64encode(image.data).decode()
        images.append(entry)
    price = provider.prices.get(model)
    outcome: dict[str, Any] = {
        "result": {
            "created": int(time.time()),
            "model": model,
            "size": f"{payload['width']}x{payload['height']}",
            "format": payload["format"],
            "quality": payload["options"].get("quality"),
            "response_format": payload["response_format"],
            "images": images,
        },
        "provider": provider.name,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0},
        "cost": price.image * len(images) if price else 0.0,
    }
    if key is not None:
        # The files, not their bytes: a hit copies them (one blob, a new row) for its own owner.
        images_only = [{k: v for k, v in e.items() if k != "b64"} for e in images]
        entry_blob = orjson.dumps({**outcome, "result": {**outcome["result"], "images": images_only}})
        await ctx["redis"].set(key, entry_blob, ex=settings.image_cache_ttl_s)
    return outcome


# --- video -----------------------------------------------------------------------------------------
async def video_generation(ctx: WorkerCtx, job_id: str, payload: VideoPayload) -> dict[str, Any]:
    settings = ctx["settings"]
    model = payload["model"]
    await ctx["catalog"].refresh()
    providers = _providers(ctx, model, VIDEO_KINDS, "videos")
    provider, last = _provider_for_attempt(ctx, model, providers)
    try:
        data = await http_video.generate(
            ctx["http"],
            provider,
            model=model,
            prompt=payload["prompt"],
            width=payload["width"],
            height=payload["height"],
            duration=payload["duration"],
            seed=payload["seed"],
            timeout=provider.timeout_s or settings.video_timeout_s,
            max_bytes=settings.video_max_bytes,
        )
    except ProviderError as exc:
        await _failed(ctx, provider, exc, last)
    kept = await keep_video(ctx, data, job_id=job_id, base=payload.get("files_base"))
    video = {"mime": "video/mp4", "bytes": len(data), **kept}
    price = provider.prices.get(model)
    return {
        "result": {
            "created": int(time.time()),
            "model": model,
            "duration": payload["duration"],
            "width": payload["width"],
            "height": payload["height"],
            "video": video,
        },
        "provider": provider.name,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0},
        "cost": price.video_second * payload["duration"] if price else 0.0,
    }
