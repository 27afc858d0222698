"""A collection as one Parquet file (one row per image), and back into any store.

The file's layout is documented once, in docs/storage.md#the-parquet-file: `point_id`, `vector` (a
fixed-size list of float32), one column per payload field, and the collection record in the schema
metadata under `scinsearch`. A field declared in `scinsearch.schema` gets a typed column when every
point that holds it holds a value of its declared type (lists as lists, `weighted_labels` as a map):
null is the value None when every point holds the field (`typed`), else a point lacking it (`optional`,
which no point may then hold as None); any other field is a column of JSON text, where null means the
point lacks the field. All round-trip exactly, and version 1 files (no `optional` columns: a field some
points lack was JSON text) are still read.

On import the file is untrusted: its metadata, column names and types, row group sizes, ids, vector
values and JSON cells are checked before anything is written, and it is read a page at a time.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from scinsearch.calibration.record import METADATA_KEY as CALIBRATION_KEY
from scinsearch.calibration.record import calibration_of
from scinsearch.errors import ScinSearchError
from scinsearch.helpers import atomic_descriptor, first_line
from scinsearch.schema import BY_NAME
from scinsearch.store import CollectionInfo, StoredPoint, VectorStore, require_collection
from scinsearch.transfer.copy import (
    PAGE,
    SAMPLE,
    Sampler,
    TransferSummary,
    batched,
    difference,
)

FORMAT, VERSION = "scinsearch-parquet", 2
READABLE_VERSIONS = (1, 2)  # 2 added OPTIONAL columns
METADATA_KEY = b"scinsearch"
ID_COLUMN, VECTOR_COLUMN = "point_id", "vector"
TYPED, OPTIONAL, JSON_TEXT = "typed", "optional", "json"  # OPTIONAL: typed, and null means the field is absent
ARROW_TYPES = {  # schema.Field.type -> the column's Arrow type
    "keyword": pa.string(),
    "text": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "keyword[]": pa.list_(pa.string()),
    "checkboxes": pa.list_(pa.string()),
    "integer[]": pa.list_(pa.int64()),
    "dict": pa.map_(pa.string(), pa.float64()),  # label -> weight, in the stored order
}
# Limits on an untrusted file.
MAX_METADATA_BYTES = 1 << 20
MAX_COLUMNS = 1024
MAX_FIELD_NAME = 256
MAX_DIM = 65_536  # Qdrant's own limit on a vector's size
MAX_ROW_GROUP_BYTES = 512 << 20  # uncompressed: one row group is read at a time
MAX_JSON_CELL = 1 << 20
# A vector's norm: scinsearch writes unit vectors (float32 rounding keeps them within 1e-6 of 1); a factor
# of two either way leaves room for any other tool's rounding and refuses a vector that normalises to
# zero or overflows in the store (docs/security.md).
NORM_RANGE = (0.5, 2.0)
INT64 = (-(2**63), 2**63 - 1)


def is_int64(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and INT64[0] <= value <= INT64[1]


def fits(value, kind: str) -> bool:
    """Whether a payload value fits the typed column of a schema field of type `kind` exactly."""
    if value is None:
        return True
    if kind in ("keyword", "text"):
        return isinstance(value, str)
    if kind == "integer":
        return is_int64(value)
    if kind == "float":
        return isinstance(value, float)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("keyword[]", "checkboxes"):
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind == "integer[]":
        return isinstance(value, list) and all(is_int64(item) for item in value)
    if kind == "dict":
        return isinstance(value, dict) and all(isinstance(v, float) for v in value.values())
    return False


def check_field_name(name) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_FIELD_NAME or name in (ID_COLUMN, VECTOR_COLUMN):
        shown = repr(name)[:80]
        raise ScinSearchError(
            f"payload field {shown} cannot be a Parquet column (empty, over {MAX_FIELD_NAME} characters, "
            f"or named {ID_COLUMN!r}/{VECTOR_COLUMN!r})"
        )


# Writing -----------------------------------------------------------------------------------------------


def plan_columns(source: VectorStore, total: int, page: int, progress: bool) -> dict[str, str]:
    """First pass (payloads only): every field, in the order first seen, and whether it gets a typed column."""
    seen: dict[str, int] = {}
    typed: dict[str, bool] = {}
    nulls: set[str] = set()  # fields some point holds as None
    points = source.scroll(page=page)
    for point in tqdm(points, total=total, unit="pt", desc="reading fields", disable=not progress, leave=False):
        for name, value in point.payload.items():
            if name not in seen:
                check_field_name(name)
                seen[name], typed[name] = 0, name in BY_NAME and BY_NAME[name].type in ARROW_TYPES
            seen[name] += 1
            if value is None:
                nulls.add(name)
            if typed[name] and not fits(value, BY_NAME[name].type):
                typed[name] = False
    return {name: column_kind(typed[name], seen[name] == total, name in nulls) for name in seen}


def column_kind(typed: bool, everywhere: bool, has_none: bool) -> str:
    """How a field's column is written: its own type wherever a null can say only one thing."""
    if typed and everywhere:
        return TYPED  # null: the value None
    if typed and not has_none:
        return OPTIONAL  # null: the point lacks the field
    return JSON_TEXT


def arrow_schema(info: CollectionInfo, collection: str, columns: dict[str, str], rows: int) -> pa.Schema:
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "collection": collection,
        "record": info.as_metadata(),
        "columns": columns,
        "rows": rows,
    }
    fields = [
        pa.field(ID_COLUMN, pa.string(), nullable=False),
        pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), info.dim), nullable=False),
    ]
    fields += [
        pa.field(name, ARROW_TYPES[BY_NAME[name].type] if kind in (TYPED, OPTIONAL) else pa.string())
        for name, kind in columns.items()
    ]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, ensure_ascii=False).encode()})


def record_batch(points: list[StoredPoint], schema: pa.Schema, columns: dict[str, str], dim: int) -> pa.RecordBatch:
    for point in points:
        if point.vector is None or point.vector.shape != (dim,):
            raise ScinSearchError(f"point {point.id} has no {dim}-d vector")
        unknown = point.payload.keys() - columns.keys()
        if unknown:
            raise ScinSearchError(
                f"the collection changed during the export (new field {min(unknown)!r}): run it again"
            )
    vectors = np.stack([point.vector for point in points]).astype(np.float32, copy=False).reshape(-1)
    arrays = [
        pa.array([point.id for point in points], pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(vectors, pa.float32()), dim),
    ]
    for name, kind in columns.items():
        if kind in (TYPED, OPTIONAL):
            arrays.append(pa.array([point.payload.get(name) for point in points], schema.field(name).type))
        else:
            arrays.append(
                pa.array(
                    [json.dumps(p.payload[name], ensure_ascii=False) if name in p.payload else None for p in points],
                    pa.string(),
                )
            )
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def export_parquet(
    source: VectorStore, path: Path, page: int = PAGE * 4, sample: int = SAMPLE, progress: bool = True
) -> TransferSummary:
    """Write every point of `source` to a new Parquet file at `path` (written beside it to a temporary
    file created exclusively, checked, then renamed: the file appears only complete, and nothing is
    ever written through a link planted beside it)."""
    started = time.perf_counter()
    path = Path(path).expanduser()
    if path.exists():
        raise ScinSearchError(f"{path} exists: remove it or choose another file name")
    if not path.parent.is_dir():
        raise ScinSearchError(f"no folder {path.parent} to write {path.name} into")
    info = require_collection(source)
    total = source.count()
    columns = plan_columns(source, total, page, progress)
    schema = arrow_schema(info, source.name, columns, total)
    summary = TransferSummary(source.name, str(path), points=total)
    sampler = Sampler(total, sample)
    try:
        with atomic_descriptor(path) as (partial, descriptor):
            with open(descriptor, "wb") as sink, pq.ParquetWriter(sink, schema) as writer:
                points = source.scroll(with_vectors=True, page=page)
                with tqdm(total=total, unit="pt", desc="writing", disable=not progress, dynamic_ncols=True) as bar:
                    for batch in batched(points, page):
                        writer.write_batch(record_batch(batch, schema, columns, info.dim))
                        sampler.offer(batch)
                        summary.copied += len(batch)
                        bar.update(len(batch))
            summary.checked = verify_file(partial, info, total, sampler.points)
    except OSError as exc:
        raise ScinSearchError(f"cannot write {path}: {exc.strerror or exc}") from None
    summary.seconds = time.perf_counter() - started
    return summary


def verify_file(path: Path, info: CollectionInfo, total: int, sample: list[StoredPoint]) -> int:
    """Read the written file back as an import would: same record, `total` rows, the sample identical."""
    written = ParquetPoints(path)
    if written.rows != total or written.info.as_metadata() != info.as_metadata():
        raise ScinSearchError(f"verification failed: {path} holds {written.rows} rows, {total} were expected")
    wanted = {point.id: point for point in sample}
    found = 0
    for batch in written.batches(PAGE * 4):
        for point in batch:
            if point.id in wanted:
                problem = difference(wanted[point.id], point)
                if problem:
                    raise ScinSearchError(f"verification failed: point {point.id} {problem} in {path}")
                found += 1
    if found != len(wanted):
        raise ScinSearchError(f"verification failed: {len(wanted) - found} sampled points are missing from {path}")
    return found


# Reading an untrusted file -------------------------------------------------------------------------------


class ParquetPoints:
    """A scinsearch Parquet file, checked before a single point is read."""

    def __init__(self, path: Path):
        self.path = Path(path).expanduser()
        try:
            self.file = pq.ParquetFile(self.path)
            schema = self.file.schema_arrow
        except FileNotFoundError:
            raise ScinSearchError(f"no file {self.path}") from None
        except (OSError, pa.ArrowException) as exc:
            raise ScinSearchError(f"{self.path} is not a readable Parquet file: {first_line(exc)}") from None
        metadata = self.read_metadata(schema)
        self.info = self.read_record(metadata.get("record"))
        self.collection = str(metadata.get("collection", ""))
        self.columns = self.check_columns(schema, metadata.get("columns"))
        self.rows = self.file.metadata.num_rows
        if metadata.get("rows") != self.rows:
            self.fail(f"it holds {self.rows} rows, its metadata says {metadata.get('rows')!r}")
        for index in range(self.file.metadata.num_row_groups):
            if self.file.metadata.row_group(index).total_byte_size > MAX_ROW_GROUP_BYTES:
                self.fail(f"row group {index} is over {MAX_ROW_GROUP_BYTES >> 20} MiB")

    def fail(self, reason: str):
        raise ScinSearchError(f"{self.path} is not a scinsearch Parquet export: {reason}")

    def read_metadata(self, schema: pa.Schema) -> dict:
        raw = (schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            self.fail("no collection record in its metadata (write it with `scinsearch export --to-parquet`)")
        if len(raw) > MAX_METADATA_BYTES:
            self.fail(f"its metadata is over {MAX_METADATA_BYTES >> 10} KiB")
        try:
            metadata = json.loads(raw)
        except (ValueError, RecursionError):
            self.fail("its metadata is not JSON")
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            self.fail("its metadata names another format")
        if metadata.get("version") not in READABLE_VERSIONS:
            self.fail(
                f"format version {metadata.get('version')!r}; this scinsearch reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        self.version = metadata["version"]
        return metadata

    def read_record(self, record) -> CollectionInfo:
        """The collection record: model and preprocessing as text, a sane size, plain values only, except a
        calibration record (`scinsearch calibrate`), which must be one for this model and vector size."""
        plain = {k: v for k, v in record.items() if k != CALIBRATION_KEY} if isinstance(record, dict) else None
        if plain is None or not all(isinstance(v, (str, int, float, bool)) for v in plain.values()):
            self.fail("its collection record is not a flat JSON object")
        dim = record.get("scinsearch_dim")
        if not is_int64(dim) or not 1 <= dim <= MAX_DIM:
            self.fail(f"vector size {dim!r} is not between 1 and {MAX_DIM}")
        if not isinstance(record.get("scinsearch_model"), str) or not record["scinsearch_model"]:
            self.fail("its collection record names no model")
        if record.get("scinsearch_preprocessing", "fast") not in ("fast", "exact"):
            self.fail("its collection record names an unknown preprocessing")
        info = CollectionInfo.from_metadata(record)
        try:
            calibration_of(info)
        except ScinSearchError as exc:
            self.fail(f"its calibration record is unusable ({exc})")
        return info

    def check_columns(self, schema: pa.Schema, columns) -> dict[str, str]:
        """The columns the metadata declares, in the file, each of the type its declaration implies."""
        if not isinstance(columns, dict) or len(columns) > MAX_COLUMNS:
            self.fail(f"its metadata declares no columns, or over {MAX_COLUMNS}")
        if schema.names != [ID_COLUMN, VECTOR_COLUMN, *columns]:
            self.fail(f"its columns are not {ID_COLUMN}, {VECTOR_COLUMN} and the payload fields its metadata names")
        if schema.field(ID_COLUMN).type != pa.string():
            self.fail(f"{ID_COLUMN} is not text")
        if schema.field(VECTOR_COLUMN).type != pa.list_(pa.float32(), self.info.dim):
            self.fail(f"{VECTOR_COLUMN} is not a fixed-size list of {self.info.dim} float32")
        for name, kind in columns.items():
            check_field_name(name)
            typed_kinds = (TYPED, OPTIONAL) if self.version >= 2 else (TYPED,)
            if kind in typed_kinds and name in BY_NAME and BY_NAME[name].type in ARROW_TYPES:
                expected = ARROW_TYPES[BY_NAME[name].type]
            elif kind == JSON_TEXT:
                expected = pa.string()
            else:
                self.fail(f"column {name!r} is declared {kind!r}")
            if schema.field(name).type != expected:
                self.fail(f"column {name!r} is {schema.field(name).type}, not {expected}")
        return dict(columns)

    def batches(self, page: int = PAGE) -> Iterator[list[StoredPoint]]:
        """The points, `page` at a time (one row group in memory at most), each checked."""
        try:
            for batch in self.file.iter_batches(batch_size=page):
                yield self.decode(batch)
        except (OSError, pa.ArrowException) as exc:
            self.fail(f"unreadable data: {first_line(exc)}")

    def decode(self, batch: pa.RecordBatch) -> list[StoredPoint]:
        ids, vectors = batch.column(ID_COLUMN), batch.column(VECTOR_COLUMN)
        if ids.null_count or vectors.null_count:
            self.fail("a row has no point id or no vector")
        values = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if not np.all(np.isfinite(values)):
            self.fail("a vector holds NaN or infinity")
        matrix = values.reshape(len(batch), self.info.dim)
        self.check_norms(matrix, ids)
        payloads: list[dict] = [{} for _ in range(len(batch))]
        for name, kind in self.columns.items():
            cells = batch.column(name).to_pylist()
            for payload, cell in zip(payloads, cells):
                if kind == TYPED or (kind == OPTIONAL and cell is not None):
                    payload[name] = self.typed_value(name, cell)
                elif kind == JSON_TEXT and cell is not None:
                    payload[name] = self.json_value(name, cell)
        return [
            StoredPoint(self.point_id(raw), payload, matrix[i].copy())
            for i, (raw, payload) in enumerate(zip(ids.to_pylist(), payloads))
        ]

    def check_norms(self, matrix: np.ndarray, ids: pa.Array) -> None:
        """scinsearch stores unit vectors; a norm outside NORM_RANGE (3e38 in every component is finite,
        but normalises to zero in the store and would be served with score 0) is refused."""
        norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
        outside = np.flatnonzero(~((norms >= NORM_RANGE[0]) & (norms <= NORM_RANGE[1])))
        if outside.size:
            first = int(outside[0])
            self.fail(
                f"point {str(ids[first])[:40]} has a vector of norm {norms[first]:.3g}, outside "
                f"[{NORM_RANGE[0]:g}, {NORM_RANGE[1]:g}] (scinsearch stores unit vectors)"
            )

    def point_id(self, raw: str) -> str:
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            self.fail(f"point id {raw[:60]!r} is not a UUID")

    def typed_value(self, name: str, cell):
        if BY_NAME[name].type == "dict" and cell is not None:
            cell = dict(cell)  # Arrow gives a map as (key, value) pairs, in the stored order
            if not all(np.isfinite(value) for value in cell.values() if value is not None):
                self.fail(f"column {name!r} holds NaN or infinity")
        if BY_NAME[name].type == "float" and cell is not None and not np.isfinite(cell):
            self.fail(f"column {name!r} holds NaN or infinity")
        return cell

    def json_value(self, name: str, cell: str):
        if len(cell) > MAX_JSON_CELL:
            self.fail(f"a value of {name!r} is over {MAX_JSON_CELL >> 10} KiB")
        try:
            return json.loads(cell, parse_constant=reject_constant)
        except (ValueError, RecursionError):
            self.fail(f"a value of {name!r} is not JSON (or holds NaN or infinity)")


def reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON value a payload may hold")
