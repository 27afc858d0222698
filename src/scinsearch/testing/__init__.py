"""Test and benchmark scaffolding: offline stand-ins for what cannot be downloaded in CI.

Nothing here is needed for real data; the product never imports it (tests/test_layout.py checks that).
One module per job:

- `release`: `write_release` writes a small data set in the official SCIN layout, with the release's traps.
- `models`: `build_tiny_siglip`, `build_tiny_siglip2_fixres` and `build_tiny_siglip2` save tiny randomly
  initialised SigLIP, SigLIP 2 (fixed resolution) and SigLIP 2 NaFlex models with a real processor and
  tokenizer (`save_pretrained`), so the real loading code runs on them.
- `photos`: `condition_image` and `scin_sized_png`, photo-like pictures (the size of a SCIN image for benchmarks).
- `sabotage`: `SabotagedPreprocessor` kills or hangs the process that decodes chosen files.
- `planted`: vectors whose nearest-neighbour answer is known by construction, for evaluation and fine-tuning.
- `space`: `ClusteredSpace`, embeddings shaped like real ones (clusters of cases, a realistic cosine spread),
  for the store's scale benchmark and recall tests.

The test suite (tests/conftest.py) and benchmarks/ use these.
"""

from scinsearch.testing.models import (
    TINY_TOWER,
    build_tiny_siglip,
    build_tiny_siglip2,
    build_tiny_siglip2_fixres,
    train_sentencepiece,
)
from scinsearch.testing.photos import CONDITIONS, condition_image, png_bytes, scin_sized_png
from scinsearch.testing.planted import PlantedSpace, planted_points, text_vectors
from scinsearch.testing.release import MISSING_IMAGE, write_release, write_table
from scinsearch.testing.sabotage import SabotagedPreprocessor

__all__ = [
    "CONDITIONS",
    "MISSING_IMAGE",
    "TINY_TOWER",
    "PlantedSpace",
    "SabotagedPreprocessor",
    "build_tiny_siglip",
    "build_tiny_siglip2",
    "build_tiny_siglip2_fixres",
    "condition_image",
    "planted_points",
    "png_bytes",
    "scin_sized_png",
    "text_vectors",
    "train_sentencepiece",
    "write_release",
    "write_table",
]
