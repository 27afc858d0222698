"""Photo-like pictures whose colour is set by the condition (so similar cases look similar), and SCIN-sized
PNGs for benchmarks."""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image

CONDITIONS = [
    "Eczema",
    "Allergic Contact Dermatitis",
    "Urticaria",
    "Insect Bite",
    "Psoriasis",
    "Tinea",
    "Acute dermatitis, NOS",
    "Abrasion, scrape, or scab",
]
CONDITION_COLOURS = {
    name: ((37 * i) % 256, (91 * i + 40) % 256, (151 * i + 80) % 256) for i, name in enumerate(CONDITIONS)
}


def condition_image(condition: str | None, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A photo-like picture whose colour is set by the condition, so similar cases look similar."""
    base = np.array(CONDITION_COLOURS.get(condition, (128, 128, 128)), dtype=np.float32)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = (0.75 + 0.25 * np.sin(xx / (17 + rng.random() * 9)) * np.cos(yy / (23 + rng.random() * 9)))[..., None]
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 12, (height, width, 3))
    pixels = np.clip(base * shade + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    condition_image(CONDITIONS[0], size, random.Random(1)).save(buffer, format="PNG")
    return buffer.getvalue()


def scin_sized_png(seed: int = 0, size: tuple[int, int] = (810, 1080)) -> bytes:
    """A photo-like PNG the size of a SCIN image (about 810x1080, ~1 MB), for benchmarks."""
    buffer = io.BytesIO()
    condition_image(CONDITIONS[seed % len(CONDITIONS)], size, random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()
