"""Vectors against an independent reference: the plain transformers recipe the original scripts used.

The reference loads the checkpoint a second time, apart from `Embedder`, and does what
`embed_scin_siglip.py` did: `Image.open(p).convert("RGB")`, the checkpoint's own processor,
`get_image_features(...).pooler_output`, divided by its norm. Text: the tokenizer on the lower-cased
text, padded to 64 tokens, `get_text_features`. Every vector scinsearch makes (in memory, or read back
from the store after a real `scinsearch embed` on either backend) must point the same way: cosine >=
0.999 per image. The synthetic photos are plain RGB PNGs without EXIF, so the recipe's lack of EXIF
handling does not matter here.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scinsearch import embedding
from scinsearch.cli import main
from scinsearch.dataset import read_release
from scinsearch.embedding import Embedder
from scinsearch.settings import Settings
from scinsearch.store import open_store
from scinsearch.store.client import ClientStore

MIN_COSINE = 0.999
IMAGES = 10


def native_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return embedding.cpu_supports_bf16() or (cpuinfo.is_file() and "avx512_bf16" in cpuinfo.read_text())


needs_native_bf16 = pytest.mark.skipif(
    not native_bf16(),
    reason="this CPU has no native bf16 (no avx512_bf16 in /proc/cpuinfo): bf16 is only emulated here",
)
TEXTS = ["Itchy RED ring on the Arm", "a photo of Eczema", "dark raised bumpy patch on the leg"]


def reference_model(model_dir: Path, dtype: torch.dtype = torch.float32):
    """The checkpoint loaded the plain way, as a second, independent copy."""
    from transformers import AutoModel, AutoProcessor

    logging.getLogger("transformers").setLevel(logging.ERROR)
    return AutoModel.from_pretrained(model_dir, dtype=dtype).eval(), AutoProcessor.from_pretrained(model_dir)


def unit(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


def naflex_options(processor) -> dict:
    """Siglip2Processor's call defaults (16-pixel patches, 256 of them) override its image processor's
    saved config; they fit the real NaFlex checkpoints, not the tiny one, so the tiny one's are passed
    as a user passes `max_num_patches`."""
    image_processor = processor.image_processor
    if not hasattr(image_processor, "max_num_patches"):
        return {}
    return {"patch_size": image_processor.patch_size, "max_num_patches": image_processor.max_num_patches}


@torch.inference_mode()
def reference_image_vectors(model, processor, paths: list[Path]) -> np.ndarray:
    """One image at a time, exactly the old script's recipe (NaFlex: its processor's patches, mask, shapes)."""
    vectors, options = [], naflex_options(processor)
    for path in paths:
        inputs = processor(images=[Image.open(path).convert("RGB")], return_tensors="pt", **options)
        inputs = {k: v.to(model.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        vectors.append(unit(model.get_image_features(**inputs).pooler_output)[0])
    return np.stack(vectors)


@torch.inference_mode()
def reference_text_vectors(model, processor, texts: list[str], lower: bool = True, padding="max_length"):
    tokens = processor.tokenizer(
        [t.lower() if lower else t for t in texts], padding=padding, max_length=64, return_tensors="pt"
    )
    return unit(model.get_text_features(input_ids=tokens["input_ids"]).pooler_output)


def cosines(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    return np.sum(ours * theirs, axis=1)


def assert_same_directions(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape and len(ours) > 0
    found = cosines(ours, theirs)
    assert found.min() >= MIN_COSINE, f"cosines per image: {np.round(found, 5).tolist()}"


@pytest.fixture(scope="module")
def image_paths(clean_release) -> list[Path]:
    return [record.file for record in read_release(clean_release).records[:IMAGES]]


@pytest.fixture(scope="module")
def model_dirs(tiny_siglip_dir, tiny_siglip2_fixres_dir, tiny_siglip2_dir) -> dict[str, Path]:
    return {"siglip": tiny_siglip_dir, "siglip2-fixres": tiny_siglip2_fixres_dir, "siglip2-naflex": tiny_siglip2_dir}


@pytest.fixture(scope="module")
def references(model_dirs, image_paths) -> dict[str, dict[Path, np.ndarray]]:
    """fp32 reference vectors of the test images, per model and image file (computed once per module)."""
    found = {}
    for name, folder in model_dirs.items():
        found[name] = dict(zip(image_paths, reference_image_vectors(*reference_model(folder), image_paths)))
    return found


def expected_for(references: dict[Path, np.ndarray], paths: list[Path]) -> np.ndarray:
    assert set(paths) == set(references), "the run embedded other images than the reference's"
    return np.stack([references[path] for path in paths])


# In memory: preprocessing modes, precisions, the three model kinds ------------------------------------------


@pytest.mark.parametrize("model", ["siglip", "siglip2-fixres", "siglip2-naflex"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "exact"])
def test_image_vectors_match_the_plain_recipe(model, fast, model_dirs, references, image_paths):
    embedder = Embedder(str(model_dirs[model]), device="cpu", precision="fp32", fast_preprocessing=fast)
    assert embedder.preprocessor.kind == ("naflex" if model == "siglip2-naflex" else "fixed")
    assert_same_directions(embedder.embed_images(image_paths), expected_for(references[model], image_paths))


@needs_native_bf16
@pytest.mark.parametrize("model", ["siglip", "siglip2-fixres", "siglip2-naflex"])
def test_bf16_image_vectors_match_the_fp32_recipe(model, model_dirs, references, image_paths):
    """bf16 (the CPU default where it is native) against the old scripts' fp32 recipe (on an emulating CPU
    the tiny models reach cosines >= 0.9999)."""
    embedder = Embedder(str(model_dirs[model]), device="cpu", precision="bf16")
    assert embedder.dtype == torch.bfloat16
    assert_same_directions(embedder.embed_images(image_paths), expected_for(references[model], image_paths))


@pytest.mark.parametrize("model", ["siglip", "siglip2-fixres", "siglip2-naflex"])
def test_text_vectors_match_the_plain_recipe(model, model_dirs):
    embedder = Embedder(str(model_dirs[model]), device="cpu", precision="fp32")
    reference, processor = reference_model(model_dirs[model])
    assert_same_directions(embedder.embed_texts(TEXTS), reference_text_vectors(reference, processor, TEXTS))


def test_the_text_reference_can_tell_casing_and_padding_apart(model_dirs):
    """The comparison above would catch an embedder that forgot to lower-case or to pad to 64 tokens.
    (SigLIP 2's Gemma tokenizer keeps capitals; SigLIP's own tokenizer lower-cases by itself.)"""
    for model in ("siglip", "siglip2-fixres"):
        reference, processor = reference_model(model_dirs[model])
        expected = reference_text_vectors(reference, processor, TEXTS)
        shortest = reference_text_vectors(reference, processor, TEXTS, padding="longest")
        assert cosines(shortest, expected).max() < MIN_COSINE, model
    unlowered = reference_text_vectors(reference, processor, TEXTS, lower=False)
    assert cosines(unlowered, expected)[:2].max() < MIN_COSINE  # the two texts with capitals


# Read back from the store after a real `scinsearch embed` -------------------------------------------------


@pytest.fixture
def kept_open(monkeypatch) -> list[ClientStore]:
    """qdrant-client's `:memory:` store vanishes when closed: keep the one `embed` opened, to read it back."""
    opened: list[ClientStore] = []
    monkeypatch.setattr(ClientStore, "close", lambda self: opened.append(self))
    return opened


def embed_command(release: Path, model_dir: Path, backend: list[str], workers: int, *extra: str) -> None:
    arguments = ["embed", "--scin-dir", release, "--model", model_dir, "--device", "cpu", "--precision", "fp32"]
    arguments += [*backend, "--collection", "ref", "--workers", workers, "--limit", IMAGES, "--quiet", *extra]
    assert main([str(a) for a in arguments]) == 0


def stored_vectors_by_path(store, release: Path) -> tuple[list[Path], np.ndarray]:
    points = list(store.scroll(with_vectors=True))
    return [release / p.payload["image_path"] for p in points], np.stack([p.vector for p in points])


@pytest.mark.parametrize("backend", ["edge", "memory"])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("model", ["siglip", "siglip2-naflex"])
def test_vectors_stored_by_the_embed_command_match_the_plain_recipe(
    backend, workers, model, model_dirs, references, clean_release, tmp_path, kept_open, capsys
):
    flags = ["--qdrant-path", tmp_path / "q"] if backend == "edge" else ["--qdrant-url", ":memory:"]
    embed_command(clean_release, model_dirs[model], flags, workers)
    assert re.search(rf"embedded {IMAGES}, already present 0, failed 0", capsys.readouterr().out)
    store = kept_open[0] if backend == "memory" else open_store(Settings(qdrant_path=tmp_path / "q", collection="ref"))
    try:
        paths, ours = stored_vectors_by_path(store, clean_release)
    finally:
        store.close() if backend == "edge" else store.client.close()
    assert_same_directions(ours, expected_for(references[model], paths))


def test_exact_preprocessing_through_the_embed_command_matches_too(
    model_dirs, references, clean_release, tmp_path, capsys
):
    embed_command(
        clean_release, model_dirs["siglip2-fixres"], ["--qdrant-path", tmp_path / "q"], 2, "--exact-preprocessing"
    )
    capsys.readouterr()
    store = open_store(Settings(qdrant_path=tmp_path / "q", collection="ref"))
    try:
        assert store.info().preprocessing == "exact"
        paths, ours = stored_vectors_by_path(store, clean_release)
    finally:
        store.close()
    assert_same_directions(ours, expected_for(references["siglip2-fixres"], paths))
