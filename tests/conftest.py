"""Shared fixtures: built once per session, offline, small (a tiny random SigLIP, a synthetic SCIN).

Also the spy embedder (simonw/llm style): it counts every image it embeds, so tests can prove that
nothing is embedded twice.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from scinsearch import testing
from scinsearch.embedding import Embedder, Preprocessor, collate
from scinsearch.settings import Settings
from scinsearch.store import open_store

logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    """A tiny random SigLIP (vision + text) with a real SentencePiece tokenizer, in a local folder."""
    return testing.build_tiny_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")


@pytest.fixture(scope="session")
def tiny_siglip2_fixres_dir(tmp_path_factory) -> Path:
    """A tiny random SigLIP 2 at a fixed resolution: SigLIP's architecture with Gemma's tokenizer."""
    return testing.build_tiny_siglip2_fixres(tmp_path_factory.mktemp("models") / "tiny-siglip2-fixres")


@pytest.fixture(scope="session")
def tiny_siglip2_dir(tmp_path_factory) -> Path:
    """A tiny random SigLIP 2 NaFlex model with its real processor."""
    return testing.build_tiny_siglip2(tmp_path_factory.mktemp("models") / "tiny-siglip2")


@pytest.fixture(scope="session")
def tiny_embedder(tiny_siglip_dir) -> Embedder:
    return Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def scin_release(tmp_path_factory) -> Path:
    """A synthetic release in the official layout, with the real release's traps and broken files.
    Read-only for tests: copy it before changing it."""
    return testing.write_release(tmp_path_factory.mktemp("scin") / "scin", cases=14)


@pytest.fixture(scope="session")
def clean_release(tmp_path_factory) -> Path:
    """A bigger synthetic release without broken files (for search and evaluation)."""
    return testing.write_release(tmp_path_factory.mktemp("scin-clean") / "scin", cases=40, broken_files=False)


class SpyEmbedder:
    """Stands in for `Embedder`: deterministic vectors from pixel colour, and a log of what it saw."""

    model_name = "spy-model"
    dim = 8
    precision_name = "fp32"

    def __init__(self):
        import torch

        self.device = torch.device("cpu")
        self.preprocessor = Preprocessor("fixed", 8, 3, 1 / 255, (0.5,) * 3, (0.5,) * 3)
        self.embedded_batches: list[int] = []
        self.fail_after: int | None = None

    @property
    def images_embedded(self) -> int:
        return sum(self.embedded_batches)

    def embed_batch(self, batch) -> np.ndarray:
        if self.fail_after is not None and self.images_embedded >= self.fail_after:
            raise KeyboardInterrupt  # simulates a run killed half way
        pixels = np.asarray(batch["pixels"], dtype=np.float32)
        self.embedded_batches.append(len(pixels))
        means = pixels.reshape(len(pixels), -1, 3).mean(axis=1) / 255.0
        vectors = np.concatenate([means, 1 - means, means[:, :2] * 0.5], axis=1) + 0.01
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def embed_images(self, images):
        from scinsearch.images import open_rgb

        return self.embed_batch(collate([self.preprocessor(open_rgb(i)) for i in images]))


@pytest.fixture
def spy_embedder() -> SpyEmbedder:
    return SpyEmbedder()


@pytest.fixture(params=["edge", "memory"])
def store_settings(request, tmp_path) -> Settings:
    """Every store test runs on both backends: Qdrant Edge and qdrant-client's `:memory:` mode
    (the same client code a server URL uses)."""
    if request.param == "edge":
        return Settings(qdrant_path=tmp_path / "qdrant", collection="test")
    return Settings(qdrant_location=":memory:", collection="test")


@pytest.fixture
def store(store_settings):
    opened = open_store(store_settings)
    yield opened
    opened.close()
