"""The SigLIP checkpoints scinsearch knows, with their architecture (open_clip-style registry).

Any SigLIP or SigLIP 2 checkpoint (hub id or local folder) loads; this table documents the common
ones and lets benchmarks build the real architectures with random weights (no download needed).
"""

from __future__ import annotations

import dataclasses
import difflib


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    model_id: str
    family: str  # "siglip" (fixed square input) or "siglip2-naflex" (aspect-preserving patches)
    image_size: int
    patch_size: int
    dim: int
    vision: dict  # SiglipVisionConfig arguments of the vision tower
    note: str = ""


BASE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
LARGE = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)

KNOWN_MODELS = {
    info.model_id: info
    for info in [
        ModelInfo("google/siglip-base-patch16-224", "siglip", 224, 16, 768, BASE, "default; 35 GFLOP per image"),
        ModelInfo("google/siglip-base-patch16-256", "siglip", 256, 16, 768, BASE),
        ModelInfo("google/siglip-base-patch16-384", "siglip", 384, 16, 768, BASE),
        ModelInfo("google/siglip-large-patch16-384", "siglip", 384, 16, 1024, LARGE, "11x the base cost"),
        ModelInfo("google/siglip-so400m-patch14-224", "siglip", 224, 14, 1152, SO400M),
        ModelInfo("google/siglip-so400m-patch14-384", "siglip", 384, 14, 1152, SO400M, "19x the base cost"),
        ModelInfo("google/siglip2-base-patch16-224", "siglip", 224, 16, 768, BASE, "SigLIP 2, Gemma tokenizer"),
        ModelInfo("google/siglip2-base-patch32-256", "siglip", 256, 32, 768, BASE, "SigLIP 2, cheapest (11 GFLOP)"),
        ModelInfo("google/siglip2-so400m-patch14-384", "siglip", 384, 14, 1152, SO400M, "SigLIP 2"),
        ModelInfo(
            "google/siglip2-base-patch16-naflex",
            "siglip2-naflex",
            256,
            16,
            768,
            BASE,
            "SigLIP 2 NaFlex: keeps the aspect ratio (256 patches)",
        ),
        ModelInfo(
            "google/medsiglip-448",
            "siglip",
            448,
            14,
            1152,
            SO400M,
            "gated (HAI-DEF terms); trained on SCIN, so not a clean SCIN evaluation",
        ),
    ]
}


def closest_models(name: str, count: int = 3) -> list[str]:
    """The known checkpoints whose names are nearest to `name` (a typo'd hub id or a folder named after
    one), by the last part of the name: what an error suggests instead."""
    by_tail = {model_id.rsplit("/", 1)[-1]: model_id for model_id in KNOWN_MODELS}
    tail = str(name).rstrip("/").rsplit("/", 1)[-1]
    return [by_tail[match] for match in difflib.get_close_matches(tail, by_tail, n=count, cutoff=0.6)]


def random_vision_model(model_id: str):
    """The real vision architecture of a known model, randomly initialised (for throughput only)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    info = KNOWN_MODELS[model_id]
    if info.family != "siglip":
        raise ValueError(f"{model_id}: only fixed-resolution SigLIP architectures are built at random")
    config = SiglipVisionConfig(image_size=info.image_size, patch_size=info.patch_size, **info.vision)
    return SiglipVisionModel(config).eval()
