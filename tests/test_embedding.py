"""The embedder: same pixels as the checkpoint's processor, CPU choices made automatically, compile safe."""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from scinsearch import embedding, testing
from scinsearch.embedding import Embedder, Preprocessor, collate
from scinsearch.errors import ScinSearchError

FAST_MEAN_LIMIT = 0.6 / 127.5  # the tolerance of tests/test_images.py, in the model's [-1, 1] units
FAST_MAX_LIMIT = 5 / 127.5


def photo(size=(200, 260), seed=0) -> Image.Image:
    return testing.condition_image(testing.CONDITIONS[seed % 8], size, random.Random(seed))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def our_pixel_values(embedder: Embedder, images) -> np.ndarray:
    batch = collate([embedder.preprocessor.load(png(image)) for image in images])
    return embedder.model_inputs(batch)["pixel_values"].float().numpy()


def processor_pixel_values(embedder: Embedder, images) -> np.ndarray:
    return embedder.processor.image_processor(images=images, return_tensors="np")["pixel_values"]


@pytest.fixture(scope="module")
def exact_embedder(tiny_siglip_dir) -> Embedder:
    return Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", fast_preprocessing=False)


def test_exact_preprocessing_equals_the_processor(exact_embedder):
    images = [photo(seed=s) for s in range(3)]
    ours, theirs = our_pixel_values(exact_embedder, images), processor_pixel_values(exact_embedder, images)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_default_fast_preprocessing_is_within_tolerance_of_the_processor(tiny_embedder):
    assert tiny_embedder.preprocessor.fast
    images = [photo(seed=s) for s in range(3)]
    diff = np.abs(our_pixel_values(tiny_embedder, images) - processor_pixel_values(tiny_embedder, images))
    assert diff.mean() <= FAST_MEAN_LIMIT and diff.max() <= FAST_MAX_LIMIT, (diff.mean() * 127.5, diff.max() * 127.5)


def test_embeddings_equal_the_models_own_on_processor_inputs(exact_embedder):
    images = [photo(seed=s) for s in range(2)]
    inputs = exact_embedder.processor(images=images, return_tensors="pt")
    with torch.inference_mode():
        output = exact_embedder.model.get_image_features(pixel_values=inputs["pixel_values"])
    expected = torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1).numpy()
    np.testing.assert_allclose(exact_embedder.embed_images([png(i) for i in images]), expected, atol=1e-5)


def test_query_photo_of_any_kind_is_accepted(tiny_embedder, tmp_path):
    path = tmp_path / "photo.png"
    photo().save(path)
    vectors = tiny_embedder.embed_images([path, png(photo(seed=1)), photo(seed=2).convert("RGBA")])
    assert vectors.shape == (3, tiny_embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_auto_precision_is_fp32_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(embedding, "cpu_supports_bf16", lambda: False)
    assert embedding.resolve_precision("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(embedding, "cpu_supports_bf16", lambda: True)
    assert embedding.resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ScinSearchError, match="fp16"):
        embedding.resolve_precision("fp16", torch.device("cpu"))


def test_compile_is_automatic_only_for_long_cpu_runs(tiny_siglip_dir, monkeypatch):
    monkeypatch.setattr(embedding, "compiler_available", lambda: True)
    auto = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32")
    assert not auto.should_compile(10) and auto.should_compile(embedding.COMPILE_MIN_IMAGES)
    monkeypatch.setattr(embedding, "compiler_available", lambda: False)
    assert not auto.should_compile(100_000)  # no C++ compiler: eager, silently
    assert not Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="off").should_compile(100_000)
    assert Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="on").should_compile(1)
    with pytest.raises(ScinSearchError, match="compile"):
        Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="sometimes")


def test_compile_failure_falls_back_to_eager(tiny_siglip_dir, monkeypatch):
    embedder = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="on")

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no working C++ compiler\nmore detail")

    monkeypatch.setattr(torch, "compile", broken_compile)
    note = embedder.prepare(batch_size=4, images=10)
    assert "failed" in note and "no working C++ compiler" in note and not embedder.compiled
    assert embedder.embed_images([png(photo())]).shape == (1, embedder.dim)


def test_compiled_tower_pads_short_batches_and_splits_long_ones(tiny_siglip_dir):
    """The compiled tower has one static batch size; stand in for it with the eager tower and a shape log."""
    embedder = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="off")
    side = embedder.preprocessor.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (7, side, side, 3), dtype=np.uint8)
    expected = embedder.embed_batch({"pixels": pixels})
    shapes = []

    def fixed_size_tower(pixel_values):
        shapes.append(tuple(pixel_values.shape))
        return embedder.image_tower(pixel_values)

    embedder._compiled, embedder._compiled_batch = fixed_size_tower, 4
    assert embedder.compiled
    np.testing.assert_allclose(embedder.embed_batch({"pixels": pixels}), expected, atol=1e-5)
    assert shapes == [(4, 3, side, side), (4, 3, side, side)]
    np.testing.assert_allclose(embedder.embed_batch({"pixels": pixels[:1]}), expected[:1], atol=1e-5)


def test_compiled_tower_is_used_matches_eager_and_compiles_once(tiny_siglip_dir, monkeypatch):
    """Always runs: torch.compile for real (dynamo captures the tower's graph for the run's batch size),
    with the aot_eager backend standing in for inductor, whose C++ code generation takes 20-120 s on
    2 cores (the opt-in test below)."""
    from torch._dynamo.utils import counters

    from scinsearch import compiling

    monkeypatch.setattr(compiling, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    embedder = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="on")
    side = embedder.preprocessor.image_size
    pixels = np.random.default_rng(1).integers(0, 256, (7, side, side, 3), dtype=np.uint8)
    expected = embedder.embed_batch({"pixels": pixels})  # eager: nothing compiled yet
    note = embedder.prepare(batch_size=4, images=7)
    assert embedder.compiled and "compiled the image tower for batches of 4" in note, note
    assert counters["stats"]["unique_graphs"] == 1
    compiled, shapes = embedder._compiled, []
    embedder._compiled = lambda chunk: shapes.append(tuple(chunk.shape)) or compiled(chunk)
    np.testing.assert_allclose(embedder.embed_batch({"pixels": pixels}), expected, atol=1e-5)
    assert shapes == [(4, 3, side, side)] * 2  # a full batch, then the short one padded: both compiled
    assert counters["stats"]["unique_graphs"] == 1, "the padded last batch compiled the tower a second time"


@pytest.mark.skipif(
    not os.environ.get("SCINSEARCH_SLOW_TESTS"),
    reason="compiling takes 20-90 s on 2 cores: set SCINSEARCH_SLOW_TESTS=1",
)
def test_real_compile_matches_eager(tiny_siglip_dir):
    """torch.compile (inductor, frozen weights) on the tiny model: same vectors as eager."""
    if not embedding.compiler_available():
        pytest.skip("no C++ compiler for inductor")
    embedder = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="on")
    side = embedder.preprocessor.image_size
    pixels = np.random.default_rng(1).integers(0, 256, (3, side, side, 3), dtype=np.uint8)
    expected = embedder.embed_batch({"pixels": pixels})
    note = embedder.prepare(batch_size=4, images=3)
    assert embedder.compiled, note
    np.testing.assert_allclose(embedder.embed_batch({"pixels": pixels}), expected, atol=1e-4)
    assert "compiled" in embedder.describe()


def test_a_vision_only_model_embeds_images_but_not_text():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(**testing.TINY_TOWER, image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = SiglipVisionModel(config).eval()
    preprocessor = Preprocessor("fixed", 32, 3, 1 / 255, (0.5,) * 3, (0.5,) * 3)
    embedder = Embedder.from_model(model, preprocessor, "random-vision", device="cpu", precision="fp32")
    assert embedder.dim == 32 and embedder.model_name == "random-vision"
    vectors = embedder.embed_images([png(photo())])
    assert vectors.shape == (1, 32)
    with pytest.raises(ScinSearchError, match="image"):
        embedder.embed_texts(["a rash"])


def test_preprocessor_cache_key_names_what_the_pixels_depend_on(tiny_embedder, exact_embedder, tiny_siglip2_dir):
    assert tiny_embedder.preprocessor.cache_key == "square32-resample3-fast"
    assert exact_embedder.preprocessor.cache_key == "square32-resample3-exact"
    naflex = Embedder(str(tiny_siglip2_dir), device="cpu", precision="fp32")
    assert naflex.preprocessor.cache_key is None and not naflex.should_compile(100_000)


def test_a_collection_recording_unknown_preprocessing_is_a_clear_error():
    """The store's metadata is untrusted: an unknown mode is refused before the model is loaded."""
    from scinsearch.settings import Settings
    from scinsearch.store import CollectionInfo

    with pytest.raises(ScinSearchError, match="unknown preprocessing 'weird'"):
        Embedder.from_settings(Settings(model="never-loaded"), CollectionInfo("never-loaded", 8, preprocessing="weird"))
