"""Open untrusted images safely: any file or upload becomes an upright RGB picture, or a clear reason.

Used both when indexing SCIN files and when a health worker uploads a photo, so that a query is
preprocessed exactly like the images it is compared with (EXIF orientation included).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scinsearch.errors import BROKEN_IMAGE, EMPTY_UPLOAD, IMAGE_TOO_LARGE, NOT_AN_IMAGE, NOT_FOUND

MAX_PIXELS = 64_000_000  # a 64-megapixel photo; SCIN's are about 0.9 MP. Larger is refused (decompression bombs).
MAX_FILE_BYTES = 64 * 1024 * 1024


class ImageError(ValueError):
    """An image that cannot be used; the message says why in a few words, `code` which kind of failure
    (one of scinsearch.errors' codes)."""

    def __init__(self, message: str, code: str = BROKEN_IMAGE):
        super().__init__(message)
        self.code = code


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


def open_rgb(
    data: bytes | Path | Image.Image, max_pixels: int = MAX_PIXELS, draft_size: int | None = None
) -> Image.Image:
    """Decode to an upright RGB image: EXIF orientation applied, any mode converted, bombs refused.

    `draft_size`: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) as long as
    both sides stay at least `draft_size` pixels; other formats ignore it."""
    if isinstance(data, Image.Image):
        return to_rgb(ImageOps.exif_transpose(data))
    raw = read_bytes(data) if isinstance(data, Path) else data
    if not raw:
        raise ImageError("empty file", EMPTY_UPLOAD)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image is {width}x{height} pixels (limit {max_pixels // 1_000_000} megapixels)", IMAGE_TOO_LARGE
                )
            if draft_size and image.format == "JPEG":
                image.draft(None, (draft_size, draft_size))
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image file", NOT_AN_IMAGE) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image is too large (decompression bomb guard)", IMAGE_TOO_LARGE) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            f"broken image data ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    upright = ImageOps.exif_transpose(image, in_place=True)  # our own image: no copy when already upright
    return to_rgb(image if upright is None else upright)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is flattened onto white; 16-bit greys are scaled, not clipped."""
    if image.mode == "RGB":
        return image
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
