"""Open untrusted images safely: any file or upload becomes an upright RGB picture, or a clear reason.

Used both when indexing SCIN files and when a health worker uploads a photo, so that a query is
preprocessed exactly like the images it is compared with (EXIF orientation included).

Why it is this careful: `Image.open` sniffs the format from the bytes and would try 40+ plugins, some
of which parse hostile data slowly (an EPS made of comment lines), hand it to an external program
(EPS runs Ghostscript on a temporary file) or have had memory-safety bugs (PSD, FITS). So only the
formats cameras and phones produce, and SCIN holds, are ever parsed (`allowed_formats`); anything
else is refused from its first 16 bytes. The pixel count is checked on the header, before decoding,
and big images in a wide or unusual mode are shrunk in their own mode before any conversion, so
decoding one image needs a bounded amount of memory (`decode_memory_bound`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from scinsearch.errors import (
    BROKEN_IMAGE,
    EMPTY_UPLOAD,
    IMAGE_TOO_LARGE,
    NOT_AN_IMAGE,
    NOT_FOUND,
    UNSUPPORTED_FORMAT,
    ScinSearchError,
)
from scinsearch.helpers import first_line
from scinsearch.image_structure import structure_problem

MAX_PIXELS = 64_000_000  # a 64-megapixel photo; SCIN's are about 0.9 MP. Larger is refused (decompression bombs).
MAX_FILE_BYTES = 64 * 1024 * 1024
# The formats ever parsed, when their decoder is installed: what cameras and phones write (JPEG, its
# multi-picture variant MPO, HEIC/AVIF, WebP) and what SCIN holds (PNG, JPEG). Never EPS, PSD, TIFF...
CAMERA_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "AVIF", "HEIF")
# A non-RGB image larger than this is shrunk (box filter, its own mode) before it is converted to RGB:
# 16-bit, float, CMYK or transparent giants never get a full-size converted copy. 4 MP is about
# 2000x2000, far more than any model input (224-512 px) or thumbnail needs.
WORK_PIXELS = 4_000_000
SHRINK_BAND_ROWS = 64  # output rows shrunk at a time
STORED_BYTES_PER_PIXEL = 4  # Pillow keeps RGB, RGBA, CMYK, I and F images in 4 bytes a pixel


class ImageError(ValueError):
    """An image that cannot be used; the message says why in a few words, `code` which kind of failure
    (one of scinsearch.errors' codes)."""

    def __init__(self, message: str, code: str = BROKEN_IMAGE):
        super().__init__(message)
        self.code = code

    def user_error(self, what: str = "the query image") -> ScinSearchError:
        """The one-line error a user sees ("cannot use the photo: ..."), keeping the code (the service's
        HTTP status and the page's message follow from it)."""
        return ScinSearchError(f"cannot use {what}: {self}", self.code)


def allowed_formats() -> tuple[str, ...]:
    """The formats of CAMERA_FORMATS whose decoder this installation has (HEIF only once pillow-heif
    has registered its opener; AVIF and WebP when Pillow was built with them)."""
    Image.init()
    available = {
        "JPEG": features.check("jpg"),
        "MPO": features.check("jpg"),
        "PNG": features.check("zlib"),
        "WEBP": features.check("webp"),
        "AVIF": features.check("avif"),
        "HEIF": "HEIF" in Image.OPEN,
    }
    return tuple(name for name in CAMERA_FORMATS if available.get(name))


def plugins_to_try() -> list[str]:
    """`formats=` for Image.open: MPO has no opener of its own (the JPEG plugin returns MPO files)."""
    return [name for name in allowed_formats() if name in Image.OPEN]


def decode_memory_bound(max_pixels: int = MAX_PIXELS) -> int:
    """Most memory, in bytes, that decoding one image of at most `max_pixels` may need.

    The worst case is an RGB photo at the limit turned upright (EXIF): the decoded image and its
    rotated copy, 4 bytes a pixel each. Every other mode is decoded (at most 4 bytes a pixel) and
    shrunk to WORK_PIXELS before conversion, whose float intermediates take 8 bytes a pixel at most;
    64 MiB covers the decoder's own buffers and the resized result."""
    return 2 * STORED_BYTES_PER_PIXEL * max_pixels + 8 * WORK_PIXELS + 64 * 2**20


def read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read an image file, refusing missing, empty and oversized files with a reason."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("file not found", NOT_FOUND) from None
    except OSError as exc:
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError("empty file", EMPTY_UPLOAD)
    if size > limit:
        raise ImageError(f"file is {size / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB)", IMAGE_TOO_LARGE)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from None


def recognised_format(raw: bytes) -> str | None:
    """The name of a format Pillow knows that these bytes start like, judged by the plugins' signature
    checks on the first 16 bytes only (no plugin parses anything); None when nothing matches."""
    Image.init()
    prefix = raw[:16]
    for name in Image.ID:
        _factory, accept = Image.OPEN[name]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a signature check that chokes on short input is no match
            continue
    return None


def refused_format(raw: bytes) -> ImageError:
    """Why bytes that no allowed plugin opens are refused: an unsupported format, a broken file of an
    allowed one, or not an image at all."""
    allowed = allowed_formats()
    name = recognised_format(raw)
    if name is None:
        return ImageError("not an image file", NOT_AN_IMAGE)
    if name in allowed:
        return ImageError(f"broken image data (not a readable {name} file)")
    return ImageError(f"{name} images are not accepted: send {', '.join(allowed)}", UNSUPPORTED_FORMAT)


def broken(exc: BaseException) -> ImageError:
    if isinstance(exc, MemoryError):
        return ImageError("not enough memory to decode this image", IMAGE_TOO_LARGE)
    return ImageError(f"broken image data ({first_line(exc, limit=120)})")


def open_header(raw: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Identify `raw` among the allowed formats and check its pixel count, decoding no pixel: an
    opened image whose `load()` is still to come, or an ImageError with a code."""
    if not raw:
        raise ImageError("empty file", EMPTY_UPLOAD)
    problem = structure_problem(raw, max_pixels)  # before any parser, Pillow's header readers included
    if problem:
        raise ImageError(problem, IMAGE_TOO_LARGE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=plugins_to_try())
    except UnidentifiedImageError:
        raise refused_format(raw) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image is too large: too many pixels (decompression bomb guard)", IMAGE_TOO_LARGE) from None
    except Exception as exc:  # plugins let ValueError & co. escape Image.open (Pillow issue 9814)
        raise broken(exc) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} pixels (limit {max_pixels // 1_000_000} megapixels)", IMAGE_TOO_LARGE
        )
    return image


EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclasses.dataclass(frozen=True)
class DecodedPhoto:
    """An upright RGB picture and the (width, height) of the photo as taken and shown upright: the
    header's size, since `image` may be a reduced-scale JPEG decode (the photo-size check judges what
    the camera delivered)."""

    image: Image.Image
    taken_size: tuple[int, int]


def open_rgb(
    data: bytes | Path | Image.Image, max_pixels: int = MAX_PIXELS, draft_size: int | None = None
) -> Image.Image:
    """Decode to an upright RGB image: EXIF orientation applied, any mode converted, bombs refused.

    `draft_size`: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) as long as
    both sides stay at least `draft_size` pixels; other formats ignore it."""
    return decode_photo(data, max_pixels, draft_size).image


def decode_photo(
    data: bytes | Path | Image.Image, max_pixels: int = MAX_PIXELS, draft_size: int | None = None
) -> DecodedPhoto:
    """`open_rgb`, and the photo's size as taken, from one opening and one decode of the file: the
    header is parsed once and the EXIF read from the decoded image (asking a PNG for its EXIF before
    decoding would decode it a second time)."""
    if isinstance(data, Image.Image):
        image = to_rgb(ImageOps.exif_transpose(shrink_for_conversion(data)))
        return DecodedPhoto(image, image.size)
    raw = read_bytes(data) if isinstance(data, Path) else data
    image = open_header(raw, max_pixels)
    width, height = image.size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if draft_size and image.format in ("JPEG", "MPO"):
                image.draft(None, (draft_size, draft_size))
            image.load()
        turned = image.getexif().get(EXIF_ORIENTATION, 1) in QUARTER_TURNS  # loaded: no second decode
        image = shrink_for_conversion(image)
        upright = ImageOps.exif_transpose(image, in_place=True)  # our own image: no copy when already upright
        rgb = to_rgb(image if upright is None else upright)
    except Exception as exc:  # whatever a decoder raises is the file's fault, never a crash
        raise broken(exc) from None
    return DecodedPhoto(rgb, (height, width) if turned else (width, height))


def shrink_for_conversion(image: Image.Image) -> Image.Image:
    """A non-RGB image over WORK_PIXELS, shrunk by a whole factor in its own mode (16-bit stays
    16-bit, float stays float), so that converting it to RGB works on WORK_PIXELS at most. RGB images
    (every SCIN photo, nearly every upload) need no conversion and are returned as they are.

    Each output pixel is the mean of a factor x factor block (nearest neighbour for palette and
    1-bit images). The work goes in bands of rows, because Pillow resizes a transparent image
    through a premultiplied full-size copy: per band, that copy stays small."""
    width, height = image.size
    if image.mode == "RGB" or width * height <= WORK_PIXELS:
        return image
    factor = math.ceil(math.sqrt(width * height / WORK_PIXELS))
    size = (max(1, width // factor), max(1, height // factor))
    if image.mode in ("1", "P"):
        shrunk = image.resize(size, Image.Resampling.NEAREST)
    else:
        shrunk = Image.new(image.mode, size)
        band = factor * SHRINK_BAND_ROWS
        for top in range(0, size[1] * factor, band):
            rows = min(band, size[1] * factor - top)
            piece = image.crop((0, top, size[0] * factor, top + rows))
            shrunk.paste(piece.resize((size[0], rows // factor), Image.Resampling.BOX), (0, top // factor))
    shrunk.info = dict(image.info)
    exif = image.getexif()
    if exif:
        shrunk.info["exif"] = exif.tobytes()  # keeps the orientation for exif_transpose
    return shrunk


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is flattened onto white; 16-bit greys are scaled, not clipped.
    Big non-RGB images are shrunk first (`shrink_for_conversion`), so the float copies stay small."""
    if image.mode == "RGB":
        return image
    image = shrink_for_conversion(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        grey = np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_square(
    image: Image.Image, size: int, resample: int = Image.Resampling.BICUBIC, reducing_gap: float | None = None
) -> np.ndarray:
    """Squash-resize to size x size (SigLIP's training preprocessing: no crop), as HxWx3 uint8.

    `reducing_gap`: Pillow first shrinks by whole factors with a box filter while the image stays
    more than `reducing_gap` times the target, then resamples; None is the processor's exact path."""
    if image.size != (size, size):
        image = image.resize((size, size), resample=resample, reducing_gap=reducing_gap)
    return np.asarray(image, dtype=np.uint8)


FAST_REDUCING_GAP = 2.0  # chosen by benchmarks/bench_decode.py; tests bound the deviation it causes
FAST_DRAFT_FACTOR = 2  # JPEG: decode at reduced scale only down to twice the target size


def load_square(
    data: bytes | Path | Image.Image,
    size: int,
    resample: int = Image.Resampling.BICUBIC,
    fast: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode (safely, upright, RGB) and squash-resize in one go: the indexing hot path.

    `fast=False` is bit-identical to the checkpoint's processor; `fast=True` lets JPEGs decode at a
    reduced scale and big images shrink by a box filter first (a fraction of a grey level on average,
    bounded by tests), which is cheaper when the source is much larger than the target."""
    if not fast:
        return resize_square(open_rgb(data, max_pixels), size, resample)
    image = open_rgb(data, max_pixels, draft_size=FAST_DRAFT_FACTOR * size)
    return resize_square(image, size, resample, reducing_gap=FAST_REDUCING_GAP)
