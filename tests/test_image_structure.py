"""Structural checks before any decoder (issue 23): files whose cost is in their structure are refused
at once, in the service and when embedding; what cameras write passes untouched."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image, PngImagePlugin

import hostile_corpus as corpus
from scinsearch.errors import IMAGE_TOO_LARGE
from scinsearch.image_structure import (
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_PNG_ANCILLARY_CHUNKS,
    structure_problem,
)
from scinsearch.images import MAX_PIXELS, ImageError, load_square, open_header, open_rgb


def refused(data: bytes) -> ImageError:
    started = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        open_header(data)
    assert time.perf_counter() - started < 0.5, "the refusal must come before any decoding"
    assert caught.value.code == IMAGE_TOO_LARGE
    return caught.value


def test_a_progressive_jpeg_repeating_a_refinement_scan_is_refused_before_decoding():
    assert "scans" in str(refused(corpus.repeated_scan_jpeg((64, 64), repeats=MAX_JPEG_SCANS)))
    head, scans, _tail = corpus.jpeg_segments(corpus.repeated_scan_jpeg((64, 64), repeats=0))
    assert 2 <= len(scans) <= 20  # what an encoder writes is far below the limit...
    assert open_rgb(corpus.repeated_scan_jpeg((64, 64), repeats=3)).size == (64, 64)  # ...and decodes


def test_a_comment_segment_flood_is_refused_and_an_ordinary_jpeg_is_not():
    assert "marker segments" in str(refused(corpus.comment_flood_jpeg(MAX_JPEG_SEGMENTS + 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    camera = corpus.encoded(corpus.photo((64, 48)), "JPEG", exif=exif, icc_profile=b"\0" * 70_000, progressive=True)
    assert structure_problem(camera, MAX_PIXELS) is None
    assert open_rgb(camera).size == (48, 64)


def test_a_png_chunk_flood_is_refused_and_a_png_with_text_is_not():
    assert "ancillary chunks" in str(refused(corpus.chunk_flood_png(MAX_PNG_ANCILLARY_CHUNKS + 1)))
    info = PngImagePlugin.PngInfo()
    for number in range(20):
        info.add_text(f"key{number}", "value")
    png = corpus.encoded(corpus.photo((64, 48)), "PNG", pnginfo=info)
    assert structure_problem(png, MAX_PIXELS) is None and open_rgb(png).size == (64, 48)


def test_a_webp_canvas_is_priced_by_its_pixels_times_frames():
    assert "WebP" in str(refused(corpus.lossless_webp(8000)))  # 2.5 KB that used to peak near 1 GB
    small = corpus.encoded(corpus.photo((64, 48)), "WEBP", quality=80)
    assert structure_problem(small, MAX_PIXELS) is None and open_rgb(small).size == (64, 48)
    frames = [Image.new("RGB", (400, 400), (i, 0, 0)) for i in range(8)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    animated = buffer.getvalue()
    assert structure_problem(animated, 8 * 400 * 400 * 4) is None
    assert "canvas x frames" in structure_problem(animated, 8 * 400 * 400 * 4 - 4)


def test_the_embed_run_refuses_the_same_files(tmp_path):
    """`embed` decodes through the same door (`load_square` -> `open_header`)."""
    flood = tmp_path / "flood.jpg"
    flood.write_bytes(corpus.comment_flood_jpeg(MAX_JPEG_SEGMENTS + 1))
    with pytest.raises(ImageError, match="marker segments"):
        load_square(flood, 32)
