"""The embed job: resumable, nothing embedded twice, broken images named, model mixing refused."""

from __future__ import annotations

import numpy as np
import pytest

from scinsearch.dataset import read_release
from scinsearch.errors import ScinSearchError
from scinsearch.pipeline import run_embed
from scinsearch.store import open_store

BROKEN = {"file not found", "empty file", "not an image file"}


def embed(data, embedder, store, **options):
    return run_embed(data, embedder, store, batch_size=options.pop("batch_size", 4), workers=options.pop("workers", 0),
                     progress=False, warn=lambda message: None, **options)


def test_embeds_each_distinct_image_once_and_names_broken_files(scin_release, spy_embedder, store):
    data = read_release(scin_release)
    summary = embed(data, spy_embedder, store)
    reasons = {reason.split(" (")[0] for _, reason in summary.failed}
    assert BROKEN <= reasons and any(r.startswith("broken image data") for r in reasons)
    assert summary.embedded == len(data.records) - len(summary.failed) == store.count()
    assert spy_embedder.images_embedded == summary.embedded
    assert any("-2243186711511406658.png" in path for path, _ in summary.failed)


def test_rerun_embeds_nothing_twice(scin_release, spy_embedder, store):
    data = read_release(scin_release)
    first = embed(data, spy_embedder, store)
    again = embed(data, spy_embedder, store)
    assert again.embedded == 0 and again.already_present == first.embedded
    assert spy_embedder.images_embedded == first.embedded
    assert store.count() == first.embedded


def test_limit_then_full_run_resumes(scin_release, spy_embedder, store):
    data = read_release(scin_release)
    embed(data, spy_embedder, store, limit=5)
    partial = store.count()
    full = embed(data, spy_embedder, store)
    assert full.already_present == partial
    assert spy_embedder.images_embedded == store.count()


def test_run_killed_half_way_ends_with_exactly_the_right_points(scin_release, spy_embedder, store_settings):
    data = read_release(scin_release)
    store = open_store(store_settings)
    spy_embedder.fail_after = 6
    with pytest.raises(KeyboardInterrupt):
        embed(data, spy_embedder, store, batch_size=3)
    assert 0 < store.count() < len(data.records)
    spy_embedder.fail_after = None
    summary = embed(data, spy_embedder, store, batch_size=3)
    ids = {p.id for p in store.scroll()}
    expected = {r.point_id for r in data.records} - {r.point_id for r in data.records
                                                     if any(str(r.file) == path for path, _ in summary.failed)}
    assert ids == expected
    store.close()


def test_parallel_workers_give_the_same_vectors(scin_release, spy_embedder, tmp_path):
    from scinsearch.settings import Settings
    data = read_release(scin_release)
    stores = [open_store(Settings(qdrant_path=tmp_path / name, collection="c")) for name in ("serial", "parallel")]
    embed(data, spy_embedder, stores[0], workers=0)
    embed(data, spy_embedder, stores[1], workers=2)
    vectors = [{p.id: p.vector for p in s.scroll(with_vectors=True)} for s in stores]
    assert vectors[0].keys() == vectors[1].keys()
    for key in vectors[0]:
        np.testing.assert_allclose(vectors[0][key], vectors[1][key], atol=1e-6)
    for s in stores:
        s.close()


def test_other_model_is_refused_unless_recreate(clean_release, spy_embedder, store):
    data = read_release(clean_release)
    embed(data, spy_embedder, store, limit=4)
    spy_embedder.model_name = "another-model"
    with pytest.raises(ScinSearchError, match="would mix models"):
        embed(data, spy_embedder, store)
    summary = embed(data, spy_embedder, store, limit=3, recreate=True)
    assert summary.embedded == 3 and store.count() == 3 and store.info().model == "another-model"


def test_store_failure_is_one_clear_error_and_keeps_what_was_stored(clean_release, spy_embedder, store):
    data = read_release(clean_release)
    embed(data, spy_embedder, store, limit=4)
    real_upsert, calls = store.upsert, []

    def failing_upsert(points):
        calls.append(len(points))
        if len(calls) > 1:
            raise RuntimeError("disk full")
        real_upsert(points)

    store.upsert = failing_upsert
    with pytest.raises(ScinSearchError, match="disk full.*run again to resume"):
        embed(data, spy_embedder, store, batch_size=2)
    assert store.count() >= 6


def test_payload_is_typed_and_complete(clean_release, spy_embedder, store):
    embed(read_release(clean_release), spy_embedder, store)
    for point in store.scroll():
        payload = point.payload
        for field in ("image_id", "image_path", "case_id", "condition", "all_conditions", "weighted_labels",
                      "age_group", "sex_at_birth", "fitzpatrick_skin_type", "description", "split", "body_parts"):
            assert field in payload
        assert isinstance(payload["weighted_labels"], dict) and isinstance(payload["body_parts"], list)
        assert payload["split"] in {"train", "val", "test"}
        assert not any(isinstance(v, float) and np.isnan(v) for v in payload.values())
