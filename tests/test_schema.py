"""The payload schema is the one declaration of the payload: what the readers write must be declared there."""

from __future__ import annotations

import dataclasses

from scinsearch import schema
from scinsearch.dataset import case_payload, read_flat_csv, read_release
from scinsearch.prepare import prepare_metadata
from scinsearch.search_filters import SearchFilters

TYPES = {"keyword": str, "text": str, "integer": int, "bool": bool, "dict": dict}


def matches_type(value, kind: str) -> bool:
    if kind in ("keyword[]", "checkboxes"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "integer[]":
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if kind == "integer" and isinstance(value, bool):
        return False
    return isinstance(value, TYPES[kind])


def test_every_field_the_release_reader_writes_is_declared_with_its_type(scin_release):
    payloads = [record.payload for record in read_release(scin_release).records]
    written = {key for payload in payloads for key in payload}
    assert written - schema.FIELD_NAMES == set()
    wrong = {
        (key, repr(value))
        for payload in payloads
        for key, value in payload.items()
        if value is not None and not matches_type(value, schema.BY_NAME[key].type)
    }
    assert wrong == set()
    assert all(set(schema.REQUIRED_FIELDS) <= set(payload) for payload in payloads)


def test_release_columns_the_synthetic_data_leaves_empty_are_declared_too():
    row = {
        "case_id": "1",
        "combined_race": "WHITE",
        "race_ethnicity_two_or_more_after_mitigation": "UNKNOWN",
        "related_category": "RASH",
        "source": "SCIN",
        "release": "1.0.0",
        "year": "2023",
        "other_symptoms_fever": "YES",
        "weighted_skin_condition_label": "{'Eczema': 1.0}",
    }
    assert set(case_payload(row, [])) - schema.FIELD_NAMES == set()


def test_every_field_the_flat_csv_reader_writes_is_declared(scin_release, tmp_path):
    prepare_metadata(scin_release, tmp_path / "flat.csv", include_missing=True)
    payloads = [r.payload for r in read_flat_csv(tmp_path / "flat.csv", scin_release / "dataset" / "images").records]
    assert payloads and {key for payload in payloads for key in payload} - schema.FIELD_NAMES == set()
    assert all(set(schema.REQUIRED_FIELDS) <= set(payload) for payload in payloads)


def test_filters_name_indexed_fields_and_cover_every_restriction():
    assert all(schema.BY_NAME[field].index for field in schema.FILTER_FIELDS.values())
    restrictions = {f.name for f in dataclasses.fields(SearchFilters)}
    covered = {"monk_min", "monk_max"} if "monk" in schema.FILTER_FIELDS else set()
    covered |= {"gradable_only"} if "gradable" in schema.FILTER_FIELDS else set()
    covered |= {"labelled_only"} if "labelled" in schema.FILTER_FIELDS else set()
    covered |= set(schema.FILTER_FIELDS) & restrictions
    assert covered == restrictions


def test_declarations_are_consistent():
    assert len(schema.FIELDS) == len(schema.FIELD_NAMES)  # no field declared twice
    assert {f.index for f in schema.FIELDS} <= {None, "keyword", "integer", "bool", "float"}
    assert {f.type for f in schema.FIELDS} <= set(TYPES) | {"keyword[]", "integer[]", "checkboxes"}
    assert schema.SPLITS == ("train", "val", "test") and schema.SPLIT_FRACTIONS[-1][1] == 1.0
    assert (schema.TRAIN_SPLIT, schema.VAL_SPLIT, schema.TEST_SPLIT) == schema.SPLITS


def test_case_ids_of_a_payload():
    assert schema.case_ids({"case_id": "1", "case_ids": ["1", 2]}) == ["1", "2"]
    assert schema.case_ids({"case_id": "7"}) == ["7"]  # a point written before `case_ids`
    assert schema.case_ids({"case_id": "", "case_ids": []}) == [] and schema.case_ids({}) == []
    assert schema.FLAT_COLUMNS[:2] == ("image_id", "image_path")


def test_point_ids_are_the_ones_existing_collections_hold():
    """Changing the id scheme would make every stored collection re-embed from scratch."""
    assert schema.point_id_for("-2243186711511406658") == "92e61357-1e1b-5920-a5c5-d9e44c44a714"
    assert schema.point_id_for("x") != schema.point_id_for("x1")
