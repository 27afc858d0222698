"""A hostile `scinsearch import` (issue 23): nothing of the file is trusted that the operator did not choose.

- The file's `image_root` is never taken: a file saying `/` with an `image_path` under `/tmp` made
  `serve` return that private file from `/images/{id}`; now no file outside the operator's folder is served.
- Image paths that leave the images folder (absolute, `..`, a link) and vectors whose norm is not that of
  a unit vector (3e38 in every component is finite but normalises to zero) are refused before a write.
- A failed verification leaves the target as it was: the collection it made is dropped, the points it
  added to an existing one are removed. Both store backends.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from scinsearch.cli import main
from scinsearch.errors import ScinSearchError
from scinsearch.schema import point_id_for
from scinsearch.search import Searcher
from scinsearch.service import ServiceSettings, create_app
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, StoredPoint, open_store
from scinsearch.store.edge import EdgeStore
from scinsearch.transfer import export_parquet, import_parquet
from scinsearch.transfer.parquet import NORM_RANGE

DIM = 8
MODEL = "model-a"


def unit_vectors(count: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def payload(image_id: str, image_path: str | None = None) -> dict:
    return {
        "image_id": image_id,
        "image_path": image_path or f"dataset/images/{image_id}.png",
        "case_id": f"case-{image_id}",
        "case_ids": [f"case-{image_id}"],
    }


def exported(folder: Path, payloads: list[dict], record: dict | None = None, model=MODEL, dim=DIM) -> Path:
    """A Parquet file written by `export --to-parquet` from an Edge collection holding `payloads`."""
    source = EdgeStore(folder / "source", "c")
    source.create(CollectionInfo(model, dim, record or {}))
    vectors = unit_vectors(len(payloads), dim)
    source.upsert([StoredPoint(point_id_for(p["image_id"]), p, v) for p, v in zip(payloads, vectors)])
    export_parquet(source, folder / "export.parquet", progress=False)
    source.close()
    return folder / "export.parquet"


def rewritten(good: Path, change, folder: Path) -> Path:
    """The file's table passed through `change(table) -> table`, its metadata kept, written in `folder`."""
    table = pq.read_table(good)
    metadata = table.schema.metadata
    bad = folder / "hostile.parquet"
    pq.write_table(change(table).replace_schema_metadata(metadata), bad)
    return bad


def set_column(table: pa.Table, name: str, array: pa.Array) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), array)


def snapshot(store) -> tuple:
    """Everything a reader of the collection sees: its record and every point, vectors as bytes."""
    info = store.info()
    if info is None:
        return None, {}
    points = {p.id: (json.dumps(p.payload), p.vector.tobytes()) for p in store.scroll(with_vectors=True)}
    return info.as_metadata(), points


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    """Read only (tests write their changed copies in their own folders): exported once per module."""
    return exported(tmp_path_factory.mktemp("good-file"), [payload(f"img{i}") for i in range(12)])


# The file's image folder is never served ------------------------------------------------------------------


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def image_status(store_settings: Settings, tiny_embedder, image_id: str, **service) -> tuple[int, bytes]:
    store = open_store(store_settings)
    searcher = Searcher(store_settings, embedder=tiny_embedder, store=store)
    app = create_app(ServiceSettings(search=store_settings, warm_up=False, **service), searcher=searcher)
    try:
        with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as client:
            response = client.get(f"/images/{image_id}")
            return response.status_code, response.content
    finally:
        searcher.close()
        store.close()


def test_a_files_image_root_never_makes_serve_read_another_file(tmp_path, tiny_embedder):
    """The attack of issue 23: image_root '/' and an image_path that is the private file's, relative to '/'."""
    private = tmp_path / "private" / "patient.jpg"
    private.parent.mkdir()
    private.write_bytes(jpeg())
    relative = str(private.resolve().relative_to("/"))  # tmp/.../private/patient.jpg: relative, no '..'
    hostile = exported(
        tmp_path,
        [payload("private", relative), payload("other")],
        record={"image_root": "/"},
        model=tiny_embedder.model_name,
        dim=tiny_embedder.dim,
    )
    settings = Settings(qdrant_path=tmp_path / "store", collection="scin", model=tiny_embedder.model_name)
    store = open_store(settings)
    import_parquet(hostile, store, progress=False)  # the path is harmless text until a folder is chosen
    store.close()
    status, body = image_status(settings, tiny_embedder, "private")
    assert status == 404 and body != private.read_bytes()
    store = open_store(settings)
    assert store.info().image_root is None, "the file's image_root is not recorded"
    store.close()
    status, body = image_status(settings, tiny_embedder, "private", images_dir=Path("/"))
    assert status == 404 and body != private.read_bytes(), "a file system's root is never an images folder"
    images = tmp_path / "images"
    (images / "dataset" / "images").mkdir(parents=True)
    (images / "dataset" / "images" / "other.png").write_bytes(jpeg())
    assert image_status(settings, tiny_embedder, "other", images_dir=images)[0] == 200  # the operator's folder


def test_import_images_dir_is_recorded_and_every_path_must_stay_inside_it(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "secret.png").write_bytes(b"secret")
    (images / "link.png").symlink_to(tmp_path / "secret.png")
    good = exported(tmp_path / "good", [payload("a"), payload("b")], record={"image_root": "/"})
    target = EdgeStore(tmp_path / "target", "c")
    import_parquet(good, target, progress=False, images_dir=images)
    assert target.info().image_root == str(images.resolve())
    target.close()
    for name, path in [("link", "link.png"), ("absolute", str(tmp_path / "secret.png")), ("up", "../secret.png")]:
        hostile = exported(tmp_path / name, [payload("a"), payload(name, path)])
        fresh = EdgeStore(tmp_path / f"target-{name}", "c")
        with pytest.raises(ScinSearchError, match="leaves the images folder") as failure:
            import_parquet(hostile, fresh, progress=False, images_dir=images)
        assert "\n" not in str(failure.value) and fresh.info() is None
        fresh.close()


@pytest.mark.parametrize("path", ["/etc/passwd", "../../etc/passwd", "dataset/../../x.png", "a\\..\\..\\b.png"])
def test_paths_that_leave_any_folder_by_their_text_are_refused_without_images_dir(tmp_path, path):
    hostile = exported(tmp_path, [payload("a"), payload("b", path)])
    target = EdgeStore(tmp_path / "target", "c")
    with pytest.raises(ScinSearchError, match="leaves the images folder"):
        import_parquet(hostile, target, progress=False)
    assert target.info() is None
    target.close()


def test_import_command_takes_images_dir(capsys, tmp_path, good_file):
    images = tmp_path / "images"
    images.mkdir()
    code = main(
        ["import", "--from-parquet", str(good_file), "--qdrant-path", str(tmp_path / "q"), "--images-dir", str(images)]
    )
    assert code == 0, capsys.readouterr().err
    store = EdgeStore(tmp_path / "q", "scin_dermatology")
    assert store.info().image_root == str(images.resolve()) and store.count() == 12
    store.close()


# Vectors that are not unit vectors -------------------------------------------------------------------------


def with_vector(value: float, row: int = 3):
    def change(table: pa.Table) -> pa.Table:
        values = unit_vectors(table.num_rows).reshape(-1)
        values[row * DIM : (row + 1) * DIM] = value
        return set_column(table, "vector", pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), DIM))

    return change


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing"])
@pytest.mark.parametrize("value", [3e38, 1e-30, 0.0, 10.0])
def test_vectors_that_are_not_unit_vectors_are_refused_and_nothing_is_left(store, good_file, tmp_path, existing, value):
    if existing:
        store.create(CollectionInfo(MODEL, DIM))
        store.upsert([StoredPoint(point_id_for("kept"), payload("kept"), unit_vectors(1, seed=5)[0])])
    before = snapshot(store)
    hostile = rewritten(good_file, with_vector(value), tmp_path)
    with pytest.raises(ScinSearchError, match=r"has a vector of norm .* outside \[0.5, 2\]") as failure:
        import_parquet(hostile, store, progress=False)
    assert "\n" not in str(failure.value) and snapshot(store) == before
    assert NORM_RANGE == (0.5, 2.0)  # the bound docs/security.md states


# A failed verification leaves the target as it was --------------------------------------------------------


def repeated_id(table: pa.Table) -> pa.Table:
    """The last row takes the first row's id: every row passes the checks, the store then holds one point
    fewer than the file's rows, and the verification fails after everything was written."""
    ids = table.column("point_id").to_pylist()
    ids[-1] = ids[0]
    return set_column(table, "point_id", pa.array(ids, pa.string()))


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing"])
def test_a_failed_verification_leaves_the_target_as_it_was(store, store_settings, good_file, tmp_path, existing):
    if existing:
        store.create(CollectionInfo(MODEL, DIM, {"image_root": "/data/scin"}))
        kept = [
            StoredPoint(point_id_for(f"kept{i}"), payload(f"kept{i}"), v) for i, v in enumerate(unit_vectors(3, seed=9))
        ]
        store.upsert(kept)
        store.finish_writes()
    before = snapshot(store)
    with pytest.raises(ScinSearchError, match="verification failed"):
        import_parquet(rewritten(good_file, repeated_id, tmp_path), store, page=5, progress=False)
    assert snapshot(store) == before
    if existing:
        assert store.count() == 3
    elif not store_settings.uses_server:  # Edge: opening the folder afresh finds no collection either
        store.close()
        reopened = open_store(store_settings)
        assert reopened.info() is None and not list(reopened.folder.glob("shard*"))
        reopened.close()
