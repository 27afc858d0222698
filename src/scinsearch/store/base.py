"""The store's types, its interface, and what both backends share (written once, here).

A backend implements the few things that differ between Qdrant Edge and qdrant-client: opening and
creating a collection, writing, and the raw requests (`_retrieve_records`, `_scroll_page`,
`_query_points`, `_count`) plus the leaf filter types. The loops around them (batching, paging,
filter translation, converting results) live in `VectorStore` and are the same for both.
"""

from __future__ import annotations

import abc
import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from scinsearch.errors import ScinSearchError
from scinsearch.store.record import ADAPTED_FROM, ADAPTER_DIR, ADAPTER_ID, CALIBRATION, IMAGE_ROOT

RETRIEVE_BATCH = 1000  # ids per retrieve request when checking which points exist


@dataclasses.dataclass(frozen=True)
class Match:
    """Payload field `key` equals any of `values` (for list fields: any element does)."""

    key: str
    values: tuple


@dataclasses.dataclass(frozen=True)
class Range:
    """Numeric payload field `key` within [gte, lte] (either bound optional)."""

    key: str
    gte: float | None = None
    lte: float | None = None


@dataclasses.dataclass(frozen=True)
class Filter:
    must: tuple = ()
    must_not: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.must or self.must_not)

    def and_(self, other: Filter | None) -> Filter:
        if not other:
            return self
        return Filter(self.must + other.must, self.must_not + other.must_not)


class RecordKey:
    """A read-only attribute of `CollectionInfo` that is one key of its record (`extra`), None when absent."""

    def __init__(self, key: str):
        self.key = key

    def __get__(self, info, owner=None):
        return self if info is None else (info.extra or {}).get(self.key)


@dataclasses.dataclass
class CollectionInfo:
    """What a collection was made with; embedding into it with another model is refused.

    `preprocessing` ("fast" or "exact", see `embedding.Preprocessor.mode`) is how its images were
    prepared; queries are prepared the same way. Collections from before it was recorded were "fast"."""

    model: str
    dim: int
    extra: dict = dataclasses.field(default_factory=dict)
    preprocessing: str = "fast"

    def as_metadata(self) -> dict:
        return {
            "scinsearch_model": self.model,
            "scinsearch_dim": self.dim,
            "scinsearch_preprocessing": self.preprocessing,
            **self.extra,
        }

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> CollectionInfo | None:
        if not metadata or "scinsearch_model" not in metadata:
            return None
        own = ("scinsearch_model", "scinsearch_dim", "scinsearch_preprocessing")
        extra = {k: v for k, v in metadata.items() if k not in own}
        return cls(
            str(metadata["scinsearch_model"]),
            int(metadata["scinsearch_dim"]),
            extra,
            str(metadata.get("scinsearch_preprocessing", "fast")),
        )

    def same_space(self, model: str, dim: int | None = None) -> bool:
        """Do vectors of `model` (`dim`-d; None: any size) belong beside this collection's? The one answer
        every caller uses (embedding into it, searching it, copying into it, an adapter's or a calibration's
        base). Whether the vectors went through an adapter is `adapter_id`, checked apart."""
        return self.model == model and (dim is None or int(self.dim) == int(dim))

    # The record's keys other stages write (`store.record`), read by name: None when absent.
    image_root = RecordKey(IMAGE_ROOT)  # the folder `embed` read the images from
    adapter_id = RecordKey(ADAPTER_ID)  # the adapter the vectors went through (`finetune apply`); None: frozen
    adapter_dir = RecordKey(ADAPTER_DIR)
    adapted_from = RecordKey(ADAPTED_FROM)
    calibration_document = RecordKey(CALIBRATION)  # raw; `calibration.calibration_of` reads it


@dataclasses.dataclass
class StoredPoint:
    id: str
    payload: dict[str, Any]
    vector: np.ndarray | None = None


@dataclasses.dataclass
class Hit(StoredPoint):
    score: float = 0.0


class VectorStore(abc.ABC):
    """What the rest of scinsearch needs from Qdrant: one collection. Both backends subclass this and
    pass the same test suite (tests/test_store.py); callers only ever see the types above."""

    name: str
    where: str = "the store"  # the store in words, for errors that name it (each backend sets its own)
    # How far a stored vector may be from the one written (0: bit-identical). Qdrant's engine (Edge, a
    # server) keeps a unit vector as given; qdrant-client's local mode divides it by its norm again.
    vector_tolerance: float = 0.0

    # What each backend implements -------------------------------------------------------------------

    @abc.abstractmethod
    def info(self) -> CollectionInfo | None:
        """What the collection was made with, or None when it does not exist (or scinsearch did not make it)."""

    @abc.abstractmethod
    def create(self, info: CollectionInfo, recreate: bool = False) -> None:
        """Make the collection with its payload indexes; keep an existing one unless `recreate`."""

    @abc.abstractmethod
    def update_metadata(self, extra: dict) -> None:
        """Add or replace keys of the collection's record (`CollectionInfo.extra`); the others are kept."""

    @abc.abstractmethod
    def upsert(self, points: Sequence[StoredPoint]) -> None:
        """Write points (same id: replaced, so re-running a write is harmless)."""

    @abc.abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Remove the points of `ids` (how a failed import takes back what it wrote)."""

    @abc.abstractmethod
    def drop(self) -> None:
        """Delete the whole collection, record and points: afterwards `info()` is None (how a failed import
        into a collection it made leaves no collection behind)."""

    @abc.abstractmethod
    def finish_writes(self) -> None:
        """Make what was written durable and fast to search."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the collection (the embedded store allows one process at a time)."""

    @abc.abstractmethod
    def _retrieve_records(self, ids: list[str], with_payload: bool, with_vectors: bool) -> list:
        """The backend's records (with .id, .payload, .vector) of the given point ids."""

    @abc.abstractmethod
    def _scroll_page(self, native_filter, offset, limit: int, with_vectors: bool) -> tuple[list, Any]:
        """One page of records and the offset of the next page (None after the last)."""

    @abc.abstractmethod
    def _query_points(
        self, vector: list[float], limit: int, native_filter, min_score: float | None, with_vectors: bool
    ) -> list:
        """The backend's scored points (with .id, .payload, .vector, .score), best first."""

    @abc.abstractmethod
    def _count(self, native_filter) -> int:
        """The exact number of points matching the filter."""

    @abc.abstractmethod
    def _filter(self, must: list | None, must_not: list | None):
        """The backend's filter from its conditions."""

    @abc.abstractmethod
    def _match_any(self, key: str, values: list):
        """The backend's condition: field `key` equals any of `values`."""

    @abc.abstractmethod
    def _match_value(self, key: str, value: bool):
        """The backend's condition: field `key` equals one boolean."""

    @abc.abstractmethod
    def _range(self, key: str, gte: float | None, lte: float | None):
        """The backend's condition: numeric field `key` within [gte, lte]."""

    # Shared by both backends --------------------------------------------------------------------------

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` are stored (how `embed` resumes), asked in batches."""
        found: set[str] = set()
        for start in range(0, len(ids), RETRIEVE_BATCH):
            records = self._retrieve_records(list(ids[start : start + RETRIEVE_BATCH]), False, False)
            found.update(str(record.id) for record in records)
        return found

    def query(
        self,
        vector: np.ndarray,
        limit: int,
        filter: Filter | None = None,
        min_score: float | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """The `limit` points nearest to `vector` (cosine), best first, within `filter`."""
        points = self._query_points(vector_list(vector), limit, self.native_filter(filter), min_score, with_vectors)
        return [Hit(str(p.id), p.payload or {}, as_vector(p.vector), float(p.score)) for p in points]

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        """The stored points of `ids`; ids that cannot name a point are skipped, not an error."""
        valid = [i for i in ids if is_uuid(i)]
        records = self._retrieve_records(valid, True, with_vectors) if valid else []
        return [StoredPoint(str(r.id), r.payload or {}, as_vector(r.vector)) for r in records]

    def scroll(
        self, filter: Filter | None = None, with_vectors: bool = False, page: int = 256
    ) -> Iterator[StoredPoint]:
        """Every point within `filter`, page by page."""
        native_filter, offset = self.native_filter(filter), None
        while True:
            records, offset = self._scroll_page(native_filter, offset, page, with_vectors)
            for r in records:
                yield StoredPoint(str(r.id), r.payload or {}, as_vector(r.vector))
            if offset is None:
                return

    def count(self, filter: Filter | None = None) -> int:
        return self._count(self.native_filter(filter))

    def native_filter(self, filter: Filter | None):
        """Our `Filter` in the backend's types; None for no restriction."""
        if not filter:
            return None
        return self._filter(
            [self.native_condition(c) for c in filter.must] or None,
            [self.native_condition(c) for c in filter.must_not] or None,
        )

    def native_condition(self, condition: Match | Range):
        if isinstance(condition, Range):
            return self._range(condition.key, condition.gte, condition.lte)
        values = list(condition.values)
        if len(values) == 1 and isinstance(values[0], bool):
            return self._match_value(condition.key, values[0])
        return self._match_any(condition.key, values)


def require_collection(store: VectorStore) -> CollectionInfo:
    """The collection's info, or a one-line error saying how to make it."""
    info = store.info()
    if info is None:
        raise ScinSearchError(
            f"collection {store.name!r} does not exist in {store.where} or was not made by scinsearch: "
            f"run `scinsearch embed` first, or give the store that holds it (--qdrant-path / --qdrant-url)"
        )
    return info


def check_model(store: VectorStore, model: str, dim: int | None = None) -> CollectionInfo:
    """Refuse to mix vectors of different models in one collection."""
    info = require_collection(store)
    if not info.same_space(model, dim):
        raise ScinSearchError(
            f"collection {store.name!r} holds {info.dim}-d vectors of {info.model!r}, "
            f"not of {model!r}: use --model {info.model} or another --collection"
        )
    return info


def vector_list(vector) -> list[float]:
    """A vector as the plain float32 list both Qdrant clients take."""
    return np.asarray(vector, dtype=np.float32).tolist()


def as_vector(vector) -> np.ndarray | None:
    """A backend's returned vector (a list, or a {name: list} dict) as float32 numpy, or None."""
    if vector is None:
        return None
    if isinstance(vector, dict):
        vector = next(iter(vector.values()))
    return np.asarray(vector, dtype=np.float32)


def is_uuid(text: str) -> bool:
    """Point ids are uuid5 strings; anything else cannot name a stored point (and would make Qdrant fail)."""
    try:
        uuid.UUID(str(text))
        return True
    except ValueError:
        return False
