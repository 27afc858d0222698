"""Reading SCIN: the official release and the flat CSV, with the real release's traps."""

from __future__ import annotations

import csv
import shutil

import pytest

from scinsearch import cells
from scinsearch.dataset import load_dataset, read_flat_csv, read_release
from scinsearch.errors import ScinSearchError
from scinsearch.paths import resolve_image
from scinsearch.schema import point_id_for
from scinsearch.testing import MISSING_IMAGE


@pytest.mark.parametrize(
    "value, expected",
    [
        ("['Eczema', 'Acute dermatitis, NOS']", ["Eczema", "Acute dermatitis, NOS"]),
        ("[]", []),
        ("", []),
        (float("nan"), []),
    ],
)
def test_label_lists_are_literals_never_split_on_commas(value, expected):
    assert cells.parse_string_list(value) == expected


def test_weighted_labels_are_a_mapping_heaviest_first():
    assert list(cells.parse_weighted_labels("{'Tinea': 0.38, 'Eczema': 0.62}").items()) == [
        ("Eczema", 0.62),
        ("Tinea", 0.38),
    ]
    assert cells.parse_weighted_labels("{}") == {}


@pytest.mark.parametrize(
    "bad",
    ["__import__('os').system('echo pwned')", "{'a': float('nan')}", "{'a': -1}", "['x', 1]", "[" * 5000, "{'a': 'b'}"],
)
def test_untrusted_literals_are_refused_not_evaluated(bad):
    with pytest.raises(cells.CellError):
        parser = cells.parse_string_list if bad.startswith("[") else cells.parse_weighted_labels
        parser(bad)


def test_numbers_booleans_and_groups():
    assert cells.parse_int("3.0") == 3 and cells.parse_int("") is None
    assert cells.parse_bool("True") is True and cells.parse_bool("NO") is False
    assert cells.dermatologist_skin_type(["FST2", "FST5", "FST3"]) == "FST3"
    assert cells.skin_type_group("FST6") == "V-VI" and cells.skin_type_group("NONE_IDENTIFIED") == "unknown"
    assert cells.monk_tone_group(7) == "7-10" and cells.monk_tone_group(None) == "unknown"


def test_split_is_deterministic_by_case_and_roughly_70_15_15():
    splits = [cells.split_for_case(str(i)) for i in range(3000)]
    assert splits == [cells.split_for_case(str(i)) for i in range(3000)]
    assert 0.66 < splits.count("train") / 3000 < 0.74 and 0.12 < splits.count("test") / 3000 < 0.18


def test_release_gives_one_record_per_distinct_image_and_keeps_every_case(scin_release):
    data = read_release(scin_release)
    paths = [r.payload["image_path"] for r in data.records]
    assert len(paths) == len(set(paths))
    shared = [r for r in data.records if len(r.payload["case_ids"]) > 1]
    assert len(shared) == 1
    with open(scin_release / "dataset" / "scin_cases.csv", newline="") as handle:
        case_ids = {row["case_id"] for row in csv.DictReader(handle)}
    assert case_ids == {c for r in data.records for c in r.payload["case_ids"]}
    missing = next(r for r in data.records if r.payload["image_path"] == MISSING_IMAGE)
    assert not missing.file.exists()


def test_release_payload_types(scin_release):
    payloads = [r.payload for r in read_release(scin_release).records]
    unlabelled = [p for p in payloads if not p["labelled"]]
    assert unlabelled and all(p["weighted_labels"] == {} and p["condition"] is None for p in unlabelled)
    assert any("Acute dermatitis, NOS" in p["all_conditions"] for p in payloads)
    first = payloads[0]
    assert first["case_id"].lstrip("-").isdigit() and isinstance(first["year"], int)
    assert "arm" in first["body_parts"] and isinstance(first["gradable"], bool)
    assert first["condition"] == next(iter(first["weighted_labels"]))
    assert any(p["monk_skin_tone_label_us"] is None for p in payloads)
    assert all(p["split"] == cells.split_for_case(p["case_id"]) for p in payloads)


def test_release_found_from_dataset_folder_too(scin_release):
    assert len(read_release(scin_release / "dataset").records) == len(read_release(scin_release).records)


def test_point_ids_are_stable_uuids():
    assert point_id_for("123") == point_id_for("123") != point_id_for("-123")


def test_unsafe_paths_never_leave_the_root(tmp_path):
    assert resolve_image(tmp_path, "../etc/passwd") is None
    assert resolve_image(tmp_path, "/etc/passwd") is None
    assert resolve_image(tmp_path, "dataset/images/../../x.png") is None


def test_malformed_cells_become_warnings_not_failures(scin_release, tmp_path):
    copy = tmp_path / "scin"
    shutil.copytree(scin_release, copy)
    labels = copy / "dataset" / "scin_labels.csv"
    text = labels.read_text().replace("{'Eczema': 1.0}", "{'Eczema': oops}", 1)
    labels.write_text(text)
    data = read_release(copy)
    assert any("weighted_skin_condition_label" in w for w in data.warnings)


def test_flat_csv(scin_release, tmp_path, write_flat_csv):
    images = scin_release / "dataset" / "images"
    evil = ["evil", "../../etc/passwd", "1", "", "[]", "{}", "", "", "", "", "", ""]
    same = {"condition_label": "1", "split": "val", "description": "A photo"}
    csv_path = write_flat_csv(scin_release, tmp_path / "flat.csv", rows=5, same=same, extra_rows=[evil])
    data = read_flat_csv(csv_path, images)
    assert len(data.records) == 5 and any("unsafe image path" in w for w in data.warnings)
    assert data.records[0].payload["split"] == "val" and data.records[0].payload["condition_label"] == 1
    assert isinstance(data.records[0].payload["weighted_labels"], dict)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        ("", "cannot read"),
        ("a,b\n1,2\n", "lacks the column"),
        ('image_id,image_path\n"unterminated,x\n', "cannot read"),
    ],
)
def test_bad_flat_csv_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "meta.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ScinSearchError, match=message):
        read_flat_csv(path, tmp_path)


def test_source_choice_errors(tmp_path):
    with pytest.raises(ScinSearchError, match="no data given"):
        load_dataset()
    with pytest.raises(ScinSearchError, match="needs --images-dir"):
        load_dataset(metadata=tmp_path / "x.csv")
    with pytest.raises(ScinSearchError, match="scin_cases.csv"):
        load_dataset(scin_dir=tmp_path)
