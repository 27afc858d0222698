"""The store interface: the same tests on Qdrant Edge and on qdrant-client's ':memory:' mode."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from scinsearch.errors import ScinSearchError, StoreLockedError
from scinsearch.schema import point_id_for
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, Filter, Match, Range, StoredPoint, VectorStore, check_model, open_store
from scinsearch.store.client import ClientStore
from scinsearch.store.edge import EdgeStore


def points(n: int = 12, dim: int = 4) -> list[StoredPoint]:
    rng = np.random.default_rng(0)
    result = []
    for i in range(n):
        vector = rng.normal(size=dim).astype(np.float32)
        result.append(
            StoredPoint(
                point_id_for(f"img{i}"),
                {
                    "image_id": f"img{i}",
                    "case_id": f"case{i // 2}",
                    "case_ids": [f"case{i // 2}"],
                    "fitzpatrick_skin_type": f"FST{i % 6 + 1}",
                    "body_parts": ["arm", "leg"] if i % 2 else ["arm"],
                    "monk_skin_tone_label_us": i % 10 + 1,
                    "gradable": i % 3 != 0,
                    "split": "train",
                    "weighted_labels": {"Eczema": 1.0},
                    "optional": None,
                },
                vector / np.linalg.norm(vector),
            )
        )
    return result


@pytest.fixture
def filled(store):
    store.create(CollectionInfo("model-a", 4, {"image_root": "/data"}))
    store.upsert(points())
    store.finish_writes()
    return store


def test_collection_records_its_model(filled):
    info = filled.info()
    assert (info.model, info.dim, info.extra["image_root"]) == ("model-a", 4, "/data")
    assert check_model(filled, "model-a", 4).model == "model-a"
    with pytest.raises(ScinSearchError, match="not of 'model-b'"):
        check_model(filled, "model-b")


def test_missing_collection_has_no_info(store):
    assert store.info() is None
    with pytest.raises(ScinSearchError, match="scinsearch embed"):
        check_model(store, "model-a")


def test_upsert_is_idempotent_and_existing_ids(filled):
    filled.upsert(points())
    assert filled.count() == 12
    ids = [point_id_for("img3"), point_id_for("nope")]
    assert filled.existing_ids(ids) == {point_id_for("img3")}


def test_query_returns_nearest_with_payload_and_scores(filled):
    target = points()[5]
    hits = filled.query(target.vector, limit=3, with_vectors=True)
    assert hits[0].id == target.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].payload["weighted_labels"] == {"Eczema": 1.0} and hits[0].vector.shape == (4,)
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)


@pytest.mark.parametrize(
    "filter, expected",
    [
        (Filter(must=(Match("fitzpatrick_skin_type", ("FST5", "FST6")),)), {4, 5, 10, 11}),
        (Filter(must=(Match("body_parts", ("leg",)),)), {1, 3, 5, 7, 9, 11}),
        (Filter(must=(Range("monk_skin_tone_label_us", gte=3, lte=4),)), {2, 3}),
        (
            Filter(must=(Match("gradable", (True,)),), must_not=(Match("case_ids", ("case1",)),)),
            {1, 4, 5, 7, 8, 10, 11},
        ),
    ],
)
def test_filters_mean_the_same_on_both_backends(filled, filter, expected):
    hits = filled.query(points()[0].vector, limit=20, filter=filter)
    assert {int(h.payload["image_id"][3:]) for h in hits} == expected
    assert filled.count(filter) == len(expected)


def test_min_score_and_retrieve_and_scroll(filled):
    target = points()[2]
    assert all(h.score >= 0.5 for h in filled.query(target.vector, limit=12, min_score=0.5))
    (stored,) = filled.retrieve([target.id, "not-a-uuid"], with_vectors=True)
    np.testing.assert_allclose(stored.vector, target.vector, atol=1e-6)
    assert len(list(filled.scroll(page=5))) == 12


def test_recreate_starts_over(filled):
    filled.create(CollectionInfo("model-b", 4), recreate=True)
    assert filled.count() == 0 and filled.info().model == "model-b"


def test_embedded_store_persists_and_allows_one_process(tmp_path):
    settings = Settings(qdrant_path=tmp_path / "q", collection="c")
    store = open_store(settings)
    store.create(CollectionInfo("model-a", 4))
    store.upsert(points())
    store.finish_writes()
    script = textwrap.dedent(f"""
        from pathlib import Path
        from scinsearch.cli import main
        raise SystemExit(main(["info", "--qdrant-path", {str(tmp_path / "q")!r}, "--collection", "c"]))
    """)
    # another process, on purpose: the lock is an OS lock between processes
    blocked = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert blocked.returncode == 1
    assert "open in another process" in blocked.stderr and "--qdrant-url" in blocked.stderr
    assert "Traceback" not in blocked.stderr
    store.close()
    reopened = open_store(settings)
    assert reopened.count() == 12 and reopened.info().model == "model-a"
    reopened.close()


def test_same_process_second_open_is_refused_too(tmp_path):
    settings = Settings(qdrant_path=tmp_path / "q", collection="c")
    first = open_store(settings)
    first.create(CollectionInfo("m", 4))
    started = time.monotonic()
    with pytest.raises(StoreLockedError):
        open_store(settings)
    # at once: the lock is tried once, not retried for portalocker's default 5 s (a store held by a running
    # service stays held, so waiting only delays the message)
    assert time.monotonic() - started < 2
    first.close()


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", ""])
def test_bad_collection_names(tmp_path, name):
    with pytest.raises(ScinSearchError, match="invalid collection name"):
        open_store(Settings(qdrant_path=tmp_path, collection=name))


# The interface and its two implementations ----------------------------------------------------------------


@pytest.mark.parametrize("backend", [EdgeStore, ClientStore])
def test_backends_implement_the_whole_interface(backend):
    assert issubclass(backend, VectorStore) and not backend.__abstractmethods__
    methods = [name for name, value in vars(VectorStore).items() if inspect.isfunction(value)]
    assert {"info", "create", "upsert", "query", "retrieve", "scroll", "count", "existing_ids"} <= set(methods)
    for name in methods:
        assert inspect.signature(getattr(backend, name)) == inspect.signature(getattr(VectorStore, name)), name


def test_backends_do_not_import_each_other():
    """base <- edge, base <- client; neither backend imports the other or the package's factory."""
    folder = Path(__file__).parent.parent / "src" / "scinsearch" / "store"
    for module, other in (("edge", "client"), ("client", "edge"), ("base", "edge"), ("base", "client")):
        tree = ast.parse((folder / f"{module}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert f"scinsearch.store.{other}" not in imported and "scinsearch.store" not in imported, module


def test_collection_info_answers_same_space_and_reads_the_record_keys():
    info = CollectionInfo.from_metadata(
        {"scinsearch_model": "m", "scinsearch_dim": 4, "image_root": "/data", "adapter_id": "abc", "adapted_from": "c"}
    )
    assert info.same_space("m", 4) and info.same_space("m") and info.same_space("m", np.int64(4))
    assert not info.same_space("m", 8) and not info.same_space("other", 4)
    assert (info.image_root, info.adapter_id, info.adapted_from, info.adapter_dir) == ("/data", "abc", "c", None)
    assert CollectionInfo("m", 4).calibration_document is None and CollectionInfo("m", 4).adapter_id is None


def test_collection_records_its_preprocessing(store):
    store.create(CollectionInfo("model-a", 4, {"image_root": "/data"}, preprocessing="exact"))
    info = store.info()
    assert (info.preprocessing, info.extra) == ("exact", {"image_root": "/data"})
    older = CollectionInfo.from_metadata({"scinsearch_model": "model-a", "scinsearch_dim": 4, "image_root": "/x"})
    assert (older.preprocessing, older.extra) == ("fast", {"image_root": "/x"})
