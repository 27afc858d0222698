"""`scinsearch import` treats a Parquet file as untrusted: each defect is one line, and nothing is written.

Every bad file is made from a good export by changing one thing with pyarrow, so each test fails
only for the reason it names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scinsearch.cli import main
from scinsearch.errors import ScinSearchError
from scinsearch.schema import point_id_for
from scinsearch.store import CollectionInfo, StoredPoint
from scinsearch.store.edge import EdgeStore
from scinsearch.transfer import export_parquet, import_parquet, parquet

DIM = 4


@pytest.fixture
def good_file(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    store = EdgeStore(tmp_path / "source", "c")
    store.create(CollectionInfo("model-a", DIM, {"image_root": "/data"}))
    points = []
    for i in range(12):
        vector = rng.normal(size=DIM).astype(np.float32)
        payload = {"image_id": f"img{i}", "conditions": ["Eczema"], "extra": {"n": i}}
        points.append(StoredPoint(point_id_for(f"img{i}"), payload, vector / np.linalg.norm(vector)))
    store.upsert(points)
    export_parquet(store, tmp_path / "good.parquet", progress=False)
    store.close()
    return tmp_path / "good.parquet"


def rewrite(good: Path, change) -> Path:
    """The good file's table passed through `change(table, metadata) -> table`, written with its metadata."""
    table = pq.read_table(good)
    metadata = json.loads(table.schema.metadata[b"scinsearch"])
    table = change(table, metadata)
    bad = good.with_name("bad.parquet")
    pq.write_table(table.replace_schema_metadata({b"scinsearch": json.dumps(metadata).encode()}), bad)
    return bad


def set_column(table: pa.Table, name: str, array: pa.Array) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, pa.field(name, array.type), array)


def tamper_metadata(key, value):
    def change(table, metadata):
        if isinstance(key, tuple):
            metadata[key[0]][key[1]] = value
        else:
            metadata[key] = value
        return table

    return change


def vectors_with(value: float):
    def change(table, metadata):
        values = np.ones(table.num_rows * DIM, dtype=np.float32)
        values[5] = value
        return set_column(table, "vector", pa.FixedSizeListArray.from_arrays(pa.array(values), DIM))

    return change


def column_of(name: str, cells: list, kind=pa.string()):
    return lambda table, metadata: set_column(
        table, name, pa.array(cells + [cells[-1]] * (table.num_rows - len(cells)), kind)
    )


CASES = {
    "version": (tamper_metadata("version", 99), "format version 99"),
    "format": (tamper_metadata("format", "other"), "names another format"),
    "dimension": (tamper_metadata(("record", "scinsearch_dim"), 1152), "not a fixed-size list of 1152 float32"),
    "huge dimension": (tamper_metadata(("record", "scinsearch_dim"), 10**9), "vector size 1000000000"),
    "no model": (tamper_metadata(("record", "scinsearch_model"), ""), "names no model"),
    "nested record": (tamper_metadata(("record", "image_root"), {"a": 1}), "not a flat JSON object"),
    "rows": (tamper_metadata("rows", 5), "holds 12 rows, its metadata says 5"),
    "undeclared column": (tamper_metadata("columns", {"image_id": "typed", "conditions": "typed"}), "its columns are"),
    "unknown kind": (tamper_metadata(("columns", "extra"), "pickle"), "declared 'pickle'"),
    "typed unknown field": (tamper_metadata(("columns", "extra"), "typed"), "declared 'typed'"),
    "wrong type": (column_of("conditions", ["Eczema"]), "'conditions' is string"),
    "nan vector": (vectors_with(float("nan")), "NaN or infinity"),
    "infinite vector": (vectors_with(float("inf")), "NaN or infinity"),
    "bad id": (column_of("point_id", ["../../etc/passwd"]), "is not a UUID"),
    "bad json": (column_of("extra", ["{not json"]), "a value of 'extra' is not JSON"),
    "json nan": (column_of("extra", ["NaN"]), "a value of 'extra' is not JSON"),
    "deep json": (column_of("extra", ["[" * 100_000 + "]" * 100_000]), "a value of 'extra' is not JSON"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_defective_file_is_refused_before_anything_is_written(tmp_path, good_file, case):
    change, message = CASES[case]
    bad = rewrite(good_file, change)
    target = EdgeStore(tmp_path / "target", "c")
    with pytest.raises(ScinSearchError, match="is not a scinsearch Parquet export") as failure:
        import_parquet(bad, target, progress=False)
    assert message in str(failure.value) and "\n" not in str(failure.value)
    assert target.info() is None  # no collection made, no point written
    target.close()


def test_the_good_file_imports(tmp_path, good_file):
    target = EdgeStore(tmp_path / "target", "c")
    summary = import_parquet(good_file, target, progress=False)
    assert target.count() == 12 == summary.copied and summary.checked == 12
    target.close()


def test_files_that_are_not_exports_are_one_line(capsys, tmp_path):
    (tmp_path / "noise.parquet").write_bytes(np.random.default_rng(0).bytes(5000))
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "plain.parquet")
    for name, message in [
        ("noise.parquet", "is not a readable Parquet file"),
        ("plain.parquet", "no collection record in its metadata"),
        ("missing.parquet", "no file"),
    ]:
        code = main(["import", "--from-parquet", str(tmp_path / name), "--qdrant-path", str(tmp_path / "q")])
        err = capsys.readouterr().err
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "q").exists()


def test_oversized_row_groups_metadata_and_cells_are_refused(tmp_path, good_file, monkeypatch):
    target = EdgeStore(tmp_path / "target", "c")
    for limit, size, message in [
        ("MAX_ROW_GROUP_BYTES", 100, "row group 0 is over"),
        ("MAX_METADATA_BYTES", 100, "its metadata is over"),
        ("MAX_JSON_CELL", 5, "a value of 'extra' is over"),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(parquet, limit, size)
            with pytest.raises(ScinSearchError, match=message):
                import_parquet(good_file, target, progress=False)
    assert target.info() is None
    target.close()
