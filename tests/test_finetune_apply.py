"""Applying an adapter: a new collection of transformed vectors (the original untouched), queries through
the same adapter in `Searcher`, the service and the CLI, and every mismatch refused with one line."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from scinsearch.cli import main
from scinsearch.errors import ScinSearchError
from scinsearch.finetune.adapter import save_adapter, train_adapter
from scinsearch.finetune.apply import apply_adapter
from scinsearch.finetune.config import AdapterConfig
from scinsearch.photo_worker import PreparedPhoto
from scinsearch.search import Searcher
from scinsearch.search_filters import SearchOptions
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, open_store
from scinsearch.testing.planted import PlantedSpace, planted_points, planted_with_adapter
from scinsearch.vectors.adapter import Adapter
from scinsearch.vectors.neighbours import table_from_points

SPACE = PlantedSpace(seed=7)
MODEL = "planted-model"


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """An Edge store holding a planted collection, an adapter trained on it, and the points."""
    points = planted_points(SPACE, 160, seed=8)
    settings, adapter_dir = planted_with_adapter(
        tmp_path_factory.mktemp("apply"), points, AdapterConfig(rank=8, epochs=30), {"image_root": "/data/scin"}
    )
    return settings, adapter_dir, {p.id: p for p in points}


@pytest.fixture(scope="module")
def adapted(planted_store):
    settings, adapter_dir, _ = planted_store
    summary = apply_adapter(settings, Adapter.load(adapter_dir), "planted_adapted")
    return settings.replace(collection="planted_adapted", adapter=adapter_dir), summary


def stored(settings: Settings) -> tuple[CollectionInfo, dict]:
    store = open_store(settings)
    try:
        return store.info(), {p.id: p for p in store.scroll(with_vectors=True)}
    finally:
        store.close()


def test_apply_writes_a_new_collection_and_leaves_the_original_untouched(planted_store, adapted):
    settings, adapter_dir, points = planted_store
    adapted_settings, summary = adapted
    adapter = Adapter.load(adapter_dir)
    source_info, source = stored(settings)
    target_info, target = stored(adapted_settings)
    assert summary.points == len(points) == len(source) == len(target)
    for point_id, point in points.items():
        assert np.array_equal(source[point_id].vector, point.vector)  # original vectors unchanged
        assert source[point_id].payload == target[point_id].payload
        assert np.allclose(target[point_id].vector, adapter.transform(point.vector), atol=1e-6)
    assert "adapter_id" not in source_info.extra
    assert target_info.model == MODEL and target_info.dim == SPACE.dim
    assert target_info.extra["adapter_id"] == adapter.id and target_info.extra["adapted_from"] == "planted"
    assert target_info.extra["image_root"] == "/data/scin"  # the service still finds the images
    again = apply_adapter(settings, adapter, "planted_adapted")  # same adapter, same source: rewritten, allowed
    assert again.points == len(points)


def test_apply_refuses_what_would_change_or_mix_collections(planted_store, adapted, tmp_path):
    settings, adapter_dir, _ = planted_store
    adapter = Adapter.load(adapter_dir)
    other = open_store(settings.replace(collection="taken"))
    other.create(CollectionInfo(MODEL, SPACE.dim))
    other.close()
    cases = [
        (settings, "planted", "new collection"),
        (settings, "taken", "already exists"),
        (settings.replace(collection="planted_adapted"), "twice", "already holds adapted vectors"),
        (settings.replace(qdrant_path=tmp_path, collection="none"), "x", "does not exist"),
    ]
    for source, target, message in cases:
        with pytest.raises(ScinSearchError, match=message) as caught:
            apply_adapter(source, adapter, target)
        assert "\n" not in str(caught.value)
    apply_adapter(settings, adapter, "taken", recreate=True)
    assert stored(settings.replace(collection="taken"))[0].extra["adapter_id"] == adapter.id


class PlantedEmbedder:
    """Stands in for the model: the 'photo' is a planted vector, passed through as it is."""

    model_name = MODEL
    dim = SPACE.dim

    def embed_images(self, images):
        return np.stack([np.asarray(image, dtype=np.float32) for image in images])

    def embed_batch(self, batch):
        return np.asarray(batch["pixels"], dtype=np.float32)

    def embed_texts(self, texts):
        return np.stack([np.eye(self.dim, dtype=np.float32)[len(t) % self.dim] for t in texts])


class VectorSearcher(Searcher):
    def prepare_photo(self, image):
        """The planted 'photo' is a vector: nothing to decode, no photo checks."""
        return PreparedPhoto({"pixels": image}, [])


def test_queries_go_through_the_adapter(planted_store, adapted):
    _, adapter_dir, points = planted_store
    adapted_settings, _ = adapted
    adapter = Adapter.load(adapter_dir)
    _, target = stored(adapted_settings)
    ids = sorted(target)
    matrix = np.stack([target[i].vector for i in ids])
    query = np.random.default_rng(3).normal(size=SPACE.dim).astype(np.float32)
    with VectorSearcher(adapted_settings, embedder=PlantedEmbedder()) as searcher:
        result = searcher.search_image(query, options=SearchOptions(top_k=10, per_case=False))
        expected = [ids[i] for i in np.argsort(-(matrix @ adapter.transform(query)))[:10]]
        assert [n.image_id for n in result.results] == [target[i].payload["image_id"] for i in expected]
        assert result.query["adapter"] == adapter.id
        text = searcher.search_text("red ring", options=SearchOptions(top_k=3, per_case=False))
        text_query = adapter.transform_text(PlantedEmbedder().embed_texts(["red ring"]))[0]
        best = ids[int(np.argmax(matrix @ text_query))]
        assert text.results[0].image_id == target[best].payload["image_id"]
        with pytest.raises(ScinSearchError, match="zero-shot"):
            searcher.search_like(target[ids[0]].payload["image_id"], zero_shot=True)
        like = searcher.search_like(target[ids[0]].payload["image_id"], options=SearchOptions(top_k=3))
        assert like.results and all(n.image_id != target[ids[0]].payload["image_id"] for n in like.results)


def test_mismatches_between_collection_and_adapter_are_refused(planted_store, adapted, tmp_path):
    settings, adapter_dir, points = planted_store
    adapted_settings, _ = adapted
    trained = train_adapter(
        table_from_points(list(points.values())),
        model=MODEL,
        collection="planted",
        config=AdapterConfig(rank=8, epochs=3, seed=9),
    )
    other_dir = save_adapter(trained, tmp_path / "other")
    cases = [
        (adapted_settings.replace(adapter=None), "search it with --adapter"),
        (settings.replace(adapter=adapter_dir), "holds frozen vectors"),
        (adapted_settings.replace(adapter=other_dir), "was made by another adapter"),
    ]
    for case, message in cases:
        with pytest.raises(ScinSearchError, match=message) as caught:
            Searcher(case, embedder=PlantedEmbedder())
        assert "\n" not in str(caught.value)


def test_service_reports_and_uses_the_adapter(adapted, planted_store):
    from scinsearch.service import ServiceSettings, create_app

    adapted_settings, _ = adapted
    adapter = Adapter.load(planted_store[1])
    searcher = Searcher(adapted_settings, embedder=PlantedEmbedder())
    try:
        with TestClient(
            create_app(ServiceSettings(search=adapted_settings, warm_up=False), searcher=searcher),
            base_url="http://localhost",  # a host name the service answers (TestClient's testserver is not)
        ) as client:
            ready = client.get("/ready").json()
            assert ready["adapter"] == adapter.id and ready["collection"] == "planted_adapted"
            answer = client.post("/search/text", json={"text": "red ring", "top_k": 2})
            assert answer.status_code == 200 and answer.json()["query"]["adapter"] == adapter.id
    finally:
        searcher.close()


def test_cli_finetune_apply_and_search_refusals(planted_store, tmp_path, capsys):
    settings, _, points = planted_store
    store = ["--qdrant-path", str(settings.qdrant_path)]
    out = tmp_path / "cli-adapter"
    code = main(
        ["finetune", *store, "--collection", "planted", "--out", str(out), "--rank", "8", "--epochs", "5", "--quiet"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "wrote" in captured.out and "scinsearch evaluate" in captured.out and (out / "adapter.json").is_file()
    apply = ["finetune", "apply", *store, "--collection", "planted", "--adapter", str(out)]
    code = main([*apply, "--to-collection", "planted_cli", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"wrote {len(points)} adapted points" in captured.out and f"--adapter {out}" in captured.out
    for arguments, message in [
        (
            ["search", *store, "--collection", "planted_cli", "--like", "planted-0-0", "--model", MODEL],
            "search it with --adapter",
        ),
        ([*apply, "--to-collection", "planted"], "must name a new collection"),
        (["finetune", *store, "--collection", "planted_cli", "--out", str(tmp_path / "x")], "holds adapted vectors"),
        (
            ["finetune", *store, "--collection", "planted", "--out", str(tmp_path / "x"), "--resume"],
            "only apply to --method lora",
        ),
        (
            ["finetune", "--out", str(tmp_path / "x"), "apply", "--adapter", str(out), "--to-collection", "y"],
            "belong to training",
        ),
        (["finetune", *store, "--collection", "planted"], "--out is required"),
    ]:
        code = main(arguments)
        err = capsys.readouterr().err
        assert code == 1 and message in err and err.count("\n") == 1, (arguments, err)
