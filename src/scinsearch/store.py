"""The vector store: one small interface, two Qdrant backends chosen by one setting.

- Embedded (default): Qdrant Edge, the Qdrant engine in-process, one shard per collection under
  `<qdrant_path>/<collection>/`. No server to start; one process at a time owns it.
- Server: qdrant-client against a Qdrant server or cluster (`qdrant_url`), or its in-process
  `:memory:` mode, which runs the same client code and is what the tests use for this path.

Callers only see the types below (`Filter`, `Hit`, `StoredPoint`, `CollectionInfo`), never a backend's.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from scinsearch.errors import ScinSearchError
from scinsearch.settings import Settings

# Fields people filter on get a payload index (keyword unless listed otherwise).
INDEXED_FIELDS = {
    "image_id": "keyword", "case_id": "keyword", "case_ids": "keyword", "condition": "keyword",
    "conditions": "keyword", "fitzpatrick_skin_type": "keyword", "dermatologist_fitzpatrick_skin_type": "keyword",
    "skin_type_group": "keyword", "dermatologist_skin_type_group": "keyword", "age_group": "keyword",
    "sex_at_birth": "keyword", "body_parts": "keyword", "split": "keyword", "gradable": "bool",
    "labelled": "bool", "monk_skin_tone_label_us": "integer", "monk_skin_tone_label_india": "integer",
}
EXACT_SEARCH_BELOW = 20_000  # points; under this, exact search is a few ms and beats an approximate index


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

    def and_(self, other: "Filter | None") -> "Filter":
        if not other:
            return self
        return Filter(self.must + other.must, self.must_not + other.must_not)


@dataclasses.dataclass
class CollectionInfo:
    """What a collection was made with; embedding into it with another model is refused."""
    model: str
    dim: int
    extra: dict = dataclasses.field(default_factory=dict)

    def as_metadata(self) -> dict:
        return {"scinsearch_model": self.model, "scinsearch_dim": self.dim, **self.extra}

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> "CollectionInfo | None":
        if not metadata or "scinsearch_model" not in metadata:
            return None
        extra = {k: v for k, v in metadata.items() if k not in ("scinsearch_model", "scinsearch_dim")}
        return cls(str(metadata["scinsearch_model"]), int(metadata["scinsearch_dim"]), extra)


@dataclasses.dataclass
class StoredPoint:
    id: str
    payload: dict[str, Any]
    vector: np.ndarray | None = None


@dataclasses.dataclass
class Hit(StoredPoint):
    score: float = 0.0


class VectorStore(Protocol):
    """What the rest of scinsearch needs from Qdrant. Both backends pass the same test suite."""

    name: str

    def info(self) -> CollectionInfo | None: ...
    def create(self, info: CollectionInfo, recreate: bool = False) -> None: ...
    def existing_ids(self, ids: Sequence[str]) -> set[str]: ...
    def upsert(self, points: Sequence[StoredPoint]) -> None: ...
    def query(self, vector: np.ndarray, limit: int, filter: Filter | None = None,
              min_score: float | None = None, with_vectors: bool = False) -> list[Hit]: ...
    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]: ...
    def scroll(self, filter: Filter | None = None, with_vectors: bool = False,
               page: int = 256) -> Iterator[StoredPoint]: ...
    def count(self, filter: Filter | None = None) -> int: ...
    def finish_writes(self) -> None: ...
    def close(self) -> None: ...


def open_store(settings: Settings) -> VectorStore:
    """The backend the settings name: a server URL or ':memory:' -> qdrant-client; else Qdrant Edge."""
    if settings.uses_server:
        from scinsearch.store_client import ClientStore
        return ClientStore(settings)
    from scinsearch.store_edge import EdgeStore
    return EdgeStore(settings.qdrant_path, settings.collection)


def require_collection(store: VectorStore) -> CollectionInfo:
    """The collection's info, or a one-line error saying how to make it."""
    info = store.info()
    if info is None:
        raise ScinSearchError(f"collection {store.name!r} does not exist or was not made by scinsearch: "
                              f"run `scinsearch embed` first")
    return info


def check_model(store: VectorStore, model: str, dim: int | None = None) -> CollectionInfo:
    """Refuse to mix vectors of different models in one collection."""
    info = require_collection(store)
    if info.model != model or (dim is not None and info.dim != dim):
        raise ScinSearchError(f"collection {store.name!r} holds {info.dim}-d vectors of {info.model!r}, "
                              f"not of {model!r}: use --model {info.model} or another --collection")
    return info


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


def payload_value_check(value: Any) -> None:
    """Filters only take plain values; refuse anything else early with a clear message."""
    if not isinstance(value, (str, int, bool)):
        raise ScinSearchError(f"filter value {value!r} must be text, a whole number or true/false")
