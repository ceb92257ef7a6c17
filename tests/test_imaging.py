"""The Pillow pipeline on its own: exact sizes, center crops, formats, stripped metadata, thumbnails,
and what it refuses (not an image, truncated, decompression bombs)."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from switchyard.standin_images import huge_png, render_image
from workers import imaging
from workers.imaging import ImageSpec, ImageTooLarge, NotAnImage, process

LIMIT = 40_000_000


def opened(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def two_halves(width: int, height: int) -> bytes:
    """Left half red, right half blue: where a crop cut shows in the result."""
    im = Image.new("RGB", (width, height), (255, 0, 0))
    im.paste((0, 0, 255), (width // 2, 0, width, height))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny IDAT: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("fmt", "pil_format", "mime"), [("png", "PNG", "image/png"),
                                                         ("jpeg", "JPEG", "image/jpeg"),
                                                         ("webp", "WEBP", "image/webp")])  # fmt: skip
def test_exact_size_in_the_requested_format(fmt: str, pil_format: str, mime: str) -> None:
    out = process(render_image(300, 200, "PNG", seed=1), ImageSpec(256, 256, fmt), max_pixels=LIMIT)
    im = opened(out.data)
    assert im.size == (256, 256)
    assert im.format == pil_format
    assert out.mime == mime
    assert (out.width, out.height) == (256, 256)
    assert out.source_format == "PNG" and out.source_size == (300, 200)


def test_a_different_aspect_is_resized_then_center_cropped() -> None:
    out = process(two_halves(400, 200), ImageSpec(100, 100), max_pixels=LIMIT)
    im = opened(out.data).convert("RGB")
    assert im.size == (100, 100)
    # The middle 200x200 of the source, scaled down: its left half red, its right half blue.
    assert im.getpixel((10, 50)) == (255, 0, 0)
    assert im.getpixel((90, 50)) == (0, 0, 255)
    # A 1:2 source into a 2:1 box: cut top and bottom, so both colours keep their halves.
    wide = opened(process(two_halves(200, 400), ImageSpec(100, 50), max_pixels=LIMIT).data).convert("RGB")
    assert wide.size == (100, 50)
    assert wide.getpixel((5, 25)) == (255, 0, 0) and wide.getpixel((95, 25)) == (0, 0, 255)


def test_quality_changes_jpeg_and_webp_size() -> None:
    source = render_image(512, 512, "PNG", seed=3)
    for fmt in ("jpeg", "webp"):
        low = process(source, ImageSpec(512, 512, fmt, quality=5), max_pixels=LIMIT)
        high = process(source, ImageSpec(512, 512, fmt, quality=100), max_pixels=LIMIT)
        assert len(low.data) < len(high.data), fmt


def test_transparency_becomes_white_in_jpeg_and_stays_in_png() -> None:
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    out = io.BytesIO()
    im.save(out, "PNG")
    as_jpeg = opened(process(out.getvalue(), ImageSpec(64, 64, "jpeg"), max_pixels=LIMIT).data)
    assert as_jpeg.mode == "RGB"
    assert all(c > 245 for c in as_jpeg.getpixel((32, 32)))  # type: ignore[union-attr]
    as_png = opened(process(out.getvalue(), ImageSpec(64, 64, "png"), max_pixels=LIMIT).data)
    assert as_png.mode == "RGBA" and as_png.getpixel((32, 32))[3] == 0  # type: ignore[index]


def test_metadata_is_stripped() -> None:
    exif = Image.Exif()
    exif[0x013B] = "secret artist"
    src = Image.new("RGB", (128, 128), (10, 20, 30))
    info = PngInfo()
    info.add_text("Comment", "secret comment")
    for fmt, params in (("JPEG", {"exif": exif.tobytes(), "comment": b"secret"}),
                        ("PNG", {"exif": exif.tobytes(), "pnginfo": info})):  # fmt: skip
        buf = io.BytesIO()
        src.save(buf, fmt, **params)
        assert b"secret" in buf.getvalue()
        for out_fmt in ("png", "jpeg", "webp"):
            out = process(buf.getvalue(), ImageSpec(128, 128, out_fmt), max_pixels=LIMIT)
            assert b"secret" not in out.data, (fmt, out_fmt)
            im = opened(out.data)
            assert not im.getexif(), (fmt, out_fmt)
            assert "comment" not in im.info and "Comment" not in im.info


def test_thumbnail_is_small_webp_keeping_aspect() -> None:
    out = process(render_image(1024, 1024, seed=5), ImageSpec(1792, 1024), max_pixels=LIMIT)
    thumb = opened(out.thumbnail)
    assert thumb.format == "WEBP" and out.thumbnail_mime == "image/webp"
    assert thumb.size == (256, 146)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<!DOCTYPE html><html><body>busy</body></html>", "HTML"),
        (b'{"error": "quota"}', "JSON"),
        (b"", "empty"),
        (render_image(64, 64)[:200], "truncated or corrupt"),
    ],
    ids=["html", "json", "empty", "truncated"],
)
def test_what_is_not_an_image_is_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(NotAnImage) as err:
        process(data, ImageSpec(64, 64), max_pixels=LIMIT)
    assert reason in str(err.value)


def test_decompression_bombs_are_refused_before_decoding() -> None:
    # 100,000 x 100,000 claimed by a file of a few dozen bytes: refused from its header alone.
    with pytest.raises(ImageTooLarge):
        process(png_header_only(100_000, 100_000), ImageSpec(64, 64), max_pixels=LIMIT)
    # A real, valid 7000 x 7000 PNG (49 million pixels in a few KB) over the configured limit.
    bomb = huge_png()
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge) as err:
        process(bomb, ImageSpec(64, 64), max_pixels=LIMIT)
    assert "7000x7000" in str(err.value) and "40,000,000" in str(err.value)
    # The limit is the setting's: a smaller one refuses an ordinary image.
    with pytest.raises(ImageTooLarge):
        process(render_image(1100, 1000), ImageSpec(64, 64), max_pixels=1_000_000)


async def test_processing_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    real = imaging.process

    def spy(*args: object, **kwargs: object) -> imaging.ProcessedImage:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(imaging, "process", spy)
    out = await asyncio.gather(
        *(imaging.process_async(render_image(128, 128, seed=i), ImageSpec(64, 64), max_pixels=LIMIT)
          for i in range(4))
    )  # fmt: skip
    assert [o.width for o in out] == [64] * 4
    assert threads and all(t is not threading.main_thread() for t in threads)
