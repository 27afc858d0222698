"""`scinsearch prepare`: the flat one-row-per-image CSV, built from the same records `embed` uses."""

from __future__ import annotations

import ast
import csv
from pathlib import Path, PurePosixPath

import pytest
from click.testing import CliRunner

import csv_reference
from scinsearch import cells, dataset, schema, testing
from scinsearch.commands.download_cmds import prepare
from scinsearch.errors import ScinSearchError
from scinsearch.prepare import prepare_metadata


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def prepared(scin_release, tmp_path_factory):
    """The CSV written from the shared synthetic release (read-only), and the records it came from."""
    out = tmp_path_factory.mktemp("prepared") / "real_labeled_metadata.csv"
    summary = prepare_metadata(scin_release, out)
    return out, summary, {r.image_id: r for r in dataset.read_release(scin_release).records}


def test_columns_and_one_row_per_distinct_image_on_disk(prepared, scin_release):
    out, summary, records = prepared
    columns, rows = read_rows(out)
    assert columns == list(schema.FLAT_COLUMNS)
    ids = [row["image_id"] for row in rows]
    assert len(ids) == len(set(ids)) == summary.rows
    assert set(ids) == {image_id for image_id, r in records.items() if r.file.is_file()}
    assert summary.missing_images == 1  # the release's one missing image
    images_dir = scin_release / "dataset" / "images"
    assert all((images_dir / row["image_path"]).is_file() and "/" not in row["image_path"] for row in rows)


def test_values_equal_the_release_csvs_read_independently(prepared, scin_release):
    """Each row against the release's two CSVs read with the csv module (tests/csv_reference.py), not against
    the payloads the table was written from."""
    out, _, _ = prepared
    expected = csv_reference.release_images(scin_release / "dataset")
    _, rows = read_rows(out)
    assert rows
    for row in rows:
        want = expected[row["image_id"]]
        assert row["image_path"] == PurePosixPath(want["image_path"]).name
        assert row["case_id"] == want["case_id"] and (row["condition"] or None) == want["condition"]
        assert ast.literal_eval(row["all_conditions"]) == want["all_conditions"]
        assert list(ast.literal_eval(row["weighted_labels"]).items()) == list(want["weighted_labels"].items())
        for column in ("age_group", "sex_at_birth", "fitzpatrick_skin_type"):
            assert (row[column] or None) == want[column], column
        assert (int(row["condition_label"]) if row["condition_label"] else None) == want["condition_label"]
        assert row["split"] == want["split"]
        assert all(fact in row["description"] for fact in csv_reference.description_facts(want)), row["description"]


def test_labels_keep_commas_and_descriptions_are_factual(prepared):
    _, rows = read_rows(prepared[0])
    names = {name for row in rows for name in cells.parse_string_list(row["all_conditions"])}
    assert "Acute dermatitis, NOS" in names or "Abrasion, scrape, or scab" in names
    for row in rows:
        if row["condition"]:
            assert row["condition"] in row["description"] and row["condition_label"].isdigit()
        else:
            assert "no dermatologist condition label" in row["description"] and row["condition_label"] == ""


def test_the_table_reads_back_as_the_flat_source(prepared, scin_release):
    out, _, records = prepared
    flat = dataset.read_flat_csv(out, scin_release / "dataset" / "images")
    assert not flat.warnings
    for record in flat.records:
        release_payload = records[record.image_id].payload
        for key in ("split", "condition", "weighted_labels", "all_conditions", "condition_label", "description"):
            assert record.payload[key] == release_payload[key], key
        assert record.file == records[record.image_id].file


def test_options_labelled_only_and_include_missing(scin_release, tmp_path):
    labelled = prepare_metadata(scin_release, tmp_path / "labelled.csv", labelled_only=True)
    _, rows = read_rows(tmp_path / "labelled.csv")
    assert rows and labelled.unlabelled_skipped and all(cells.parse_weighted_labels(r["weighted_labels"]) for r in rows)
    everything = prepare_metadata(scin_release, tmp_path / "all.csv", include_missing=True)
    _, rows = read_rows(tmp_path / "all.csv")
    assert everything.missing_images == 0 and everything.rows == everything.images_total
    assert Path(testing.MISSING_IMAGE).name in {row["image_path"] for row in rows}


def test_same_output_every_time(scin_release, tmp_path):
    prepare_metadata(scin_release, tmp_path / "a.csv")
    prepare_metadata(scin_release, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_prepare_command(scin_release, tmp_path):
    out = tmp_path / "sub" / "meta.csv"
    result = CliRunner().invoke(prepare, ["--scin-dir", str(scin_release), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "rows (one per distinct image;" in result.output and out.is_file()
    assert not list(tmp_path.rglob("*.part"))


def test_prepare_accepts_the_dataset_folder_itself(scin_release, tmp_path):
    summary = prepare_metadata(scin_release / "dataset", tmp_path / "m.csv")
    assert summary.rows > 0


def test_not_a_release_is_one_line(tmp_path):
    result = CliRunner().invoke(prepare, ["--scin-dir", str(tmp_path), "--out", str(tmp_path / "m.csv")])
    assert result.exit_code == 1 and result.output.startswith("Error: no scin_cases.csv")


def test_unwritable_output_is_a_user_error(scin_release, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ScinSearchError, match="cannot write"):
        prepare_metadata(scin_release, tmp_path / "a-file" / "m.csv")
