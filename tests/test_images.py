"""Decoding untrusted images, and the decode-and-resize paths against SigLIP's own processor.

Tolerance of the fast path (JPEG draft + box pre-shrink before the bicubic resize), in grey levels out
of 255 against the processor's full-decode bicubic resize: mean |diff| <= 0.6 and max |diff| <= 5.
Measured on SCIN-sized noisy synthetic photos (810x1080 -> 224): mean 0.41, max 3
(benchmarks/bench_decode.py); real photos are smoother, so they deviate less.
"""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import hostile_corpus
from scinsearch import testing
from scinsearch.errors import BROKEN_IMAGE, NOT_AN_IMAGE, UNSUPPORTED_FORMAT
from scinsearch.images import (
    WORK_PIXELS,
    ImageError,
    allowed_formats,
    decode_memory_bound,
    load_square,
    open_rgb,
    resize_square,
    shrink_for_conversion,
)

BICUBIC = Image.Resampling.BICUBIC
FAST_MEAN_LIMIT = 0.6  # grey levels
FAST_MAX_LIMIT = 5


def encoded(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def photo(size=(240, 320), seed=0) -> Image.Image:
    return testing.condition_image(testing.CONDITIONS[seed % 8], size, random.Random(seed))


def processor_pixels(image: Image.Image, side: int) -> np.ndarray:
    """What SigLIP's own (PIL-backend) processor produces, as HxWx3 in [-1, 1]."""
    from transformers.models.siglip import SiglipImageProcessorPil

    processor = SiglipImageProcessorPil(size={"height": side, "width": side})
    values = processor(images=[image], return_tensors="np")["pixel_values"][0]
    return np.transpose(values, (1, 2, 0))


def as_unit(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / 127.5 - 1


# ------------------------------------------------------------------------------ modes, EXIF, bombs


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "1", "P", "I;16", "I", "F", "CMYK", "YCbCr", "HSV"])
def test_every_mode_becomes_rgb(mode):
    base = photo((20, 16))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    else:
        image = base.convert(mode)
    result = open_rgb(image)
    assert result.mode == "RGB" and result.size == (20, 16)


@pytest.mark.parametrize(
    "mode,format",
    [
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
        ("CMYK", "JPEG"),
        ("L", "JPEG"),
        ("L", "PNG"),
        ("1", "PNG"),
    ],
)
def test_every_mode_in_a_file_becomes_rgb(mode, format):
    base = photo((20, 16))
    image = (
        Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257) if mode == "I;16" else base.convert(mode)
    )
    data = encoded(image, format)
    assert Image.open(io.BytesIO(data)).mode.startswith(mode[:1])
    for fast in (False, True):
        assert load_square(data, 8, BICUBIC, fast=fast).shape == (8, 8, 3)
    assert open_rgb(data).mode == "RGB"


def test_transparency_is_flattened_onto_white_and_sixteen_bit_is_scaled():
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert open_rgb(encoded(clear)).getpixel((0, 0)) == (255, 255, 255)
    grey = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert open_rgb(encoded(grey)).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert open_rgb(encoded(palette, transparency=0)).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("fast", [False, True])
def test_exif_orientation_is_applied(fast):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # left quarter red
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the red band ends up at the top
    for format in ("PNG", "JPEG"):
        data = encoded(image, format, exif=exif)
        upright = open_rgb(data)
        assert upright.size == (20, 40)
        top, bottom = np.asarray(upright)[2, 10], np.asarray(upright)[-3, 10]
        assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
        square = load_square(data, 20, BICUBIC, fast=fast)
        assert square[1, 10, 0] > 200 and square[-2, 10, 2] > 200


def test_a_passed_in_image_is_turned_upright_without_changing_it():
    image = Image.new("RGB", (30, 10))
    exif = image.getexif()
    exif[0x0112] = 6
    given = Image.open(io.BytesIO(encoded(image, "PNG", exif=exif)))
    assert open_rgb(given).size == (10, 30)
    assert given.size == (30, 10) and given.getexif().get(0x0112) == 6


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge picture (a decompression bomb's first line)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("width,height", [(30_000, 30_000), (10_000, 7_000)])
def test_decompression_bombs_are_refused_before_decoding(width, height):
    for fast in (False, True):
        with pytest.raises(ImageError, match="too large|megapixels"):
            load_square(png_claiming(width, height), 224, BICUBIC, fast=fast)


def test_our_pixel_limit_applies():
    with pytest.raises(ImageError, match="megapixels"):
        open_rgb(encoded(photo((100, 100))), max_pixels=5_000)


@pytest.mark.parametrize("data,reason", [(b"", "empty file"), (b"not a picture at all", "not an image file")])
def test_broken_data_is_a_clear_error(data, reason):
    with pytest.raises(ImageError, match=reason):
        open_rgb(data)


def test_truncated_file_is_a_clear_error():
    with pytest.raises(ImageError, match="broken image data"):
        load_square(encoded(photo())[:400], 32, BICUBIC, fast=True)


# ------------------------------------------------------------------ against the processor's output


def test_exact_path_is_the_processor_bit_for_bit():
    image = photo((240, 320), seed=3)
    ours = load_square(encoded(image), 32, BICUBIC, fast=False)
    assert np.array_equal(ours, np.asarray(image.resize((32, 32), BICUBIC)))
    np.testing.assert_allclose(as_unit(ours), processor_pixels(image, 32), atol=1e-6)


def deviation(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean, max) |diff| in grey levels, from values in [-1, 1]."""
    diff = np.abs(as_unit(ours) - reference) * 127.5
    return float(diff.mean()), float(diff.max())


@pytest.fixture(scope="module")
def scin_sized() -> bytes:
    return testing.scin_sized_png(seed=5)


def test_fast_path_on_a_scin_sized_png_is_within_tolerance_of_the_processor(scin_sized):
    image = Image.open(io.BytesIO(scin_sized)).convert("RGB")
    for side in (224, 384):
        mean, worst = deviation(load_square(scin_sized, side, BICUBIC, fast=True), processor_pixels(image, side))
        assert mean <= FAST_MEAN_LIMIT and worst <= FAST_MAX_LIMIT, (side, mean, worst)


def test_fast_path_on_a_big_jpeg_uses_draft_and_stays_within_tolerance():
    image = photo((1000, 1400), seed=2)
    data = encoded(image, "JPEG", quality=92)
    decoded = Image.open(io.BytesIO(data)).convert("RGB")  # the reference sees the JPEG's own pixels
    opened = Image.open(io.BytesIO(data))
    opened.draft(None, (2 * 224, 2 * 224))
    assert opened.size == (500, 700)  # libjpeg decodes at half scale: a quarter of the work
    mean, worst = deviation(load_square(data, 224, BICUBIC, fast=True), processor_pixels(decoded, 224))
    assert mean <= FAST_MEAN_LIMIT and worst <= FAST_MAX_LIMIT, (mean, worst)


def test_fast_path_on_a_small_image_is_exact():
    """No shortcut applies when the image is less than twice the target: identical to the processor."""
    image = photo((300, 400), seed=1)
    assert np.array_equal(
        load_square(encoded(image), 224, BICUBIC, fast=True), load_square(encoded(image), 224, BICUBIC, fast=False)
    )


def test_resize_square_leaves_a_right_sized_image_alone():
    image = photo((32, 32))
    assert np.array_equal(resize_square(image, 32), np.asarray(image))


# ------------------------------------------------------------------ the allow-list (issue 10, item 1)


def test_only_camera_formats_are_allowed():
    allowed = set(allowed_formats())
    assert {"JPEG", "MPO", "PNG"} <= allowed  # what SCIN holds and what phones write
    assert not allowed & {"EPS", "PSD", "TIFF", "DDS", "SPIDER", "IM", "SGI", "FITS", "BMP", "GIF", "PDF"}


@pytest.fixture
def plugin_spy(monkeypatch):
    """Replaces the opener of every plugin outside the allow-list with a recorder: the list of formats
    whose parser was ever handed the bytes."""
    Image.init()
    consulted: list[str] = []
    for name, (factory, accept) in list(Image.OPEN.items()):
        if name not in allowed_formats():

            def spy(*args, _name=name, _factory=factory, **kwargs):
                consulted.append(_name)
                return _factory(*args, **kwargs)

            monkeypatch.setitem(Image.OPEN, name, (spy, accept))
    return consulted


def test_other_formats_are_refused_from_their_signature_and_never_parsed(plugin_spy):
    files = {
        name: data for name, data in hostile_corpus.every_writable_format().items() if name not in allowed_formats()
    }
    files |= {
        "eps-bomb": hostile_corpus.eps_comment_bomb(0.5),
        "psd": hostile_corpus.psd_header(),
        "float-tiff": hostile_corpus.float_tiff(),
    }
    assert {"EPS", "TIFF", "BMP", "GIF"} <= set(files)
    codes = {}
    for name, data in files.items():
        with pytest.raises(ImageError) as refused:
            open_rgb(data)
        codes[name] = refused.value.code
    assert plugin_spy == []
    assert set(codes.values()) <= {UNSUPPORTED_FORMAT, NOT_AN_IMAGE}
    assert {codes[name] for name in ("EPS", "TIFF", "BMP", "eps-bomb", "psd", "float-tiff")} == {UNSUPPORTED_FORMAT}


def test_data_set_files_are_held_to_the_same_allow_list(tmp_path, plugin_spy):
    """An EPS saved as .png in the data set is skipped with a reason, not handed to Ghostscript."""
    disguised = tmp_path / "-1234.png"
    disguised.write_bytes(hostile_corpus.eps_comment_bomb(0.1))
    for fast in (False, True):
        with pytest.raises(ImageError, match="EPS images are not accepted") as refused:
            load_square(disguised, 8, BICUBIC, fast=fast)
        assert refused.value.code == UNSUPPORTED_FORMAT
    assert plugin_spy == []


def test_every_allowed_format_decodes():
    image = hostile_corpus.photo((40, 30))
    files = {name: hostile_corpus.encoded(image, name) for name in ("JPEG", "PNG", "WEBP", "AVIF")}
    files["MPO"] = hostile_corpus.encoded(image, "MPO", save_all=True, append_images=[hostile_corpus.photo(seed=1)])
    assert Image.open(io.BytesIO(files["MPO"])).format == "MPO"
    for name, data in files.items():
        if name in allowed_formats():
            assert open_rgb(data).size == (40, 30), name


@pytest.mark.parametrize("name", ["JPEG", "PNG", "WEBP", "AVIF"])
def test_allowed_formats_cut_short_are_broken_images(name):
    if name not in allowed_formats():
        pytest.skip(f"no {name} decoder in this Pillow")
    for cut, data in hostile_corpus.truncations(hostile_corpus.encoded(hostile_corpus.photo(), name)).items():
        with pytest.raises(ImageError) as refused:
            open_rgb(data)
        assert refused.value.code == BROKEN_IMAGE, cut


def corrupt_avif_raising_runtime_error() -> bytes:
    """An AVIF with one byte changed that makes Pillow raise RuntimeError (not an OSError)."""
    data = hostile_corpus.encoded(hostile_corpus.photo((32, 24)), "AVIF")
    for position in range(len(data)):
        for value in (0, 0xFF, 12, 56, 108):
            candidate = data[:position] + bytes([value]) + data[position + 1 :]
            try:
                Image.open(io.BytesIO(candidate)).load()
            except RuntimeError:
                return candidate
            except Exception:
                continue
    raise AssertionError("no corrupt AVIF raises RuntimeError: Pillow may map these errors itself now")


def test_any_exception_a_decoder_raises_is_an_image_error(monkeypatch):
    """Pillow lets more than OSError out of a plugin (issue 9814): e.g. RuntimeError from AVIF."""
    if "AVIF" in allowed_formats():
        with pytest.raises(ImageError) as refused:
            open_rgb(corrupt_avif_raising_runtime_error())
        assert refused.value.code == BROKEN_IMAGE
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: 1 / 0)
    with pytest.raises(ImageError, match="broken image data") as refused:
        open_rgb(encoded(photo((20, 16))))
    assert refused.value.code == BROKEN_IMAGE


# ------------------------------------------------------- wide modes shrink first (issue 10, item 3)


def test_big_sixteen_bit_and_float_images_are_block_averaged_in_their_own_mode():
    side = int((WORK_PIXELS * 1.2) ** 0.5) // 2 * 2  # just over the limit: halved
    ramp = (np.arange(side * side, dtype=np.uint32).reshape(side, side) % 65536).astype(np.uint16)
    blocks = ramp.reshape(side // 2, 2, side // 2, 2).astype(np.float64).mean(axis=(1, 3))
    sixteen = shrink_for_conversion(Image.fromarray(ramp))
    assert sixteen.mode.startswith("I;16") and sixteen.size == (side // 2, side // 2)
    assert np.abs(np.asarray(sixteen, dtype=np.float64) - blocks).max() <= 1
    floats = shrink_for_conversion(Image.fromarray(ramp.astype(np.float32)))
    assert floats.mode == "F" and np.allclose(np.asarray(floats), blocks, atol=0.01)
    small = Image.fromarray(ramp[:100, :100])
    assert shrink_for_conversion(small) is small  # small images are converted as they are
    rgb = Image.new("RGB", (side, side))
    assert shrink_for_conversion(rgb) is rgb  # RGB needs no conversion: never shrunk


def test_a_shrunk_image_keeps_its_orientation():
    side = int((WORK_PIXELS * 1.2) ** 0.5)
    wide = Image.fromarray(np.zeros((side // 2, side), dtype=np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to show
    result = open_rgb(encoded(wide, "PNG", exif=exif.tobytes()))
    assert result.mode == "RGB" and result.size[1] > result.size[0]


MEMORY_PROBE = """
import resource, sys
from scinsearch.images import load_square
data = open(sys.argv[1], "rb").read()
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
pixels = load_square(data, 224)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
print(after - before, pixels.shape)
"""


def test_a_sixteen_bit_giant_decodes_within_the_stated_memory_bound(tmp_path):
    """8000x8000 16-bit PNG (the 64-MP limit, ~1 MB): converted at full size it peaked at 1.6 GB."""
    path = tmp_path / "giant.png"
    path.write_bytes(hostile_corpus.sixteen_bit_png())
    # a fresh process: its peak memory (ru_maxrss) is the decoder's alone, not the test run's
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True, timeout=120, check=True
    )
    growth, shape = probe.stdout.split(maxsplit=1)
    assert shape.strip() == "(224, 224, 3)"
    assert int(growth) < decode_memory_bound(), f"peak grew by {int(growth) / 2**20:.0f} MiB"
