"""The store settings that the scale benchmark chose (benchmarks/bench_scale.py, docs/performance.md):
Qdrant Edge applies the index options to a new shard, and the kiosk query (top 10, one per case) on an
int8-quantised HNSW collection, rescored on the originals, still finds what exact search finds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from scinsearch import rules
from scinsearch.search import Searcher
from scinsearch.search_filters import SearchFilters, SearchOptions
from scinsearch.settings import ServerOptions, Settings
from scinsearch.store import CollectionInfo, Filter, StoredPoint, open_store
from scinsearch.store.edge import EdgeStore
from scinsearch.testing.space import ClusteredSpace, cosine_spread

SKIN_TYPES = ("FST1", "FST2", "FST3", "FST4", "FST5", "FST6")


def clustered_points(count: int, dim: int, seed: int = 0):
    space = ClusteredSpace(dim=dim, clusters=40, seed=seed)
    vectors, cases = space.points(count)
    payloads = [
        {"image_id": str(i), "case_ids": [str(c)], "fitzpatrick_skin_type": SKIN_TYPES[c % 6]}
        for i, c in enumerate(cases.tolist())
    ]
    points = [StoredPoint(f"00000000-0000-0000-0000-{i:012d}", p, v) for i, (p, v) in enumerate(zip(payloads, vectors))]
    return space, vectors, payloads, points


def exact_kiosk_answer(vectors, payloads, query, allowed: set | None) -> list[str]:
    """numpy's answer to the kiosk query: best first, within the filter, one image per case, top 10."""
    order = [int(i) for i in np.argsort(-(vectors @ query), kind="stable")]
    if allowed is not None:
        order = [i for i in order if payloads[i]["fitzpatrick_skin_type"] in allowed]
    kept = rules.one_per_case([payloads[i]["case_ids"] for i in order[:200]], 10)
    return [payloads[order[i]]["image_id"] for i in kept]


def test_the_generated_space_has_a_realistic_spread():
    _, vectors, payloads, _ = clustered_points(2000, 64)
    cases = np.array([int(p["case_ids"][0]) for p in payloads])
    spread = cosine_spread(vectors, cases)
    assert 0.15 < spread["mean"] < 0.45, spread  # unrelated images: not orthogonal, not alike
    assert spread["p95"] > spread["p5"] + 0.1, spread  # a spread, not one value
    assert spread["nearest_other_case_p50"] > spread["p95"], spread  # neighbours stand out


def test_edge_applies_the_index_options_to_a_new_shard(tmp_path):
    settings = Settings(qdrant_path=tmp_path, collection="c", server=ServerOptions(hnsw_m=24, quantization="int8"))
    store = open_store(settings)
    try:
        store.create(CollectionInfo("model", 16))
        config = json.loads((store.shard_dir / "edge_config.json").read_text())
    finally:
        store.close()
    text = json.dumps(config).lower()
    assert '"m": 24' in text and "int8" in text, config
    store = open_store(Settings(qdrant_path=tmp_path / "plain", collection="c"))
    try:
        store.create(CollectionInfo("model", 16))
        plain = json.dumps(json.loads((store.shard_dir / "edge_config.json").read_text())).lower()
    finally:
        store.close()
    assert '"m": 16' in plain and "int8" not in plain, plain


def test_int8_hnsw_keeps_the_kiosk_query_recall(tmp_path, graph_config):
    space, vectors, payloads, points = clustered_points(3000, 64)
    store = EdgeStore(tmp_path, "c", exact_search_below=1000, index=ServerOptions(quantization="int8"))
    try:
        store.create(CollectionInfo("model", 64))
        for start in range(0, len(points), 500):
            store.upsert(points[start : start + 500])
        store.finish_writes()  # past exact_search_below: builds the graph and the int8 copies
        assert store.shard.info().indexed_vectors_count == len(points), "no HNSW graph was built"
        searcher = Searcher(Settings(), embedder=SimpleNamespace(model_name="model", dim=64), store=store)
        skin = SearchFilters(fitzpatrick=("FST5", "FST6")).to_store_filter()
        recalls = {"none": [], "skin": []}
        for query in space.queries(40):
            for name, store_filter, allowed in (("none", Filter(), None), ("skin", skin, {"FST5", "FST6"})):
                found = searcher.nearest(query, store_filter, SearchOptions(top_k=10))
                assert store._exact_search is False  # the graph answered
                expected = exact_kiosk_answer(vectors, payloads, query, allowed)
                assert len(found) == len(expected) == 10
                recalls[name].append(len({n.image_id for n in found} & set(expected)) / 10)
    finally:
        store.close()
    for name, values in recalls.items():
        assert np.mean(values) >= 0.95, (name, np.mean(values))


def test_large_collections_are_searched_with_more_hnsw_candidates(tmp_path, monkeypatch):
    # bench_scale.py at 1,000,000 points: hnsw_ef 128 found 0.89 of exact search's top 10, 512 found 0.988.
    from scinsearch.store import edge as edge_store

    assert edge_store.hnsw_ef_for(100_000) == edge_store.HNSW_EF == 128
    assert edge_store.hnsw_ef_for(1_000_000) == edge_store.HNSW_EF_LARGE == 512
    _, vectors, _, points = clustered_points(60, 16)
    store = EdgeStore(tmp_path / "qdrant", "large", exact_search_below=10)
    store.create(CollectionInfo("model", 16))
    store.upsert(points)
    seen = []
    real = edge_store.search_params
    monkeypatch.setattr(edge_store, "search_params", lambda exact, ef: seen.append((exact, ef)) or real(exact, ef))
    for large_from, expected in ((1_000, 128), (50, 512)):
        monkeypatch.setattr(edge_store, "LARGE_FROM", large_from)
        store.search_exactly(None)  # the point count decides again
        assert store.query(vectors[0], limit=3)[0].payload["image_id"] == "0"
        assert seen[-1] == (False, expected)
    store.hnsw_ef = 64  # an explicit choice (the benchmark's settings) wins
    store.query(vectors[0], limit=3)
    assert seen[-1] == (False, 64)
    store.close()
