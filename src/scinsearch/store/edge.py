"""Embedded store: Qdrant Edge (`qdrant-edge-py`, pinned: it is beta and its API drifts).

Layout: `<qdrant_path>/<collection>/shard/` (the Edge shard), `collection.json` (model id, vector
size, preprocessing) and `.lock`, an OS lock held while the store is open, so a second process gets a
clear message instead of a corrupted shard. Edge has no background optimizer: below
`exact_search_below` points (EXACT_SEARCH_BELOW unless told otherwise) queries are exact
(milliseconds for SCIN's 10k); above it `finish_writes` builds the HNSW index once, after ingest.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import portalocker
import qdrant_edge as edge

from scinsearch.errors import ScinSearchError, StoreLockedError
from scinsearch.schema import INDEXED_FIELDS
from scinsearch.store.base import CollectionInfo, StoredPoint, VectorStore, vector_list

EXACT_SEARCH_BELOW = 20_000  # points; under this, exact search is a few ms and beats an approximate index
SCHEMAS = {
    "keyword": edge.PayloadSchemaType.Keyword,
    "integer": edge.PayloadSchemaType.Integer,
    "bool": edge.PayloadSchemaType.Bool,
    "float": edge.PayloadSchemaType.Float,
}


class EdgeStore(VectorStore):
    """One collection as one Qdrant Edge shard in a folder, owned by this process while open."""

    def __init__(self, qdrant_path: Path, collection: str, exact_search_below: int = EXACT_SEARCH_BELOW):
        if not collection or "/" in collection or collection.startswith(".") or "\\" in collection:
            raise ScinSearchError(f"invalid collection name {collection!r}")
        self.name = collection
        self.folder = Path(qdrant_path).expanduser() / collection
        self.shard_dir = self.folder / "shard"
        self.meta_file = self.folder / "collection.json"
        self.exact_search_below = exact_search_below
        self._lock = None
        self._shard: edge.EdgeShard | None = None
        self._exact_search: bool | None = None  # decided from the point count; reset by writes
        if self.folder.exists():
            self._acquire_lock()
            if self.shard_dir.exists() and self.meta_file.exists():
                self._shard = self._load_shard()

    def _acquire_lock(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock = portalocker.Lock(
                str(self.folder / ".lock"), mode="a", flags=portalocker.LOCK_EX | portalocker.LOCK_NB
            )
            self._lock.acquire()
        except (portalocker.exceptions.LockException, portalocker.exceptions.AlreadyLocked):
            self._lock = None
            raise StoreLockedError(
                f"the embedded store {self.folder} is open in another process (a running `scinsearch serve` "
                f"or `embed`?): stop it and retry, or use a Qdrant server with --qdrant-url"
            ) from None
        except OSError as exc:
            raise ScinSearchError(f"cannot open the store folder {self.folder}: {exc.strerror or exc}") from None

    def _load_shard(self) -> edge.EdgeShard:
        try:
            return edge.EdgeShard.load(str(self.shard_dir))
        except Exception as exc:  # Edge raises plain Exception
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "WouldBlock" in message:
                raise StoreLockedError(
                    f"the embedded store {self.folder} is open elsewhere: stop the other "
                    f"process, or use a Qdrant server with --qdrant-url"
                ) from None
            raise ScinSearchError(f"cannot open the embedded store {self.shard_dir}: {message}") from None

    def info(self) -> CollectionInfo | None:
        if self._shard is None:
            return None
        try:
            return CollectionInfo.from_metadata(json.loads(self.meta_file.read_text()))
        except (OSError, ValueError) as exc:
            raise ScinSearchError(f"unreadable collection metadata {self.meta_file}: {exc}") from None

    def create(self, info: CollectionInfo, recreate: bool = False) -> None:
        if self._lock is None:
            self._acquire_lock()
        if self._shard is not None:
            if not recreate:
                return
            self._shard.close()
            self._shard = None
        self._exact_search = None
        if self.shard_dir.exists():
            shutil.rmtree(self.shard_dir)
        config = edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=info.dim, distance=edge.Distance.Cosine),
            hnsw_config=edge.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
        )
        self._shard = edge.EdgeShard.create(str(self.shard_dir), config)
        for field, kind in INDEXED_FIELDS.items():
            self._shard.update(edge.UpdateOperation.create_field_index(field, SCHEMAS[kind]))
        self._write_metadata(info.as_metadata())

    def _write_metadata(self, metadata: dict) -> None:
        """collection.json, replaced atomically: a crash leaves the old record or the new one, never half."""
        temporary = self.meta_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(metadata, indent=2))
        os.replace(temporary, self.meta_file)

    def update_metadata(self, extra: dict) -> None:
        info = self.info()
        if info is None:
            raise ScinSearchError(f"collection {self.name!r} does not exist in {self.folder.parent}")
        self._write_metadata({**info.as_metadata(), **extra})

    @property
    def shard(self) -> edge.EdgeShard:
        if self._shard is None:
            raise ScinSearchError(
                f"collection {self.name!r} does not exist in {self.folder.parent}: run `scinsearch embed` first"
            )
        return self._shard

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        if points:
            self._exact_search = None
            self.shard.update(
                edge.UpdateOperation.upsert_points([edge.Point(p.id, vector_list(p.vector), p.payload) for p in points])
            )

    def finish_writes(self) -> None:
        """Persist, and build the HNSW index once the collection is big enough to need one."""
        self.shard.flush()
        if self.count() >= self.exact_search_below:
            self.shard.optimize()

    def close(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # The raw requests and leaf filter types (see VectorStore) ----------------------------------------

    def _retrieve_records(self, ids: list[str], with_payload: bool, with_vectors: bool) -> list:
        return self.shard.retrieve(ids, with_payload, with_vectors)

    def _scroll_page(self, native_filter, offset, limit: int, with_vectors: bool) -> tuple[list, Any]:
        return self.shard.scroll(
            edge.ScrollRequest(
                offset=offset, limit=limit, filter=native_filter, with_payload=True, with_vector=with_vectors
            )
        )

    def _query_points(
        self, vector: list[float], limit: int, native_filter, min_score: float | None, with_vectors: bool
    ) -> list:
        if self._exact_search is None:
            self._exact_search = self.count() < self.exact_search_below
        exact = self._exact_search
        return self.shard.query(
            edge.QueryRequest(
                limit=limit,
                query=edge.Query.Nearest(vector),
                filter=native_filter,
                with_payload=True,
                with_vector=with_vectors,
                score_threshold=min_score,
                params=edge.SearchParams(exact=exact, hnsw_ef=None if exact else 128),
            )
        )

    def _count(self, native_filter) -> int:
        return self.shard.count(edge.CountRequest(exact=True, filter=native_filter))

    def _filter(self, must: list | None, must_not: list | None):
        return edge.Filter(must=must, must_not=must_not)

    def _match_any(self, key: str, values: list):
        return edge.FieldCondition(key=key, match=edge.MatchAny(any=values))

    def _match_value(self, key: str, value: bool):
        # qdrant-edge-py 0.9 reads a Python bool as the integer 1 (bool subclasses int), which then
        # matches no boolean payload; numpy's bool_ is not an int, so it arrives as a real boolean.
        return edge.FieldCondition(key=key, match=edge.MatchValue(np.bool_(value)))

    def _range(self, key: str, gte: float | None, lte: float | None):
        return edge.FieldCondition(key=key, range=edge.RangeFloat(gte=gte, lte=lte))
