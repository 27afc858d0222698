"""Payloads read back from the store against the CSVs read independently (tests/csv_reference.py).

Both sources, both backends: the official release (every field of the old scripts and every typed
release field, per image) and the flat CSV of the old scripts (every column, per image).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import csv_reference as ref
from scinsearch.dataset import read_flat_csv, read_release
from scinsearch.pipeline import run_embed


def embed_and_read_back(data, embedder, store) -> tuple[object, dict[str, dict]]:
    summary = run_embed(data, embedder, store, batch_size=8, workers=0, progress=False, warn=lambda _: None)
    return summary, {point.payload["image_id"]: point.payload for point in store.scroll()}


def differences(payload: dict, expected: dict) -> dict:
    """Field -> (stored, expected) for every field that differs, missing or extra."""
    return {
        key: (payload.get(key, "<absent>"), expected.get(key, "<absent>"))
        for key in payload.keys() | expected.keys()
        if payload.get(key, "<absent>") != expected.get(key, "<absent>")
    }


def test_release_payloads_equal_the_release_csvs(scin_release, spy_embedder, store):
    expected = ref.release_images(scin_release / "dataset")
    summary, stored = embed_and_read_back(read_release(scin_release), spy_embedder, store)
    failed = {Path(path).stem for path, _ in summary.failed}
    assert len(stored) == summary.embedded > 0 and set(stored) == set(expected) - failed
    assert any(len(p["case_ids"]) == 2 for p in stored.values()), "the shared image lost a case"
    for image_id, payload in stored.items():
        payload = dict(payload)
        description = payload.pop("description")
        assert not differences(payload, expected[image_id]), (image_id, differences(payload, expected[image_id]))
        assert list(payload["weighted_labels"]) == list(expected[image_id]["weighted_labels"]), "heaviest first"
        missing = [fact for fact in ref.description_facts(expected[image_id]) if fact not in description]
        assert not missing, (description, missing)


def test_flat_csv_payloads_equal_the_flat_csv(scin_release, spy_embedder, store, tmp_path):
    images_dir = scin_release / "dataset" / "images"
    flat = ref.write_old_style_flat_csv(scin_release / "dataset", images_dir, tmp_path / "real_labeled_metadata.csv")
    expected = ref.flat_images(flat)
    summary, stored = embed_and_read_back(read_flat_csv(flat, images_dir), spy_embedder, store)
    failed = {Path(path).stem for path, _ in summary.failed}
    assert len(stored) == summary.embedded > 0 and set(stored) == set(expected) - failed
    assert any(len(p["case_ids"]) == 2 for p in stored.values()), "the shared image lost a case"
    for image_id, payload in stored.items():
        assert not differences(payload, expected[image_id]), (image_id, differences(payload, expected[image_id]))


@pytest.mark.parametrize("case_id", ["-3205742176803893704", "1", "abc"])
def test_the_split_rule_is_the_documented_one(case_id):
    from scinsearch import cells

    assert cells.split_for_case(case_id) == ref.case_split(case_id)
