"""Moving a collection (issue 15): store to store, a qdrant-client folder the kiosk backend opens, Parquet.

The source is a Qdrant Edge collection holding the synthetic release's real payloads (every field the
embed job writes: lists, the weighted-labels dict, nulls, fields only some images have) beside random
unit vectors. The kiosk check runs qdrant-client's own API in a fresh process, the reference being the
source store; the Parquet checks read the file with pandas and pyarrow, not with scinsearch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scinsearch import schema
from scinsearch.cli import main
from scinsearch.dataset import read_release
from scinsearch.errors import ScinSearchError
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, StoredPoint, open_store
from scinsearch.store.client import ClientStore
from scinsearch.store.edge import EdgeStore
from scinsearch.transfer import copy_collection, export_parquet, import_parquet

DIM = 16
RECORD = CollectionInfo("google/siglip-base-patch16-224", DIM, {"image_root": "/data/scin"}, preprocessing="exact")


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    """Random float32 unit vectors that qdrant-client's local mode stores unchanged.

    Local mode divides every cosine vector by its norm again (Qdrant's engine keeps a unit vector as
    given); a vector whose float32 norm is exactly 1.0 survives that bit for bit, about 3 in 4 do."""
    rng, found = np.random.default_rng(seed), []
    while len(found) < count:
        vector = rng.normal(size=DIM).astype(np.float32)
        vector /= np.linalg.norm(vector)
        if np.array_equal(vector / np.linalg.norm(vector), vector):
            found.append(vector)
    return np.stack(found)


@pytest.fixture(scope="module")
def source_points(scin_release) -> list[StoredPoint]:
    records = read_release(scin_release).records
    vectors = unit_vectors(len(records))
    return [StoredPoint(r.point_id, r.payload, v) for r, v in zip(records, vectors)]


@pytest.fixture
def edge_path(tmp_path, source_points) -> Path:
    """An Edge folder with collection 'scin' (closed again: the commands open it themselves)."""
    store = EdgeStore(tmp_path / "edge", "scin")
    store.create(RECORD)
    store.upsert(source_points)
    store.finish_writes()
    store.close()
    return tmp_path / "edge"


@pytest.fixture
def source(edge_path):
    store = EdgeStore(edge_path, "scin")
    yield store
    store.close()


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def every_point(store) -> dict[str, StoredPoint]:
    return {p.id: p for p in store.scroll(with_vectors=True)}


def assert_identical(expected: dict[str, StoredPoint], actual: dict[str, StoredPoint]) -> None:
    """Same ids; vectors with the same float32 bytes; payloads with the same fields, order and JSON types."""
    assert sorted(actual) == sorted(expected)
    for point_id, point in expected.items():
        other = actual[point_id]
        assert other.vector.dtype == np.float32 and other.vector.tobytes() == point.vector.tobytes(), point_id
        assert json.dumps(other.payload) == json.dumps(point.payload), point_id


KIOSK = textwrap.dedent("""
    import json, sys
    from qdrant_client import QdrantClient

    folder, collection, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    client = QdrantClient(path=folder)
    answers = []
    for vector in queries:
        response = client.query_points(collection_name=collection, query=vector, limit=5, with_payload=True)
        answers.append([
            [str(p.id), p.score, p.payload["condition"], p.payload["image_path"], p.payload["description"]]
            for p in response.points
        ])
    print(json.dumps(answers))
""")


def test_export_to_a_qdrant_client_folder_answers_the_kiosk_backend_like_the_source(capsys, tmp_path, edge_path):
    folder = tmp_path / "qdrant_data"
    code, out, err = run(
        capsys, "export", "--qdrant-path", edge_path, "--collection", "scin", "--to-qdrant-path", folder, "--quiet"
    )
    assert code == 0, err
    assert "verified: 26 points in both" in out
    queries = np.random.default_rng(7).normal(size=(4, DIM)).astype(np.float32)
    # the kiosk backend is another program: it must find everything in the folder, nothing in this process
    kiosk = subprocess.run(
        [sys.executable, "-c", KIOSK, str(folder), "scin", json.dumps(queries.tolist())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert kiosk.returncode == 0, kiosk.stderr
    answers = json.loads(kiosk.stdout)
    source = EdgeStore(edge_path, "scin")
    for query, answer in zip(queries, answers):
        expected = source.query(query, limit=5)
        assert [a[0] for a in answer] == [h.id for h in expected]
        assert [a[2:] for a in answer] == [
            [h.payload["condition"], h.payload["image_path"], h.payload["description"]] for h in expected
        ]
        np.testing.assert_allclose([a[1] for a in answer], [h.score for h in expected], atol=1e-5)
    source.close()


def test_round_trip_edge_parquet_memory_edge_keeps_every_point_bit_identical(tmp_path, source, source_points):
    export_parquet(source, tmp_path / "scin.parquet", progress=False)
    memory = open_store(Settings(qdrant_location=":memory:", collection="scin"))
    import_parquet(tmp_path / "scin.parquet", memory, progress=False)
    back = EdgeStore(tmp_path / "back", "scin")
    copy_collection(memory, back, progress=False)
    imported = {k: v for k, v in RECORD.as_metadata().items() if k != "image_root"}  # the file's folder is not taken
    assert back.info().as_metadata() == imported == memory.info().as_metadata()
    assert_identical({p.id: p for p in source_points}, every_point(back))
    assert_identical(every_point(source), every_point(memory))
    memory.close()
    back.close()


def test_parquet_reads_in_pandas_and_pyarrow_with_typed_columns_and_the_record(tmp_path, source, source_points):
    path = tmp_path / "scin.parquet"
    export_parquet(source, path, progress=False)
    by_id = {p.id: p for p in source_points}

    table = pq.read_table(path)
    assert table.num_rows == len(source_points)
    assert str(table.schema.field("vector").type) == f"fixed_size_list<element: float>[{DIM}]"
    assert str(table.schema.field("conditions").type) == "list<element: string>"
    assert str(table.schema.field("monk_skin_tone_label_us").type) == "int64"
    assert str(table.schema.field("gradable").type) == "bool"
    assert str(table.schema.field("weighted_labels").type).startswith("map<string, double")
    metadata = json.loads(table.schema.metadata[b"scinsearch"])
    assert metadata["record"] == RECORD.as_metadata() and metadata["collection"] == "scin"

    frame = pd.read_parquet(path)
    assert len(frame) == len(source_points) and frame["point_id"].is_unique
    for row in frame.itertuples(index=False):
        point = by_id[row.point_id]
        assert row.vector.dtype == np.float32 and row.vector.tobytes() == point.vector.tobytes()
        assert list(row.conditions) == point.payload["conditions"]
        assert dict(row.weighted_labels) == point.payload["weighted_labels"]
        assert [name for name, _ in row.weighted_labels] == list(point.payload["weighted_labels"])
        assert row.description == point.payload["description"]
    rows_lacking = frame["condition_duration"].isna().sum()  # a field only some images have: still a string
    assert rows_lacking == sum("condition_duration" not in p.payload for p in source_points) > 0
    assert metadata["columns"]["condition_duration"] == "optional" and metadata["columns"]["conditions"] == "typed"


def string_fields() -> list[str]:
    """The payload schema's always-string fields (keyword or text), from their declared types."""
    return [field.name for field in schema.FIELDS if field.type in ("keyword", "text")]


def test_always_string_fields_are_string_columns_that_compare_as_strings(tmp_path, source, source_points):
    """`df.condition_duration == "ONE_TO_FOUR_WEEKS"` finds the rows, with pandas' or pyarrow's dtypes."""
    path = tmp_path / "scin.parquet"
    export_parquet(source, path, progress=False)
    table = pq.read_table(path)
    held = [name for name in string_fields() if name in table.schema.names]
    partial = [name for name in held if any(name not in p.payload for p in source_points)]
    assert "condition_duration" in partial and "related_category" in held
    assert all(table.schema.field(name).type == pa.string() for name in held)
    for frame in (pd.read_parquet(path), pd.read_parquet(path, dtype_backend="pyarrow")):
        for name in held:
            values = [p.payload.get(name) for p in source_points if p.payload.get(name) is not None]
            wanted = values[0]
            expected = sum(p.payload.get(name) == wanted for p in source_points)
            assert int((frame[name] == wanted).fillna(False).sum()) == expected, name


def test_a_version_1_file_with_json_text_columns_still_imports(tmp_path, source, source_points):
    """Files written before the `optional` columns held a field only some points have as JSON text."""
    path = tmp_path / "scin.parquet"
    export_parquet(source, path, progress=False)
    table = pq.read_table(path)
    metadata = json.loads(table.schema.metadata[b"scinsearch"])
    for name, kind in list(metadata["columns"].items()):
        if kind == "optional":
            cells = [None if v is None else json.dumps(v) for v in table.column(name).to_pylist()]
            index = table.schema.get_field_index(name)
            table = table.set_column(index, pa.field(name, pa.string()), pa.array(cells, pa.string()))
            metadata["columns"][name] = "json"
    assert "json" in metadata["columns"].values()
    metadata["version"] = 1
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({b"scinsearch": json.dumps(metadata).encode()}), old)
    target = EdgeStore(tmp_path / "target", "scin")
    import_parquet(old, target, progress=False)
    assert_identical({p.id: p for p in source_points}, every_point(target))
    metadata["columns"] = {name: "optional" if kind == "json" else kind for name, kind in metadata["columns"].items()}
    with pytest.raises(ScinSearchError, match="declared 'optional'"):  # version 1 had no optional columns
        pq.write_table(table.replace_schema_metadata({b"scinsearch": json.dumps(metadata).encode()}), old)
        import_parquet(old, EdgeStore(tmp_path / "target2", "scin"), progress=False)
    target.close()


def test_fields_of_other_types_nulls_and_absent_fields_round_trip_exactly(tmp_path):
    payloads = [
        {"image_id": "a", "year": 2023, "extra": 1, "weighted_labels": {"B": 0.75, "A": 0.25}, "note": None},
        {"image_id": "b", "year": "2023", "extra": "x", "weighted_labels": {}, "note": {"deep": [1, 2.5, None]}},
        {"image_id": "e", "weighted_labels": {}, "sex_at_birth": "FEMALE", "condition_duration": None},
        {"image_id": "f", "weighted_labels": {"D": 1.0}, "condition_duration": "ONE_DAY"},
        {"image_id": "c", "year": None, "extra": {"k": [True, 1, 1.0]}, "weighted_labels": None},
        {"image_id": "d", "year": 7, "extra": 2**62, "weighted_labels": {"C": 1.0}, "note": "text"},
    ]
    vectors = unit_vectors(len(payloads), seed=3)
    points = [
        StoredPoint(f"00000000-0000-4000-8000-00000000000{i}", p, v) for i, (p, v) in enumerate(zip(payloads, vectors))
    ]
    source = EdgeStore(tmp_path / "edge", "c")
    source.create(RECORD)
    source.upsert(points)
    export_parquet(source, tmp_path / "c.parquet", progress=False)
    columns = json.loads(pq.read_schema(tmp_path / "c.parquet").metadata[b"scinsearch"])["columns"]
    assert columns == {
        "image_id": "typed",
        "year": "json",
        "extra": "json",
        "weighted_labels": "typed",
        "note": "json",
        "sex_at_birth": "optional",  # a string where present: a string column, null = absent
        "condition_duration": "json",  # absent and None both occur: a null could not say which
    }
    target = EdgeStore(tmp_path / "target", "c")
    import_parquet(tmp_path / "c.parquet", target, progress=False)
    assert_identical({p.id: p for p in points}, every_point(target))
    source.close()
    target.close()


@pytest.mark.parametrize("kind", ["edge", "qdrant-client folder"])
def test_an_interrupted_export_resumes_and_ends_exact(tmp_path, source, source_points, monkeypatch, kind):
    settings = (
        Settings(qdrant_path=tmp_path / "t", collection="scin")
        if kind == "edge"
        else Settings(qdrant_client_path=tmp_path / "t", collection="scin")
    )
    store_class = EdgeStore if kind == "edge" else ClientStore
    real_upsert, calls = store_class.upsert, []

    def failing_upsert(self, points):
        calls.append(len(points))
        if len(calls) == 3:
            raise ScinSearchError("connection lost")
        real_upsert(self, points)

    monkeypatch.setattr(store_class, "upsert", failing_upsert)
    target = open_store(settings)
    with pytest.raises(ScinSearchError, match="connection lost"):
        copy_collection(source, target, page=5, progress=False)
    assert target.count() == 10
    target.close()
    monkeypatch.setattr(store_class, "upsert", real_upsert)

    target = open_store(settings)
    summary = copy_collection(source, target, page=5, progress=False)
    assert (summary.already_present, summary.copied) == (10, len(source_points) - 10)
    assert_identical({p.id: p for p in source_points}, every_point(target))
    target.close()


def test_an_interrupted_import_resumes(tmp_path, source, source_points, monkeypatch):
    export_parquet(source, tmp_path / "scin.parquet", progress=False)
    real_upsert, calls = EdgeStore.upsert, []

    def interrupted_upsert(self, points):
        calls.append(len(points))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C half way
        real_upsert(self, points)

    monkeypatch.setattr(EdgeStore, "upsert", interrupted_upsert)
    target = EdgeStore(tmp_path / "t", "scin")
    with pytest.raises(KeyboardInterrupt):
        import_parquet(tmp_path / "scin.parquet", target, page=8, progress=False)
    monkeypatch.setattr(EdgeStore, "upsert", real_upsert)
    assert target.count() == 8
    summary = import_parquet(tmp_path / "scin.parquet", target, page=8, progress=False)
    assert summary.already_present == 8 and summary.copied == len(source_points) - 8
    assert_identical({p.id: p for p in source_points}, every_point(target))
    target.close()


def test_verification_names_a_point_that_differs_and_a_count_that_does_not_match(tmp_path, source, source_points):
    target = EdgeStore(tmp_path / "t", "scin")
    copy_collection(source, target, progress=False)
    changed = source_points[-1]
    target.upsert([StoredPoint(changed.id, {**changed.payload, "condition": "Psoriasis"}, changed.vector)])
    with pytest.raises(ScinSearchError, match=f"point {changed.id} has another payload"):
        copy_collection(source, target, sample=len(source_points), progress=False)
    target.upsert([StoredPoint("00000000-0000-4000-8000-000000000001", {}, changed.vector)])
    with pytest.raises(ScinSearchError, match="holds 27 points, 26 were expected"):
        copy_collection(source, target, progress=False)
    target.close()


def test_export_to_memory_goes_through_the_server_code_path(capsys, edge_path):
    code, out, err = run(
        capsys, "export", "--qdrant-path", edge_path, "--collection", "scin", "--to-url", ":memory:", "--quiet"
    )
    assert code == 0, err
    assert "copied 26, already present 0 (of 26 points)" in out and "qdrant-client :memory:" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give exactly one target"),
        (["--to-url", ":memory:", "--to-parquet", "x.parquet"], "give exactly one target"),
        (["--to-edge-path", "{edge}"], "the source and the target are the same collection"),
        (["--to-parquet", "{exists}"], "exists: remove it or choose another file name"),
        (["--collection", "nope", "--to-url", ":memory:"], "does not exist"),
    ],
)
def test_export_mistakes_are_one_line(capsys, tmp_path, edge_path, extra, message):
    (tmp_path / "exists.parquet").write_bytes(b"keep me")
    extra = [a.format(edge=edge_path, exists=tmp_path / "exists.parquet") for a in extra]
    args = ["export", "--qdrant-path", edge_path, "--quiet"]
    code, _, err = run(capsys, *args, *(extra if "--collection" in extra else ["--collection", "scin", *extra]))
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "exists.parquet").read_bytes() == b"keep me"


def test_import_refuses_a_file_made_with_another_model(capsys, tmp_path, source):
    export_parquet(source, tmp_path / "scin.parquet", progress=False)
    target = EdgeStore(tmp_path / "t", "scin")
    target.create(CollectionInfo("google/siglip-so400m-patch14-384", 1152))
    target.close()
    code, _, err = run(
        capsys,
        "import",
        "--from-parquet",
        tmp_path / "scin.parquet",
        "--qdrant-path",
        tmp_path / "t",
        "--collection",
        "scin",
    )
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "holds 1152-d vectors of 'google/siglip-so400m-patch14-384'" in err and "16-d vectors" in err
    target = EdgeStore(tmp_path / "t", "scin")
    assert target.count() == 0 and target.info().dim == 1152
    target.close()


def test_import_command_loads_a_file_into_the_usual_store(capsys, tmp_path, source, source_points):
    export_parquet(source, tmp_path / "scin.parquet", progress=False)
    code, out, err = run(
        capsys, "import", "--from-parquet", tmp_path / "scin.parquet", "--qdrant-path", tmp_path / "t", "--quiet"
    )
    assert code == 0, err
    assert "collection 'scin_dermatology'" in out and "verified: 26 points in both" in out
    target = EdgeStore(tmp_path / "t", "scin_dermatology")
    assert_identical({p.id: p for p in source_points}, every_point(target))
    target.close()
