"""The two backends answer alike, the way qdrant-client tests its local mode against a server: the same
points, then the same queries x filters on Qdrant Edge and on qdrant-client (`:memory:`); ids identical,
scores within 1e-4, the same payloads and counts.

Edge's approximate path is exercised for real: a store whose exact-search threshold is set low, with
Edge's indexing and full-scan thresholds lowered too (test configuration only), so `finish_writes`
builds an HNSW graph and queries walk it. HNSW is approximate, so that test compares recall@10 with
exact search instead of demanding identical ids.
"""

from __future__ import annotations

import numpy as np
import pytest

from scinsearch.schema import AGE_GROUPS, BODY_PARTS, DERM_FITZPATRICK, SELF_FITZPATRICK, SEXES, SPLITS, point_id_for
from scinsearch.search_filters import SearchFilters
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, Filter, Match, Range, StoredPoint, open_store
from scinsearch.store.edge import EdgeStore
from scinsearch.testing import CONDITIONS

DIM = 24
SCORE_TOLERANCE = 1e-4
LIMITS = (1, 10, 60)


def random_points(n: int, dim: int = DIM, seed: int = 0) -> list[StoredPoint]:
    """SCIN-like payloads (every indexed field, missing values included) and random unit vectors."""
    rng = np.random.default_rng(seed)

    def one(values, missing: float = 0.0):
        return None if rng.random() < missing else str(rng.choice(values))

    points = []
    for i in range(n):
        vector = rng.normal(size=dim).astype(np.float32)
        conditions = sorted({str(c) for c in rng.choice(CONDITIONS, rng.integers(0, 3))})
        monk = None if rng.random() < 0.1 else int(rng.integers(1, 11))
        payload = {
            "image_id": f"img{i}",
            "case_id": f"case{i // 3}",
            "case_ids": [f"case{i // 3}"] + ([f"case{i // 3 + 1}"] if i % 17 == 0 else []),
            "fitzpatrick_skin_type": one(SELF_FITZPATRICK, missing=0.1),
            "dermatologist_fitzpatrick_skin_type": one(DERM_FITZPATRICK, missing=0.2),
            "monk_skin_tone_label_us": monk,
            "age_group": one(AGE_GROUPS),
            "sex_at_birth": one(SEXES),
            "body_parts": sorted({str(b) for b in rng.choice(BODY_PARTS, rng.integers(1, 4))}),
            "conditions": conditions,
            "condition": conditions[0] if conditions else None,
            "labelled": bool(conditions),
            "gradable": bool(rng.random() < 0.7),
            "split": one(SPLITS),
            "weighted_labels": {c: 1.0 / len(conditions) for c in conditions},
        }
        points.append(StoredPoint(point_id_for(f"img{i}"), payload, vector / np.linalg.norm(vector)))
    return points


EXCLUDE_CASES = Filter(must_not=(Match("case_ids", ("case3", "case4", "case10")),))
FILTERS = {
    "none": None,
    "fitzpatrick": SearchFilters(fitzpatrick=("FST5", "FST6")).to_store_filter(),
    "none-identified": SearchFilters(fitzpatrick="none").to_store_filter(),
    "dermatologist-fitzpatrick": SearchFilters(dermatologist_fitzpatrick="III").to_store_filter(),
    "monk-range": SearchFilters(monk_min=3, monk_max=6).to_store_filter(),
    "monk-open-ended": SearchFilters(monk_min=8).to_store_filter(),
    "age-and-sex": SearchFilters(age_groups="30-39,18-29", sexes="female").to_store_filter(),
    "body-part-list": SearchFilters(body_parts="arm").to_store_filter(),
    "conditions-with-commas": SearchFilters(conditions=("Eczema", "Acute dermatitis, NOS")).to_store_filter(),
    "split-and-gradable": SearchFilters(splits="test", gradable_only=True).to_store_filter(),
    "exclude-cases": EXCLUDE_CASES,
    "gradable-not-these-cases": SearchFilters(gradable_only=True).to_store_filter().and_(EXCLUDE_CASES),
    "not-gradable": Filter(must=(Match("gradable", (False,)),)),
    "unlabelled": Filter(must=(Match("labelled", (False,)),)),
    "range-and-exclusion": Filter(
        must=(Range("monk_skin_tone_label_us", lte=2),), must_not=(Match("split", ("val",)),)
    ),
    "matches-nothing": SearchFilters(conditions="No such condition").to_store_filter(),
}


@pytest.fixture(scope="module")
def congruent_points() -> list[StoredPoint]:
    return random_points(400)


@pytest.fixture(scope="module")
def backends(tmp_path_factory, congruent_points):
    """The same points in Qdrant Edge (exact search) and in qdrant-client's `:memory:` mode."""
    stores = {
        "edge": open_store(Settings(qdrant_path=tmp_path_factory.mktemp("congruence"), collection="c")),
        "client": open_store(Settings(qdrant_location=":memory:", collection="c")),
    }
    for store in stores.values():
        store.create(CollectionInfo("model", DIM))
        for start in range(0, len(congruent_points), 64):
            store.upsert(congruent_points[start : start + 64])
        store.finish_writes()
    yield stores
    for store in stores.values():
        store.close()


def queries(points: list[StoredPoint], seed: int = 1) -> list[np.ndarray]:
    """Random directions, and stored vectors (a query that finds itself first)."""
    random_vectors = np.random.default_rng(seed).normal(size=(6, DIM)).astype(np.float32)
    return [*random_vectors, points[0].vector, points[77].vector]


@pytest.mark.parametrize("name", list(FILTERS))
def test_same_hits_scores_payloads_and_counts_on_both_backends(name, backends, congruent_points):
    edge, client = backends["edge"], backends["client"]
    store_filter = FILTERS[name]
    assert edge.count(store_filter) == client.count(store_filter)
    assert {p.id for p in edge.scroll(store_filter)} == {p.id for p in client.scroll(store_filter)}
    compared = 0
    for vector in queries(congruent_points):
        for limit in LIMITS:
            for min_score in (None, 0.15) if limit == 10 else (None,):
                found = [s.query(vector, limit, store_filter, min_score=min_score) for s in (edge, client)]
                assert [h.id for h in found[0]] == [h.id for h in found[1]], (name, limit, min_score)
                np.testing.assert_allclose(
                    [h.score for h in found[0]], [h.score for h in found[1]], atol=SCORE_TOLERANCE
                )
                assert [h.payload for h in found[0]] == [h.payload for h in found[1]]
                compared += len(found[0])
    if name == "matches-nothing":
        assert compared == 0 and edge.count(store_filter) == 0
    else:
        assert compared > 0 and edge.count(store_filter) > 0, "a filter that matches nothing proves nothing"


def test_stored_vectors_and_retrieval_agree(backends, congruent_points):
    ids = [p.id for p in congruent_points[:50]] + ["not-a-uuid", point_id_for("never stored")]
    edge, client = ({p.id: p for p in backends[s].retrieve(ids, with_vectors=True)} for s in ("edge", "client"))
    assert edge.keys() == client.keys() == {p.id for p in congruent_points[:50]}
    for point in congruent_points[:50]:
        np.testing.assert_allclose(edge[point.id].vector, client[point.id].vector, atol=1e-6)
        np.testing.assert_allclose(edge[point.id].vector, point.vector, atol=1e-6)
        assert edge[point.id].payload == client[point.id].payload == point.payload


# Edge's approximate path: a real HNSW graph ------------------------------------------------------------------


def test_edge_hnsw_path_finds_what_exact_search_finds(tmp_path, graph_config):
    points = random_points(800, dim=16, seed=3)
    exact, graph = (
        EdgeStore(tmp_path / "exact", "c"),
        EdgeStore(tmp_path / "graph", "c", exact_search_below=100),
    )  # 800 points: past it
    for store in (exact, graph):
        store.create(CollectionInfo("model", 16))
        store.upsert(points)
        store.finish_writes()
    assert graph.shard.info().indexed_vectors_count == len(points), "no HNSW graph was built"
    assert exact.shard.info().indexed_vectors_count == 0
    recalls = []
    for vector in np.random.default_rng(4).normal(size=(25, 16)).astype(np.float32):
        for name in ("none", "fitzpatrick", "body-part-list", "gradable-not-these-cases", "monk-range"):
            expected = exact.query(vector, 10, FILTERS[name])
            found = graph.query(vector, 10, FILTERS[name])
            assert len(found) == len(expected) == 10
            recalls.append(len({h.id for h in found} & {h.id for h in expected}) / 10)
            exact_scores = {h.id: h.score for h in expected}
            for hit in found:  # whatever the graph finds is scored exactly
                if hit.id in exact_scores:
                    assert hit.score == pytest.approx(exact_scores[hit.id], abs=SCORE_TOLERANCE)
    assert graph._exact_search is False and exact._exact_search is True  # the two query paths were taken
    assert np.mean(recalls) >= 0.95 and min(recalls) >= 0.7, (np.mean(recalls), min(recalls))
    for store in (exact, graph):
        store.close()
