"""Image preprocessing matching a checkpoint's processor, apart from the model: it runs in decode
worker processes (the embed run's pool, the service's photo decoder), which need no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from scinsearch.images import (
    FAST_DRAFT_FACTOR,
    FAST_REDUCING_GAP,
    MAX_PIXELS,
    DecodedPhoto,
    decode_photo,
    load_square,
    resize_square,
)


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """Picklable image preprocessing matching the checkpoint's processor.

    Fixed-resolution SigLIP: squash-resize to a square with the processor's resample filter, kept as
    uint8 (4x less to pass between processes) and normalised on the model side. SigLIP 2 NaFlex:
    the checkpoint's own image processor (patches + mask + shapes), loaded lazily in each worker."""

    kind: str  # "fixed" or "naflex"
    image_size: int
    resample: int
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str = ""  # model id or folder, for the NaFlex processor
    fast: bool = False  # JPEG draft + box pre-shrink (within a tested tolerance of the processor); False = exact

    def __call__(self, image: Image.Image) -> dict[str, np.ndarray]:
        if self.kind == "fixed":
            reducing_gap = FAST_REDUCING_GAP if self.fast else None
            return {"pixels": resize_square(image, self.image_size, self.resample, reducing_gap=reducing_gap)}
        outputs = naflex_processor(self.source)(images=[image], return_tensors="np")
        return {key: np.asarray(value[0]) for key, value in outputs.items()}

    def load(self, source: bytes | Path | Image.Image) -> dict[str, np.ndarray]:
        """Decode a file (or bytes) and preprocess it: the decode worker's whole job for one image."""
        if self.kind == "fixed":
            return {"pixels": load_square(source, self.image_size, self.resample, fast=self.fast)}
        return self(decode_photo(source).image)

    def decode(self, source: bytes | Path | Image.Image, max_pixels: int = MAX_PIXELS) -> DecodedPhoto:
        """The decoding half of `load`, for a caller that also looks at the picture (the query photo's
        quality checks): `self(self.decode(source).image)` equals `self.load(source)`. One decode: the
        photo's size as taken comes from the same opening of the file."""
        draft = FAST_DRAFT_FACTOR * self.image_size if self.kind == "fixed" and self.fast else None
        return decode_photo(source, max_pixels, draft_size=draft)

    @property
    def mode(self) -> str:
        """'fast' or 'exact' (NaFlex is always the processor's own, so 'exact'): recorded with a collection."""
        return "fast" if self.fast else "exact"

    @property
    def cache_key(self) -> str | None:
        """What the stored pixels depend on (not the model): same key = reusable pixels. None = not cacheable."""
        if self.kind != "fixed":
            return None
        return f"square{self.image_size}-resample{self.resample}-{self.mode}"


_NAFLEX_CACHE: dict[str, object] = {}


def naflex_processor(source: str):
    if source not in _NAFLEX_CACHE:
        from transformers import AutoImageProcessor

        _NAFLEX_CACHE[source] = AutoImageProcessor.from_pretrained(source)
    return _NAFLEX_CACHE[source]


def collate(items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-image preprocessing outputs into one batch."""
    return {key: np.stack([item[key] for item in items]) for key in items[0]}
