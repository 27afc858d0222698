"""The embedding recipe of the scripts scinsearch replaces, kept as they wrote it: the yardstick of every
speed claim (docs/performance.md quotes our rate as a multiple of this one, measured in the same run).

For each batch of 32 files, in one process: `Image.open(path).convert("RGB")` for each file, the
checkpoint's processor on the list of images, `model.get_image_features(**inputs).pooler_output`
divided by its norm, copied back to the CPU. The model in fp32 (the scripts passed no dtype), on the
device the benchmark uses. Model loading is not timed, as it is not for ours. The scripts also wrote
to Qdrant; that is left out here, which can only flatter the old recipe.

Imports nothing beyond torch, transformers, Pillow and numpy (gpu_bench.py runs in such a venv).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OLD_BATCH_SIZE = 32
OLD_PRECISION = "fp32"


def old_model(vision_model, device: str | torch.device):
    """A `SiglipModel` whose vision tower holds a copy of `vision_model`'s weights, in fp32 on `device`,
    so the old recipe calls `get_image_features` exactly as the scripts did. Its text tower is a
    one-layer stand-in: `get_image_features` never touches it."""
    from transformers import SiglipConfig, SiglipModel

    vision = vision_model.config.to_dict()
    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4)
    with torch.device(device):
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    model.vision_model.load_state_dict(vision_model.state_dict())  # copies, converting to fp32
    return model.float().eval()


def old_processor(image_size: int):
    """The checkpoint's image processor as `AutoProcessor` loads it without torchvision (PIL backend)."""
    try:
        from transformers.models.siglip import SiglipImageProcessorPil as Processor  # transformers 5
    except ImportError:  # transformers 4: the PIL processor was the default one
        from transformers import SiglipImageProcessor as Processor

    return Processor(size={"height": image_size, "width": image_size})


@torch.no_grad()
def embed_files(model, processor, files: Sequence[Path], device, batch_size: int = OLD_BATCH_SIZE) -> np.ndarray:
    """The old scripts' loop, unchanged in substance: returns unit vectors, one row per file."""
    vectors = []
    for start in range(0, len(files), batch_size):
        images = [Image.open(path).convert("RGB") for path in files[start : start + batch_size]]
        inputs = processor(images=images, return_tensors="pt").to(device)
        output = model.get_image_features(**inputs)
        features = getattr(output, "pooler_output", output)  # transformers 4 returned the tensor itself
        features = features / features.norm(dim=-1, keepdim=True)
        vectors.append(features.cpu().numpy())
    return np.concatenate(vectors)


def timed_run(model, processor, files: Sequence[Path], device) -> tuple[float, np.ndarray]:
    """(images/s, vectors) of the old recipe over `files`, after one warm-up batch that is not timed."""
    embed_files(model, processor, files[: min(len(files), 2)], device)
    started = time.perf_counter()
    vectors = embed_files(model, processor, files, device)
    return len(files) / (time.perf_counter() - started), vectors


def agreement(ours: np.ndarray, old: np.ndarray) -> float:
    """Smallest cosine between our vector and the old recipe's for the same file (both are unit vectors):
    shows the two rows embed the same pictures with the same model."""
    return float(np.min(np.sum(ours.astype(np.float64) * old.astype(np.float64), axis=1)))
