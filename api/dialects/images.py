"""Image and video routes of every dialect, over the `image_generation` and `video_generation` jobs.

- native (000): `POST /api/v1/generate`, `GET /api/v1/generate/models`;
- cloudgpt (001): `POST /api/image` and `POST /api/video`, answering the bytes themselves;
- apidocs (004): `POST /api/image/generate/`;
- OpenAI: `POST /v1/images/generations` and `/openai/v1/images/generations`.

Each validates its documented parameters (a 400 names the field), submits with the `image` or
`video` modality (its per-minute limit) and renders the finished job in its own shape
(api/image_results.py). `?batch=1` answers 202 with the job everywhere.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.response import Stream
from msgspec import Meta

from api.errors import APIDOCS, CLOUDGPT, NATIVE, OPENAI, handlers_for
from api.files import serve_file
from api.image_results import image_body
from api.openapi import docs
from api.responses import json_response
from api.schemas import apidocs, native
from api.schemas import openai as oa
from api.state import Services, services
from api.submit import submit
from api.upstream import upstream_override
from api.validation import convert, decode_object
from jobs.kinds import IMAGE_GENERATION, VIDEO_GENERATION, ImagePayload, VideoPayload
from jobs.records import JobRecord
from switchyard.errors import InvalidRequest

Prompt = Annotated[str, Meta(min_length=1, max_length=4000)]
Seed = Annotated[int, Meta(ge=0, le=2**32 - 1)]
Count = Annotated[int, Meta(ge=1, le=10)]
Side = Annotated[int, Meta(ge=64, le=2048)]
Label = Annotated[str, Meta(max_length=200)]
OutputFormat = Literal["png", "jpeg", "webp"]
Compression = Annotated[int, Meta(ge=1, le=100)]

NATIVE_SIZES = Literal["256x256", "512x512", "1024x1024", "1024x1792", "1792x1024"]
OPENAI_SIZES = Literal[
    "256x256", "512x512", "1024x1024", "1024x1792", "1792x1024", "1536x1024", "1024x1536", "auto"
]


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=False):
    """Every parameter api-reference 000 documents for image generation, with its range."""

    model: Annotated[str, Meta(min_length=1)]
    prompt: Prompt
    negative_prompt: Annotated[str, Meta(max_length=4000)] | None = None
    size: NATIVE_SIZES = "1024x1024"
    quality: Literal["standard", "hd"] | None = None
    style: Label | None = None
    n: Count = 1
    response_format: Literal["url", "b64_json"] = "url"
    guidance_scale: Annotated[float, Meta(ge=1, le=20)] | None = None
    num_inference_steps: Annotated[int, Meta(ge=1, le=150)] | None = None
    seed: Seed | None = None
    scheduler: Label | None = None
    safety_checker: bool | None = None
    output_format: OutputFormat = "png"
    output_compression: Compression | None = None


class CloudImageRequest(msgspec.Struct, forbid_unknown_fields=False):
    """api-reference 001, Image Generation."""

    prompt: Prompt
    model: Annotated[str, Meta(min_length=1)]
    width: Side = 1024
    height: Side = 1024
    seed: Seed | None = None
    negative_prompt: Annotated[str, Meta(max_length=4000)] | None = None
    output_format: OutputFormat = "png"
    output_compression: Compression | None = None


class CloudVideoRequest(msgspec.Struct, forbid_unknown_fields=False):
    """api-reference 001, Video Generation."""

    prompt: Prompt
    model: Annotated[str, Meta(min_length=1)]
    duration: Annotated[float, Meta(gt=0)] = 4
    width: Annotated[int, Meta(ge=64, le=1920)] = 1280
    height: Annotated[int, Meta(ge=64, le=1920)] = 720
    seed: Seed | None = None


class OpenAIImageRequest(msgspec.Struct, forbid_unknown_fields=False):
    """OpenAI's images.generate (and api-reference 004's image endpoint, a subset of it)."""

    prompt: Prompt
    model: Annotated[str, Meta(min_length=1)] | None = None
    n: Count = 1
    size: OPENAI_SIZES = "1024x1024"
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = None
    response_format: Literal["url", "b64_json"] = "url"
    user: Label | None = None
    output_format: OutputFormat = "png"
    output_compression: Compression | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    seed: Seed | None = None


def _size(size: str) -> tuple[int, int]:
    if size == "auto":
        return 1024, 1024
    width, _, height = size.partition("x")
    return int(width), int(height)


def _prompt(prompt: str) -> str:
    if not prompt.strip():
        raise InvalidRequest.field("prompt", "must not be blank", prompt)
    return prompt


OPENAI_IMAGE_MODEL = "gpt-image-1"  # 004's example model, for a caller's own upstream named without one


async def _default_model(svc: Services, kind: str) -> str:
    """The model a route uses when the request names none: the first one of that type."""
    for model in await svc.catalog.all_models():
        if svc.catalog.model_type(model) == kind:
            return model
    raise InvalidRequest.field("model", f"is required: no {kind} model is configured")


def image_payload(
    *,
    model: str,
    prompt: str,
    width: int,
    height: int,
    n: int = 1,
    output_format: str = "png",
    output_compression: int | None = None,
    seed: int | None = None,
    response_format: str = "url",
    options: dict[str, Any] | None = None,
) -> ImagePayload:
    return {
        "model": model,
        "prompt": _prompt(prompt),
        "width": width,
        "height": height,
        "n": n,
        "format": output_format,
        "quality": output_compression,
        "seed": seed,
        "response_format": response_format,
        "options": {k: v for k, v in (options or {}).items() if v is not None},
    }


async def _submit(
    request: Request, dialect: str, kind: str, payload: dict[str, Any], modality: str
) -> tuple[JobRecord | Response[bytes], dict[str, str]]:
    svc = services(request)
    principal = await svc.keys.authenticate(request, anonymous=dialect == CLOUDGPT)  # 001's tier
    if "base_url" not in (payload.get("upstream") or {}):  # a caller's own upstream knows its models
        await svc.catalog.require(payload["model"], modality)
    svc.accounts.check_request(principal, model=payload["model"], max_tokens=None)
    # The worker writes the files' URLs into the result: under the public URL, else the
    # listening address (never the request's Host header: the caller writes it).
    payload["files_base"] = svc.settings.public_base_url
    return await submit(
        request,
        svc,
        principal=principal,
        kind=kind,
        payload=payload,
        dialect=dialect,
        model=payload["model"],
        modality=modality,
    )


async def _image_json(request: Request, dialect: str, payload: ImagePayload) -> Response[bytes]:
    outcome, headers = await _submit(request, dialect, IMAGE_GENERATION, dict(payload), "image")
    if isinstance(outcome, Response):
        return outcome
    return json_response(image_body(outcome), headers={"x-job-id": outcome.id, **headers})


async def _body(request: Request, *, anonymous: bool = False) -> dict[str, Any]:
    # Authenticate before reading the body: a caller without a key learns nothing of validation.
    await services(request).keys.authenticate(request, anonymous=anonymous)
    return decode_object(await request.body())


# --- native (000) ------------------------------------------------------------------------------------
@post("/api/v1/generate", status_code=200, opt=docs(body=GenerateRequest, answers=native.Generate, work=True))
async def generate(request: Request) -> Response[bytes]:
    """Image generation (000): `{"success": true, "data": {"created", "data": [...]}, "usage"...}`."""
    req = convert(await _body(request), GenerateRequest)
    width, height = _size(req.size)
    options = {
        "negative_prompt": req.negative_prompt, "quality": req.quality, "style": req.style,
        "guidance_scale": req.guidance_scale, "num_inference_steps": req.num_inference_steps,
        "scheduler": req.scheduler, "safety_checker": req.safety_checker,
    }  # fmt: skip
    payload = image_payload(
        model=req.model, prompt=req.prompt, width=width, height=height, n=req.n,
        output_format=req.output_format, output_compression=req.output_compression, seed=req.seed,
        response_format=req.response_format, options=options,
    )  # fmt: skip
    return await _image_json(request, NATIVE, payload)


@get("/api/v1/generate/models", opt=docs(answers=native.ImageModelsAnswer))
async def image_models(request: Request) -> Response[bytes]:
    """The image models this gateway routes, with what the providers file says of them."""
    svc = services(request)
    principal = await svc.keys.authenticate(request)
    allowed = principal.record.models if principal.record is not None else None
    models = []
    for model in await svc.catalog.all_models():
        if svc.catalog.model_type(model) != "image" or (allowed is not None and model not in allowed):
            continue
        meta = svc.catalog.model_meta(model)
        providers = svc.catalog.providers_for(model)
        models.append(
            {
                "id": model,
                "name": meta.name or model,
                "type": "image",
                "provider": providers[0].name,
                "empresa": meta.company,
                "description": meta.description,
                "deterministic": meta.deterministic,
            }
        )
    return json_response({"success": True, "data": {"models": models, "total": len(models)}})


# --- cloudgpt (001) ----------------------------------------------------------------------------------
@post("/api/image", status_code=200, opt=docs(body=CloudImageRequest, media_type="image/*", work=True))
async def cloud_image(request: Request) -> Response[bytes] | Stream:
    """Image generation (001): the image's bytes with its Content-Type."""
    req = convert(await _body(request, anonymous=True), CloudImageRequest)
    payload = image_payload(
        model=req.model, prompt=req.prompt, width=req.width, height=req.height,
        output_format=req.output_format, output_compression=req.output_compression, seed=req.seed,
        response_format="binary", options={"negative_prompt": req.negative_prompt},
    )  # fmt: skip
    outcome, headers = await _submit(request, CLOUDGPT, IMAGE_GENERATION, dict(payload), "image")
    if isinstance(outcome, Response):
        return outcome
    image = (outcome.result or {})["images"][0]
    return await _stored(request, image["file_id"], {"x-job-id": outcome.id, **headers})


async def _stored(request: Request, file_id: str, headers: dict[str, str]) -> Response[bytes] | Stream:
    """The stored file itself as the response (streamed from the blob store)."""
    svc = services(request)
    principal = await svc.keys.authenticate(request, anonymous=True)  # only 001's routes answer so
    file = await svc.files.get_for(file_id, principal.key_id, is_admin=principal.is_admin)
    response = await serve_file(request, svc.files, file)
    response.headers.update(headers)
    return response


# --- cloudgpt video (001) ----------------------------------------------------------------------------
@post("/api/video", status_code=200, opt=docs(body=CloudVideoRequest, media_type="video/mp4", work=True))
async def cloud_video(request: Request) -> Response[bytes] | Stream:
    """Video generation (001): the MP4's bytes. The duration is bounded by the model's maximum
    (`max_duration_s` in the providers file, else SWITCHYARD_VIDEO_MAX_DURATION_S)."""
    req = convert(await _body(request, anonymous=True), CloudVideoRequest)
    svc = services(request)
    _prompt(req.prompt)
    await svc.catalog.require(req.model, "video")
    longest = svc.catalog.model_meta(req.model).max_duration_s or svc.settings.video_max_duration_s
    if req.duration > longest:
        raise InvalidRequest.field(
            "duration", f"must be at most {longest:g} seconds for model '{req.model}'", req.duration
        )
    payload: VideoPayload = {
        "model": req.model, "prompt": req.prompt, "width": req.width, "height": req.height,
        "duration": req.duration, "seed": req.seed,
    }  # fmt: skip
    outcome, headers = await _submit(request, CLOUDGPT, VIDEO_GENERATION, dict(payload), "video")
    if isinstance(outcome, Response):
        return outcome
    video = (outcome.result or {})["video"]
    return await _stored(request, video["file_id"], {"x-job-id": outcome.id, **headers})


# --- apidocs (004) and OpenAI -------------------------------------------------------------------------
async def _openai_shaped(request: Request, dialect: str) -> Response[bytes]:
    req = convert(await _body(request), OpenAIImageRequest)
    svc = services(request)
    override = None
    if dialect == APIDOCS:  # 004: X-OpenAI-Base-URL / X-OpenAI-Key, for keys allowed to
        override = await upstream_override(request, svc, await svc.keys.authenticate(request))
    own_upstream = override is not None and "base_url" in override
    model = req.model or (OPENAI_IMAGE_MODEL if own_upstream else await _default_model(svc, "image"))
    width, height = _size(req.size)
    options = {
        "quality": req.quality, "style": req.style, "user": req.user, "background": req.background,
        "moderation": req.moderation,
    }  # fmt: skip
    payload = image_payload(
        model=model, prompt=req.prompt, width=width, height=height, n=req.n,
        output_format=req.output_format, output_compression=req.output_compression, seed=req.seed,
        response_format=req.response_format, options=options,
    )  # fmt: skip
    if override:
        payload["upstream"] = override
    return await _image_json(request, dialect, payload)


@post(
    "/api/image/generate/",
    status_code=200,
    opt=docs(body=OpenAIImageRequest, answers=apidocs.GeneratedImage, work=True),
)
async def apidocs_image(request: Request) -> Response[bytes]:
    """Image generation (004): `{"url", "revised_prompt"}` (and `data` with every image when n > 1)."""
    return await _openai_shaped(request, APIDOCS)


@post(
    ["/v1/images/generations", "/openai/v1/images/generations"],
    status_code=200,
    opt=docs(body=OpenAIImageRequest, answers=oa.ImagesResponse, work=True),
)
async def openai_images(request: Request) -> Response[bytes]:
    """OpenAI's images.generate: `{"created", "data": [{"url" | "b64_json", "revised_prompt"}]}`."""
    return await _openai_shaped(request, OPENAI)


router_native = Router(
    path="/", route_handlers=[generate, image_models], exception_handlers=handlers_for(NATIVE)
)
router_cloudgpt = Router(
    path="/", route_handlers=[cloud_image, cloud_video], exception_handlers=handlers_for(CLOUDGPT)
)
router_apidocs = Router(path="/", route_handlers=[apidocs_image], exception_handlers=handlers_for(APIDOCS))
router_openai = Router(path="/", route_handlers=[openai_images], exception_handlers=handlers_for(OPENAI))
routers = [router_native, router_cloudgpt, router_apidocs, router_openai]
