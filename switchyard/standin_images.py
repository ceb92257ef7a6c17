"""A local stand-in for image and video providers, for tests, benchmarks and demos.

One small HTTP/1.1 server on raw asyncio serving three upstream shapes:
- Pollinations' image API: `GET /prompt/{prompt}?width=&height=&seed=&model=` answers real
  image bytes made with Pillow (PNG, or JPEG/WebP with `[jpeg]`/`[webp]` in the prompt);
- OpenAI's images API: `POST /v1/images/generations` answers `b64_json`, or `url`s that this
  server then serves under `/files/`;
- a Pollinations-style video API: `GET /video/prompt/{prompt}?duration=&width=&height=` answers
  a real MP4, encoded once per size and duration with the ffmpeg that imageio-ffmpeg bundles.

Faults are steered per request by markers in the prompt: `[html]` (an HTML page with status
200), `[sleep:S]`, `[hang]`, `[huge]` (a real 7000x7000 PNG: 49 million pixels in ~6 KB),
`[wide]` (twice as wide as asked), `[exif]` (metadata that must not come back out),
`[truncated]` (half a PNG), `[fail]` (500), `[fail:N]` (500 for the first N calls), `[400]`,
`[url]` (OpenAI shape: a URL whatever was asked).

    python -m switchyard.standin_images --port 18090
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import os
import random
import re
import secrets
import tempfile
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from PIL import Image, ImageDraw

from switchyard.standin import LoopbackServer

_MARK = re.compile(r"\[(html|sleep|hang|huge|wide|exif|truncated|fail|400|url|jpeg|webp)(?::([0-9.]+))?\]")
HUGE_SIDE = 7000
Response = tuple[int, bytes, str]
JSON = "application/json"


def render_image(width: int, height: int, fmt: str = "PNG", *, seed: int = 0, exif: bool = False) -> bytes:
    """A real picture (a background, a disc and a bar, colours from the seed) of exactly that size."""
    rng = random.Random(seed)
    back = tuple(rng.randrange(256) for _ in range(3))
    fore = tuple(255 - c for c in back)
    im = Image.new("RGB", (width, height), back)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(im)
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=fore)  # type: ignore[arg-type]
    draw.rectangle((0, 0, max(width // 10, 1), height), fill=(rng.randrange(256), 0, 0))
    out = io.BytesIO()
    params: dict[str, Any] = {}
    if exif:
        meta = Image.Exif()
        meta[0x010E] = "secret description"  # ImageDescription
        meta[0x013B] = "secret artist"  # Artist
        params["exif"] = meta.tobytes()
        if fmt == "PNG":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            info.add_text("Comment", "secret comment")
            params["pnginfo"] = info
    im.save(out, fmt, **params)
    return out.getvalue()


def huge_png(side: int = HUGE_SIDE) -> bytes:
    """A valid 1-bit PNG of side x side pixels: tiny on the wire, huge once decoded."""
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, "PNG", optimize=True)
    return out.getvalue()


async def encode_mp4(width: int, height: int, duration: float, fps: int = 10) -> bytes:
    """A real H.264 MP4 (ffmpeg's test pattern), made by the bundled ffmpeg in a subprocess."""
    import imageio_ffmpeg

    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        proc = await asyncio.create_subprocess_exec(
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
            "-i", f"testsrc=size={width}x{height}:rate={fps}:duration={duration:g}",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
            "-y", path,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed: {err.decode(errors='replace')[-300:]}")
        return await asyncio.to_thread(Path(path).read_bytes)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


class ImageStandIn(LoopbackServer):
    backlog = 1024

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, cache_size: int = 256) -> None:
        self.host = host
        self.port = port
        self.calls: Counter[str] = Counter()  # by route: image, openai, video, file
        self.requests: list[dict[str, Any]] = []  # every generation request, query or body
        self.delay_s = 0.0  # every generation waits this long first
        self.inflight = 0
        self.max_inflight = 0  # the most generation requests seen in progress at once
        self._marker_counts: Counter[str] = Counter()
        self._cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._cache_size = cache_size
        self._files: dict[str, tuple[bytes, str]] = {}
        self._videos: dict[tuple[int, int, float], bytes] = {}
        self._huge: bytes | None = None
        self._server: asyncio.base_events.Server | None = None

    @property
    def base_url(self) -> str:
        """Pollinations' image shape: `{base_url}/prompt/{prompt}`."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def video_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/video"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == "content-length:":
                        length = int(line[15:].strip())
                body = await reader.readexactly(length) if length else b""
                status, payload, ctype = await self.handle(method, target, body)
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
                    % (status, ctype.encode(), len(payload))
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    async def handle(self, method: str, target: str, body: bytes) -> Response:
        parts = urlsplit(target)
        path = parts.path
        if method == "GET" and path.endswith("/models"):  # model discovery: nothing beyond the file
            return 200, b'{"object":"list","data":[]}', JSON
        if path.startswith("/files/"):
            return self.file(path[len("/files/") :])
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._generate(method, path, parts.query, body)
        finally:
            self.inflight -= 1

    def file(self, token: str) -> Response:
        self.calls["file"] += 1
        found = self._files.get(token)
        if found is None:
            return 404, b"no such file", "text/plain"
        return 200, found[0], found[1]

    async def _generate(self, method: str, path: str, raw_query: str, body: bytes) -> Response:
        query = {k: v[-1] for k, v in parse_qs(raw_query).items()}
        if method == "GET" and path.startswith("/prompt/"):
            return await self.image(unquote(path[len("/prompt/") :]), query)
        if method == "POST" and path.endswith("/images/generations"):
            return await self.openai_images(orjson.loads(body or b"{}"))
        if method == "GET" and path.startswith("/video/prompt/"):
            return await self.video(unquote(path[len("/video/prompt/") :]), query)
        return 404, b'{"error":{"message":"no such route"}}', JSON

    # --- shared fault handling -----------------------------------------------------------------
    async def _faults(self, prompt: str) -> Response | None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        for kind, arg in _MARK.findall(prompt):
            if kind == "hang":
                await asyncio.sleep(3600)
            elif kind == "sleep":
                await asyncio.sleep(float(arg or 0))
            elif kind == "fail":
                key = f"{kind}:{arg}:{prompt}"
                self._marker_counts[key] += 1
                if not arg or self._marker_counts[key] <= float(arg):
                    return 500, b'{"error":{"message":"stand-in failure"}}', JSON
            elif kind == "400":
                return 400, b'{"error":{"message":"stand-in refuses this prompt"}}', JSON
            elif kind == "html":
                return 200, b"<!DOCTYPE html><html><body>Rate limited, try later</body></html>", "text/html"
        return None

    async def _picture(self, prompt: str, width: int, height: int, seed: int | None) -> tuple[bytes, str]:
        marks = {m for m, _ in _MARK.findall(prompt)}
        if "huge" in marks:
            if self._huge is None:
                self._huge = huge_png()
            return self._huge, "image/png"
        fmt = "JPEG" if "jpeg" in marks else "WEBP" if "webp" in marks else "PNG"
        if "wide" in marks:
            width *= 2
        if seed is None:
            seed = random.randrange(2**31)
        key = (width, height, fmt, seed, "exif" in marks, hashlib.sha1(prompt.encode()).digest())
        data = self._cache.get(key)
        if data is None:
            mixed = seed ^ int.from_bytes(key[-1][:4], "big")
            data = await asyncio.to_thread(render_image, width, height, fmt, seed=mixed, exif="exif" in marks)
            self._cache[key] = data
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if "truncated" in marks:
            data = data[: len(data) // 2]
        return data, f"image/{fmt.lower()}"

    # --- the three upstream shapes -------------------------------------------------------------
    async def image(self, prompt: str, query: dict[str, str]) -> Response:
        self.calls["image"] += 1
        self.requests.append({"route": "image", "prompt": prompt, **query})
        fault = await self._faults(prompt)
        if fault is not None:
            return fault
        width = int(query.get("width") or 1024)
        height = int(query.get("height") or 1024)
        seed = int(query["seed"]) if query.get("seed") not in (None, "") else None
        data, mime = await self._picture(prompt, width, height, seed)
        return 200, data, mime

    async def openai_images(self, req: dict[str, Any]) -> Response:
        self.calls["openai"] += 1
        self.requests.append({"route": "openai", **req})
        prompt = str(req.get("prompt") or "")
        fault = await self._faults(prompt)
        if fault is not None:
            return fault
        size = str(req.get("size") or "1024x1024")
        width, _, height = size.partition("x")
        as_url = req.get("response_format") == "url" or "[url]" in prompt
        seed = req.get("seed")
        data = []
        for i in range(int(req.get("n") or 1)):
            picture, mime = await self._picture(
                prompt, int(width), int(height), None if seed is None else int(seed) + i
            )
            item: dict[str, Any] = {"revised_prompt": f"revised: {prompt}"}
            if as_url:
                token = secrets.token_hex(8)
                self._files[token] = (picture, mime)
                item["url"] = f"{self.base_url}/files/{token}"
            else:
                item["b64_json"] = base64.b64encode(picture).decode()
            data.append(item)
        return 200, orjson.dumps({"created": int(time.time()), "data": data}), JSON

    async def video(self, prompt: str, query: dict[str, str]) -> Response:
        self.calls["video"] += 1
        self.requests.append({"route": "video", "prompt": prompt, **query})
        fault = await self._faults(prompt)
        if fault is not None:
            return fault
        width = int(query.get("width") or 1280)
        height = int(query.get("height") or 720)
        duration = float(query.get("duration") or 4)
        key = (width, height, duration)
        if key not in self._videos:
            self._videos[key] = await encode_mp4(width, height, duration)
        return 200, self._videos[key], "video/mp4"


async def _main(args: argparse.Namespace) -> None:
    standin = await ImageStandIn(port=args.port).start()
    print(f"image stand-in on {standin.base_url} (OpenAI images at {standin.openai_base_url})", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="local image and video stand-in provider")
    parser.add_argument("--port", type=int, default=18090)
    asyncio.run(_main(parser.parse_args()))
