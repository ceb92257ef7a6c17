"""The Pillow pipeline every generated image goes through before it is stored.

Open and verify (what a provider sent must be an image: HTML or a truncated file is the
provider's failure, never a corrupt file handed on), refuse decompression bombs by their pixel
count before a single pixel is decoded, bring the image to exactly the requested size (resize,
center-cropping when the aspect differs), convert to the requested format, drop every piece of
metadata (EXIF, text chunks, ICC profiles, comments) and make a thumbnail.

All of it is CPU work: `process_async` runs it in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS: dict[str, str] = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MIME_TYPES: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
THUMBNAIL_SIDE = 256
THUMBNAIL_FORMAT = "WEBP"
DEFAULT_QUALITY = 90  # JPEG and WebP, when the request names none


class NotAnImage(Exception):
    """The bytes are not an image Pillow can decode (HTML, JSON, a truncated file...)."""


class ImageTooLarge(Exception):
    """The image has more pixels than the limit: refused before it is decoded."""


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What the caller asked for: exact size, output format and, for JPEG/WebP, quality."""

    width: int
    height: int
    format: str = "png"  # a key of FORMATS
    quality: int | None = None  # 1-100, JPEG and WebP only


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    data: bytes
    mime: str
    width: int
    height: int
    thumbnail: bytes
    thumbnail_mime: str
    source_format: str  # what the provider sent (PNG, JPEG, ...)
    source_size: tuple[int, int]


def open_verified(data: bytes, max_pixels: int) -> Image.Image:
    """The decoded image, or NotAnImage / ImageTooLarge with the reason.

    `Image.open` reads only the header: the pixel count is checked there, before `load()`
    decodes anything, so a small file claiming 100,000 x 100,000 pixels costs nothing.
    """
    if not data:
        raise NotAnImage("the provider returned an empty body")
    try:
        im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (its MAX_IMAGE_PIXELS) fired first, in `open`.
        raise ImageTooLarge(f"the image is too large: {exc}") from None
    except UnidentifiedImageError:
        raise NotAnImage(f"the provider returned something that is not an image ({_sniff(data)})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"the image cannot be read: {exc}") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise NotAnImage(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} ({width * height:,} pixels), over the limit of {max_pixels:,}"
        )
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise NotAnImage(f"the image is truncated or corrupt: {exc}") from None
    return im


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "an HTML page"
    if head.startswith((b"{", b"[")):
        return "JSON"
    return f"{len(data)} bytes starting {data[:8]!r}"


def _for_format(im: Image.Image, fmt: str) -> Image.Image:
    """The image in a mode the output format can hold (alpha kept where it can be)."""
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if fmt == "JPEG":
        if has_alpha:
            background = Image.new("RGB", im.size, (255, 255, 255))
            background.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
            return background
        return im if im.mode in ("RGB", "L") else im.convert("RGB")
    if fmt == "PNG" and im.mode in ("RGB", "RGBA", "L", "LA"):
        return im
    if fmt == "WEBP" and im.mode in ("RGB", "RGBA"):
        return im
    return im.convert("RGBA" if has_alpha else "RGB")


def _encode(im: Image.Image, fmt: str, quality: int | None) -> bytes:
    out = io.BytesIO()
    im.info = {}  # nothing of the source's metadata goes back out (EXIF, text, ICC, comments)
    if fmt == "PNG":
        im.save(out, "PNG", compress_level=1 if im.width * im.height <= 65_536 else 6)
    elif fmt == "JPEG":
        im.save(out, "JPEG", quality=quality or DEFAULT_QUALITY, optimize=False)
    else:
        im.save(out, "WEBP", quality=quality or DEFAULT_QUALITY, method=4)
    return out.getvalue()


def process(data: bytes, spec: ImageSpec, *, max_pixels: int) -> ProcessedImage:
    """The provider's bytes as an image of exactly `spec`, metadata stripped, with a thumbnail."""
    fmt = FORMATS[spec.format]
    im = open_verified(data, max_pixels)
    source_format = im.format or "unknown"
    source_size = im.size
    ImageOps.exif_transpose(im, in_place=True)  # honour the orientation tag before it is dropped
    if im.size != (spec.width, spec.height):
        if im.mode not in ("RGB", "RGBA", "L", "LA"):
            im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
        im = ImageOps.fit(
            im, (spec.width, spec.height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5)
        )
    im = _for_format(im, fmt)
    encoded = _encode(im, fmt, spec.quality)
    thumb = im.copy()
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    thumbnail = _encode(_for_format(thumb, THUMBNAIL_FORMAT), THUMBNAIL_FORMAT, 80)
    return ProcessedImage(
        data=encoded,
        mime=MIME_TYPES[fmt],
        width=im.width,
        height=im.height,
        thumbnail=thumbnail,
        thumbnail_mime=MIME_TYPES[THUMBNAIL_FORMAT],
        source_format=source_format,
        source_size=source_size,
    )


async def process_async(data: bytes, spec: ImageSpec, *, max_pixels: int) -> ProcessedImage:
    return await asyncio.to_thread(process, data, spec, max_pixels=max_pixels)
