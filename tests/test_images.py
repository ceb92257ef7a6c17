"""Image and video routes of every dialect against local stand-in providers over real HTTP: the
shapes, the bytes (opened with Pillow: size and format), bad input, and provider faults."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from switchyard.standin import StandIn
from switchyard.standin_images import ImageStandIn
from tests.conftest import BOTH_BLOB_STORES, Gateway, get_job, wait_for_status
from tests.test_chat import served_over_http


@pytest.fixture
def providers_file(tmp_path: Path, standin: StandIn, pics: ImageStandIn) -> Path:
    """Chat models, Pollinations-shaped image models, an OpenAI images model and a video model."""
    text = f"""
[[providers]]
name = "standin"
kind = "openai"
base_url = "{standin.base_url}"
models = ["mock/echo"]

[[providers]]
name = "pics"
kind = "pollinations-image"
base_url = "{pics.base_url}"
models = ["flux", "fixed"]
[providers.meta.fixed]
deterministic = true
name = "Fixed"
description = "same prompt and seed, same picture"
[providers.prices.flux]
image = 0.01

[[providers]]
name = "sluggish"
kind = "pollinations-image"
base_url = "{pics.base_url}"
models = ["slow"]
timeout_s = 0.5

[[providers]]
name = "oai-images"
kind = "openai"
base_url = "{pics.openai_base_url}"
models = ["dall-e-3"]
[providers.meta."dall-e-3"]
type = "image"

[[providers]]
name = "clips"
kind = "http-video"
base_url = "{pics.video_base_url}"
models = ["veo"]
[providers.meta.veo]
max_duration_s = 8
[providers.prices.veo]
video_second = 0.5
"""
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return path


def image_of(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- cloudgpt (001): the bytes themselves -----------------------------------------------------------
@BOTH_BLOB_STORES
async def test_cloud_image_answers_png_bytes_of_the_requested_size(
    gw: Gateway, key: str, pics: ImageStandIn
) -> None:
    gw.start_worker()
    body = {"prompt": "a red fox", "model": "flux", "width": 320, "height": 200, "seed": 7}
    response = await gw.client.post("/api/image", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    im = image_of(response.content)
    assert im.format == "PNG" and im.size == (320, 200)
    (sent,) = pics.requests
    assert sent["prompt"] == "a red fox"
    assert (sent["width"], sent["height"], sent["seed"], sent["model"]) == ("320", "200", "7", "flux")
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "succeeded" and job["kind"] == "image_generation"
    assert job["provider"] == "pics"
    assert job["result"]["data"][0]["content_type"] == "image/png"
    assert (job["result"]["data"][0]["width"], job["result"]["data"][0]["height"]) == (320, 200)


async def test_cloud_image_fits_another_aspect_and_converts_and_strips(gw: Gateway, key: str) -> None:
    gw.start_worker()
    # The provider answers a JPEG twice as wide as asked, with EXIF: the caller gets exactly the
    # size and format it asked for, and none of the provider's metadata.
    body = {"prompt": "[wide] [jpeg] [exif] a boat", "model": "flux", "width": 300, "height": 300,
            "output_format": "webp", "output_compression": 70}  # fmt: skip
    response = await gw.client.post("/api/image", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    im = image_of(response.content)
    assert im.format == "WEBP" and im.size == (300, 300)
    assert b"secret" not in response.content and not im.getexif()

    as_jpeg = await gw.client.post(
        "/api/image", json={**body, "output_format": "jpeg"}, headers={"X-API-Key": key}
    )
    assert as_jpeg.headers["content-type"] == "image/jpeg"
    assert image_of(as_jpeg.content).format == "JPEG"


async def test_cloud_image_batch_is_a_job_to_poll(gw: Gateway, key: str) -> None:
    gw.start_worker()
    body = {"prompt": "a lighthouse", "model": "flux", "width": 128, "height": 128}
    submitted = await gw.client.post("/api/image?batch=1", json=body, headers=bearer(key))
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["data"]["job_id"]
    assert submitted.headers["location"] == f"/api/v1/jobs/{job_id}"
    job = await wait_for_status(gw.client, key, job_id, "succeeded")
    assert job["priority"] == "batch"
    (item,) = job["result"]["data"]
    assert item["content_type"] == "image/png" and item["width"] == 128
    stored = await gw.client.get(item["url"], headers=bearer(key))
    assert stored.status_code == 200 and image_of(stored.content).size == (128, 128)


# --- native (000) --------------------------------------------------------------------------------------
async def test_native_generate_b64_json_runs_n_calls_at_once(
    gw: Gateway, key: str, pics: ImageStandIn
) -> None:
    gw.start_worker()
    pics.delay_s = 0.2  # long enough for the three calls to overlap at the provider
    body = {"model": "flux", "prompt": "three cats", "size": "256x256", "n": 3, "seed": 10,
            "response_format": "b64_json", "quality": "hd", "guidance_scale": 7.5,
            "num_inference_steps": 30, "negative_prompt": "dogs", "safety_checker": True}  # fmt: skip
    response = await gw.client.post("/api/v1/generate", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["success"] is True
    assert set(out) >= {"success", "data", "usage", "request_id", "processing_time_ms"}
    assert out["request_id"] == "img_" + response.headers["x-job-id"]
    assert out["usage"] == {"images_generated": 3, "estimated_cost": pytest.approx(0.03)}
    items = out["data"]["data"]
    assert [i["index"] for i in items] == [1, 2, 3]
    assert all(i["size"] == "256x256" and i["quality"] == "hd" for i in items)
    assert all(i["revised_prompt"] == "three cats" for i in items)
    pictures = [image_of(base64.b64decode(i["b64_json"])) for i in items]
    assert all(p.size == (256, 256) and p.format == "PNG" for p in pictures)
    assert pics.max_inflight == 3
    assert sorted(r["seed"] for r in pics.requests) == ["10", "11", "12"]
    assert all(r["negative_prompt"] == "dogs" for r in pics.requests)


@pytest.mark.parametrize("public_url", [None, "https://gw.example.com/sy/"])
async def test_file_urls_never_come_from_the_host_header(
    gw: Gateway, key: str, public_url: str | None
) -> None:
    """A forged `Host` must not put the caller's host into links handed to others (a cache
    shares them, a log shows them): the public URL, else the listening address."""
    gw.settings.public_url = public_url  # the app holds this same Settings object
    gw.start_worker()
    body = {"model": "flux", "prompt": "a tower", "size": "512x512", "output_format": "jpeg"}
    forged = {"X-API-Key": key, "Host": "evil.example:666"}
    response = await gw.client.post("/api/v1/generate", json=body, headers=forged)
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]["data"]
    base = "https://gw.example.com/sy" if public_url else "http://127.0.0.1:8000"
    for url in (item["url"], item["thumbnail_url"]):
        assert url.startswith(base + "/api/v1/files/file_"), url
        assert "evil" not in url


@BOTH_BLOB_STORES
async def test_native_generate_url_and_batch(gw: Gateway, key: str) -> None:
    gw.start_worker()
    body = {"model": "flux", "prompt": "a tower", "size": "512x512", "output_format": "jpeg"}
    response = await gw.client.post("/api/v1/generate", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]["data"]
    assert "b64_json" not in item
    assert item["url"].startswith("http://127.0.0.1:8000/api/v1/files/file_")  # the listening address
    stored = await gw.client.get(item["url"], headers={"X-API-Key": key})
    assert stored.status_code == 200, stored.text
    assert stored.headers["content-type"] == "image/jpeg"
    im = image_of(stored.content)
    assert im.format == "JPEG" and im.size == (512, 512)
    thumb = await gw.client.get(item["thumbnail_url"], headers={"X-API-Key": key})
    assert thumb.headers["content-type"] == "image/webp"
    assert image_of(thumb.content).size == (256, 256)
    # A file is its owner's: another key gets a 404, as for a file that does not exist.
    other = await gw.create_key("other")
    assert (await gw.client.get(item["url"], headers={"X-API-Key": other})).status_code == 404
    submitted = await gw.client.post("/api/v1/generate?batch=1", json=body, headers={"X-API-Key": key})
    assert submitted.status_code == 202
    job = await wait_for_status(gw.client, key, submitted.json()["data"]["job_id"], "succeeded")
    assert job["result"]["success"] is True
    assert job["result"]["request_id"] == "img_" + job["id"]
    assert job["result"]["data"]["data"][0]["size"] == "512x512"


async def test_image_models_lists_image_models_only(gw: Gateway, key: str) -> None:
    response = await gw.client.get("/api/v1/generate/models", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    ids = [m["id"] for m in data["models"]]
    assert ids == ["flux", "fixed", "slow", "dall-e-3"]
    assert data["total"] == 4
    fixed = next(m for m in data["models"] if m["id"] == "fixed")
    assert fixed["name"] == "Fixed" and fixed["deterministic"] is True and fixed["provider"] == "pics"
    assert all(m["type"] == "image" for m in data["models"])
    assert (await gw.client.get("/api/v1/generate/models")).status_code == 401


@BOTH_BLOB_STORES
async def test_deterministic_model_serves_same_seed_and_prompt_from_cache(
    gw: Gateway, key: str, pics: ImageStandIn
) -> None:
    gw.start_worker()

    async def make(model: str, seed: int) -> bytes:
        body = {"prompt": "a fixed star", "model": model, "width": 96, "height": 96, "seed": seed}
        response = await gw.client.post("/api/image", json=body, headers=bearer(key))
        assert response.status_code == 200, response.text
        return response.content

    first = await make("fixed", 42)
    again = await make("fixed", 42)
    assert again == first
    assert pics.calls["image"] == 1
    # Another key asking the same gets the same picture as files of its own.
    other = await gw.create_key("other")
    body = {"prompt": "a fixed star", "model": "fixed", "width": 96, "height": 96, "seed": 42}
    theirs = await gw.client.post("/api/image?batch=1", json=body, headers=bearer(other))
    job = await wait_for_status(gw.client, other, theirs.json()["data"]["job_id"], "succeeded")
    assert pics.calls["image"] == 1
    url = job["result"]["data"][0]["url"]
    assert (await gw.client.get(url, headers=bearer(other))).content == first
    assert (await gw.client.get(url, headers=bearer(key))).status_code == 404
    await make("fixed", 43)  # another seed: another picture
    assert pics.calls["image"] == 2
    await make("flux", 42)
    await make("flux", 42)  # not deterministic: asked again every time
    assert pics.calls["image"] == 4


# --- apidocs (004) and OpenAI ---------------------------------------------------------------------------
async def test_apidocs_image_generate(gw: Gateway, key: str, pics: ImageStandIn) -> None:
    gw.start_worker()
    body = {"model": "dall-e-3", "prompt": "a sunset", "size": "1024x1792", "quality": "hd",
            "style": "vivid", "user": "user123"}  # fmt: skip
    response = await gw.client.post("/api/image/generate/", json=body)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    response = await gw.client.post("/api/image/generate/", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    out = response.json()
    assert set(out) == {"url", "revised_prompt"}
    assert out["revised_prompt"] == "revised: a sunset"
    (sent,) = [r for r in pics.requests if r["route"] == "openai"]
    assert sent["size"] == "1024x1792" and sent["style"] == "vivid" and sent["quality"] == "hd"
    assert sent["n"] == 1
    # No model: the first image model configured.
    default = await gw.client.post(
        "/api/image/generate/", json={"prompt": "a moon", "n": 2}, headers=bearer(key)
    )
    assert default.status_code == 200, default.text
    assert len(default.json()["data"]) == 2
    assert pics.requests[-1]["route"] == "image" and pics.requests[-1]["model"] == "flux"


async def test_openai_provider_url_answers_are_fetched(gw: Gateway, key: str, pics: ImageStandIn) -> None:
    gw.start_worker()
    body = {
        "model": "dall-e-3",
        "prompt": "[url] a harbour",
        "size": "512x512",
        "response_format": "b64_json",
    }
    response = await gw.client.post("/v1/images/generations", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert image_of(base64.b64decode(item["b64_json"])).size == (512, 512)
    assert pics.calls["file"] == 1  # the provider's URL, fetched by the worker


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
async def test_openai_client_images_generate(gw: Gateway, key: str, prefix: str) -> None:
    gw.start_worker()
    async with served_over_http(gw.settings) as base_url, httpx.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=base_url + prefix, api_key=key, http_client=http, max_retries=0)
        result = await client.images.generate(
            model="flux", prompt="an owl", n=2, size="512x512", response_format="b64_json"
        )
        assert result.created > 0
        assert result.data is not None and len(result.data) == 2
        for item in result.data:
            assert item.b64_json is not None
            im = image_of(base64.b64decode(item.b64_json))
            assert im.size == (512, 512) and im.format == "PNG"
        by_url = await client.images.generate(model="dall-e-3", prompt="an owl", size="1024x1024")
        assert by_url.data is not None and by_url.data[0].url
        assert by_url.data[0].url.startswith(base_url + "/api/v1/files/")
        assert by_url.data[0].revised_prompt == "revised: an owl"
        fetched = await http.get(by_url.data[0].url, headers=bearer(key))
        assert image_of(fetched.content).size == (1024, 1024)
        with pytest.raises(openai.BadRequestError) as bad:
            await client.images.generate(model="flux", prompt="an owl", n=11)
        assert bad.value.param == "n"
        with pytest.raises(openai.NotFoundError):
            await client.images.generate(model="no-such-painter", prompt="an owl")


# --- bad input ---------------------------------------------------------------------------------------
NATIVE_OK = {"model": "flux", "prompt": "a cat"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"negative_prompt": "x" * 4001}, "negative_prompt"),
        ({"size": "300x300"}, "size"),
        ({"n": 0}, "n"),
        ({"n": 11}, "n"),
        ({"response_format": "png"}, "response_format"),
        ({"seed": -1}, "seed"),
        ({"quality": "ultra"}, "quality"),
        ({"guidance_scale": 25}, "guidance_scale"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 151}, "num_inference_steps"),
        ({"safety_checker": "yes"}, "safety_checker"),
        ({"output_format": "gif"}, "output_format"),
        ({"model": None}, "model"),
        ({"model": "mock/echo"}, "model"),
    ],
)
async def test_native_generate_bad_input(gw: Gateway, key: str, change: dict[str, Any], field: str) -> None:
    body = {k: v for k, v in {**NATIVE_OK, **change}.items() if v is not None}
    response = await gw.client.post("/api/v1/generate", json=body, headers={"X-API-Key": key})
    assert response.status_code == 400, response.text
    out = response.json()
    assert out["success"] is False
    assert out["details"][0]["field"] == field
    assert out["message"].startswith(field)


@pytest.mark.parametrize(
    ("path", "change", "field"),
    [
        ("/api/image", {"width": 10}, "width"),
        ("/api/image", {"height": 4096}, "height"),
        ("/api/image", {"seed": -5}, "seed"),
        ("/api/image", {"prompt": ""}, "prompt"),
        ("/api/image", {"model": "veo"}, "model"),
        ("/api/video", {"duration": 9}, "duration"),
        ("/api/video", {"duration": 0}, "duration"),
        ("/api/video", {"width": 4000}, "width"),
        ("/api/video", {"model": "flux"}, "model"),
        ("/v1/images/generations", {"size": "100x100"}, "size"),
        ("/v1/images/generations", {"n": 0}, "n"),
        ("/v1/images/generations", {"style": "baroque"}, "style"),
        ("/v1/images/generations", {"response_format": "binary"}, "response_format"),
        ("/api/image/generate/", {"prompt": "y" * 4001}, "prompt"),
        ("/api/image/generate/", {"n": 11}, "n"),
    ],
)
async def test_bad_input_in_openai_shaped_errors(
    gw: Gateway, key: str, path: str, change: dict[str, Any], field: str
) -> None:
    base: dict[str, Any] = {"prompt": "a cat", "model": "veo" if path == "/api/video" else "flux"}
    response = await gw.client.post(path, json={**base, **change}, headers=bearer(key))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert error["type"] == "invalid_request_error"
    assert field in error["message"]


async def test_unknown_model_is_404_with_suggestions(gw: Gateway, key: str) -> None:
    response = await gw.client.post(
        "/api/v1/generate", json={"model": "flx", "prompt": "a cat"}, headers={"X-API-Key": key}
    )
    assert response.status_code == 404
    assert "flux" in response.json()["message"]


async def test_image_per_minute_limit_is_its_own(gw: Gateway) -> None:
    gw.start_worker()
    key = await gw.create_key("painter", limits={"per_minute": {"image": 1, "chat": 5}})
    body = {"prompt": "one", "model": "flux", "width": 64, "height": 64}
    assert (await gw.client.post("/api/image", json=body, headers=bearer(key))).status_code == 200
    limited = await gw.client.post("/api/image?batch=1", json=body, headers=bearer(key))
    assert limited.status_code == 429
    assert "retry-after" in limited.headers
    assert limited.json()["error"]["message"]


# --- provider faults ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "model", "reason"),
    [
        ("[html] a cat", "flux", "not an image (an HTML page)"),
        ("[huge] a cat", "flux", "over the limit of 40,000,000"),
        ("[truncated] a cat", "flux", "truncated or corrupt"),
        ("[hang] a cat", "slow", "timed out after 0.5s"),
        ("[fail] a cat", "flux", "HTTP 500"),
    ],
    ids=["html", "huge", "truncated", "timeout", "server-error"],
)
async def test_provider_faults_fail_the_job_with_the_reason(
    gw: Gateway, key: str, prompt: str, model: str, reason: str
) -> None:
    gw.start_worker()
    body = {"prompt": prompt, "model": model, "width": 64, "height": 64}
    response = await gw.client.post("/api/image", json=body, headers=bearer(key))
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert reason in error["message"]
    assert error["type"] == "provider_error"
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["status"] == "failed"
    assert reason in job["error"]["message"]
    assert job["attempts"] == 2  # retried once (SWITCHYARD_PROVIDER_ATTEMPTS), then failed


async def test_a_provider_refusal_is_not_retried(gw: Gateway, key: str, pics: ImageStandIn) -> None:
    gw.start_worker()
    body = {"model": "flux", "prompt": "[400] forbidden"}
    response = await gw.client.post("/api/v1/generate", json=body, headers={"X-API-Key": key})
    assert response.status_code == 502
    assert "stand-in refuses this prompt" in response.json()["message"]
    assert pics.calls["image"] == 1


async def test_a_fault_in_one_of_n_fails_the_attempt_and_a_retry_succeeds(
    gw: Gateway, key: str, pics: ImageStandIn
) -> None:
    gw.start_worker()
    body = {"model": "flux", "prompt": "[fail:1] flaky", "n": 2, "size": "256x256", "seed": 1}
    response = await gw.client.post("/api/v1/generate", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]["data"]) == 2
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["attempts"] == 2


# --- video (001) ------------------------------------------------------------------------------------------
@BOTH_BLOB_STORES
async def test_cloud_video_answers_an_mp4(gw: Gateway, key: str, pics: ImageStandIn) -> None:
    gw.start_worker()
    body = {"prompt": "waves", "model": "veo", "duration": 2, "width": 160, "height": 120}
    response = await gw.client.post("/api/video", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.content[4:8] == b"ftyp" and len(response.content) > 1000
    (sent,) = pics.requests
    assert (sent["duration"], sent["width"], sent["height"], sent["model"]) == ("2", "160", "120", "veo")
    job = await get_job(gw.client, key, response.headers["x-job-id"])
    assert job["kind"] == "video_generation" and job["provider"] == "clips"
    assert job["result"]["duration"] == 2 and job["result"]["content_type"] == "video/mp4"
    stored = await gw.client.get(job["result"]["url"], headers=bearer(key))
    assert stored.content == response.content


async def test_cloud_video_faults(gw: Gateway, key: str) -> None:
    gw.start_worker()
    body = {"prompt": "[html] waves", "model": "veo", "duration": 1, "width": 160, "height": 120}
    response = await gw.client.post("/api/video", json=body, headers=bearer(key))
    assert response.status_code == 502
    assert "not an MP4" in response.json()["error"]["message"]


@BOTH_BLOB_STORES
async def test_many_images_at_once_each_get_their_own(gw: Gateway, key: str) -> None:
    gw.start_worker()

    async def one(i: int) -> None:
        side = 64 + 8 * i
        body = {"prompt": f"picture {i}", "model": "flux", "width": side, "height": 64}
        response = await gw.client.post("/api/image", json=body, headers=bearer(key))
        assert response.status_code == 200, response.text
        assert image_of(response.content).size == (side, 64)

    await asyncio.gather(*(one(i) for i in range(12)))


async def test_files_store_many_stores_every_file_in_one_go(sqlite_url: str, tmp_path: Path) -> None:
    from storage.blobs import LocalBlobStore
    from storage.db import Database
    from storage.files import Files, NewFile

    db = Database(sqlite_url)
    try:
        files = Files(db, LocalBlobStore(tmp_path / "blobs"))
        made = await files.store_many(
            [
                NewFile(b"one", "image/png", "a.png", owner_key_id="k1", kind="image", job_id="j"),
                NewFile(b"two", "image/webp", "a-thumbnail.webp", owner_key_id="k1", kind="thumbnail"),
                NewFile(b"one", "image/png", "b.png", owner_key_id="k2", kind="image", expires_in_s=None),
            ]
        )
        assert len({f.id for f in made}) == 3
        assert made[0].blob_key == made[2].blob_key  # the same bytes: one blob
        assert made[2].expires_at is None and made[0].expires_at is not None
        assert await files.count() == 3
        back = await files.get_for(made[1].id, "k1")
        assert back.kind == "thumbnail" and back.mime_type == "image/webp"
        assert await files.read(back) == b"two"
    finally:
        await db.dispose()
