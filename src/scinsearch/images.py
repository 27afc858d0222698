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

MAX_PIXELS = 64_000_000  # a 64-megapixel photo; SCIN's are about 0.9 MP. Larger is refused (decompression bombs).
MAX_FILE_BYTES = 64 * 1024 * 1024


class ImageError(ValueError):
    """An image that cannot be used; the message says why in a few words."""


def read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read an image file, refusing missing, empty and oversized files with a reason."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as exc:
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError("empty file")
    if size > limit:
        raise ImageError(f"file is {size / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from None


def open_rgb(data: bytes | Path | Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode to an upright RGB image: EXIF orientation applied, any mode converted, bombs refused."""
    if isinstance(data, Image.Image):
        return to_rgb(ImageOps.exif_transpose(data))
    raw = read_bytes(data) if isinstance(data, Path) else data
    if not raw:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image is {width}x{height} pixels (limit {max_pixels // 1_000_000} megapixels)")
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image is too large (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"broken image data ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return to_rgb(ImageOps.exif_transpose(image))


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


def resize_square(image: Image.Image, size: int, resample: int = Image.Resampling.BICUBIC) -> np.ndarray:
    """Squash-resize to size x size (SigLIP's training preprocessing: no crop), as HxWx3 uint8."""
    if image.size != (size, size):
        image = image.resize((size, size), resample=resample)
    return np.asarray(image, dtype=np.uint8)
