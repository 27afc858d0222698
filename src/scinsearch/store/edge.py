"""Embedded store: Qdrant Edge (`qdrant-edge-py`, pinned: it is beta and its API drifts).

Layout: `<qdrant_path>/<collection>/collection.json` (model id, vector size, preprocessing, and the
name of the shard folder beside it), the Edge shard (`shard-<hex>/`; `shard/` in stores made before
the name was recorded) and `.lock`, an OS lock held while the store is open, so a second process gets a
clear message instead of a corrupted shard. Edge has no background optimizer: below
`exact_search_below` points (EXACT_SEARCH_BELOW unless told otherwise) queries are exact
(milliseconds for SCIN's 10k); above it `finish_writes` builds the HNSW index once, after ingest, and
queries search it with `hnsw_ef` HNSW_EF (HNSW_EF_LARGE from LARGE_FROM points on). A new shard is made
with the index options of `ServerOptions`
that Edge supports (HNSW m / ef_construct, int8 scalar quantisation): quantised shards are searched on
the int8 copies and the best candidates rescored on the originals (benchmarks/bench_scale.py measured
what each costs and finds; docs/performance.md#how-the-store-scales).

Creating (or recreating) a collection never touches the current one until the new one is whole: the
new shard is built in a folder of its own, then `collection.json`, naming it, replaces the old record
in one atomic rename, and only then is the old shard deleted. A crash at any point leaves either the
old collection or the new one; folders left over are removed the next time the store is opened.
Whether the collection exists is checked again under the lock, so one that another process created
after this store was opened is used (or, with another model, refused), never deleted.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import portalocker
import qdrant_edge as edge

from scinsearch.errors import ScinSearchError, StoreLockedError
from scinsearch.helpers import atomic_write, first_line, fsync_path
from scinsearch.schema import INDEXED_FIELDS
from scinsearch.settings import ServerOptions
from scinsearch.store.base import CollectionInfo, StoredPoint, VectorStore, vector_list

EXACT_SEARCH_BELOW = 20_000  # points; under this, exact search is a few ms and beats an approximate index
HNSW_EF = 128  # candidates an HNSW query considers (Qdrant's default is ef_construct, 100)
# From this many points on, queries consider more candidates: bench_scale.py at 1,000,000 points found
# recall@10 0.89 with HNSW_EF and 0.988 with 512 (13 ms); at 100,000 HNSW_EF gives 0.996 (performance.md).
HNSW_EF_LARGE, LARGE_FROM = 512, 200_000
OVERSAMPLING = 2.0  # int8 quantised shards: candidates fetched per wanted result, then rescored exactly
SHARD_KEY = "edge_shard"  # in collection.json: the shard folder beside it that holds the collection
SHARD_NAME = re.compile(r"shard(-[0-9a-f]{12})?")  # what a shard folder may be called (the record is untrusted)
SCHEMAS = {
    "keyword": edge.PayloadSchemaType.Keyword,
    "integer": edge.PayloadSchemaType.Integer,
    "bool": edge.PayloadSchemaType.Bool,
    "float": edge.PayloadSchemaType.Float,
}


class EdgeStore(VectorStore):
    """One collection as one Qdrant Edge shard in a folder, owned by this process while open."""

    def __init__(
        self,
        qdrant_path: Path,
        collection: str,
        exact_search_below: int = EXACT_SEARCH_BELOW,
        index: ServerOptions | None = None,
    ):
        if not collection or "/" in collection or collection.startswith(".") or "\\" in collection:
            raise ScinSearchError(f"invalid collection name {collection!r}")
        self.name = collection
        self.folder = Path(qdrant_path).expanduser() / collection
        self.where = f"the embedded store {self.folder.parent}"
        self.meta_file = self.folder / "collection.json"
        self.shard_dir = self.folder / "shard"  # the current shard's folder once one is loaded
        self.exact_search_below = exact_search_below
        self.index = index or ServerOptions()  # how a new shard is made (an existing one keeps its own)
        self.hnsw_ef: int | None = None  # None: chosen from the point count (`hnsw_ef_for`)
        self._ef_for_size = HNSW_EF
        self._lock = None
        self._shard: edge.EdgeShard | None = None
        self._exact_search: bool | None = None  # decided from the point count; reset by writes
        if self.folder.exists():
            self._acquire_lock()
            self._load_existing()

    def _load_existing(self) -> None:
        """Open the collection the record names, if there is one; then remove what a crash left over."""
        metadata = self._read_metadata()
        if metadata is None:
            return
        name = metadata.get(SHARD_KEY, "shard")
        if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
            raise ScinSearchError(f"{self.meta_file} names an invalid shard folder {name!r}")
        shard_dir = self.folder / name
        if shard_dir.is_dir():
            self.shard_dir = shard_dir
            self._shard = self._load_shard()
            self._remove_leftovers(keep=shard_dir.name)

    def _read_metadata(self) -> dict | None:
        try:
            metadata = json.loads(self.meta_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ScinSearchError(f"unreadable collection metadata {self.meta_file}: {exc}") from None
        if not isinstance(metadata, dict):
            raise ScinSearchError(f"unreadable collection metadata {self.meta_file}: not a JSON object")
        return metadata

    def _remove_leftovers(self, keep: str) -> None:
        """Shard folders other than the current one, and half-written records: what a crash left behind."""
        for entry in self.folder.iterdir():
            if entry.is_dir() and SHARD_NAME.fullmatch(entry.name) and entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_file() and entry.name.startswith("collection.") and entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)

    def _acquire_lock(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock = portalocker.Lock(  # tried once: portalocker would retry a held lock for 5 s by default
                str(self.folder / ".lock"),
                mode="a",
                timeout=0,
                fail_when_locked=True,
                flags=portalocker.LOCK_EX | portalocker.LOCK_NB,
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
            message = first_line(exc, limit=1000)
            if "WouldBlock" in message:
                raise StoreLockedError(
                    f"the embedded store {self.folder} is open elsewhere: stop the other "
                    f"process, or use a Qdrant server with --qdrant-url"
                ) from None
            raise ScinSearchError(f"cannot open the embedded store {self.shard_dir}: {message}") from None

    def info(self) -> CollectionInfo | None:
        if self._shard is None:
            return None
        metadata = self._read_metadata() or {}
        return CollectionInfo.from_metadata({k: v for k, v in metadata.items() if k != SHARD_KEY})

    def create(self, info: CollectionInfo, recreate: bool = False) -> None:
        if self._lock is None:
            self._acquire_lock()
        if self._shard is None:
            self._load_existing()  # under the lock: another process may have created it since we opened
            existing = self.info()
            if existing is not None and not recreate and not same_kind(existing, info):
                raise ScinSearchError(
                    f"collection {self.name!r} was created meanwhile by another process, with {existing.model!r} "
                    f"({existing.dim}-d, {existing.preprocessing} preprocessing): use another --collection, "
                    f"or --recreate to start it over"
                )
        if self._shard is not None and not recreate:
            return
        self._exact_search = None
        shard_dir = self.folder / f"shard-{uuid.uuid4().hex[:12]}"
        shard = self._build_shard(shard_dir, info)
        old, self._shard = self._shard, None
        if old is not None:
            old.close()
        self._write_metadata(info.as_metadata(), shard_dir.name)  # the commit: one atomic rename
        self._shard, self.shard_dir = shard, shard_dir
        self._remove_leftovers(keep=shard_dir.name)

    def _build_shard(self, shard_dir: Path, info: CollectionInfo) -> edge.EdgeShard:
        """A new, empty shard with the payload indexes, in its own folder (the current one is untouched)."""
        shard = edge.EdgeShard.create(str(shard_dir), shard_config(info.dim, self.index))
        for field, kind in INDEXED_FIELDS.items():
            shard.update(edge.UpdateOperation.create_field_index(field, SCHEMAS[kind]))
        shard.flush()
        return shard

    def _write_metadata(self, metadata: dict, shard_name: str) -> None:
        """collection.json, naming the shard folder, replaced atomically: a crash leaves the old record or
        the new one, never half."""
        temporary = self.folder / f"{self.meta_file.name}.{uuid.uuid4().hex[:8]}.tmp"  # cleaned up on open
        with atomic_write(self.meta_file, temporary=temporary) as handle:
            json.dump({**metadata, SHARD_KEY: shard_name}, handle, indent=2)

    def update_metadata(self, extra: dict) -> None:
        info = self.info()
        if info is None:
            raise ScinSearchError(f"collection {self.name!r} does not exist in {self.folder.parent}")
        self._write_metadata({**info.as_metadata(), **extra}, self.shard_dir.name)

    def search_exactly(self, exact: bool | None) -> None:
        """Force exact (True) or HNSW (False) search, or let the point count decide again (None)."""
        self._exact_search = exact

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

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._exact_search = None
            self.shard.update(edge.UpdateOperation.delete_points(list(ids)))
            self.shard.flush()

    def drop(self) -> None:
        """Remove the record first (the commit: from then on there is no collection), then every shard."""
        if self._lock is None:
            self._acquire_lock()
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        self._exact_search = None
        self.meta_file.unlink(missing_ok=True)
        fsync_path(self.folder)
        self._remove_leftovers(keep="")
        self.shard_dir = self.folder / "shard"

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
            points = self.count()
            self._exact_search, self._ef_for_size = points < self.exact_search_below, hnsw_ef_for(points)
        exact = self._exact_search
        return self.shard.query(
            edge.QueryRequest(
                limit=limit,
                query=edge.Query.Nearest(vector),
                filter=native_filter,
                with_payload=True,
                with_vector=with_vectors,
                score_threshold=min_score,
                params=search_params(exact, self.hnsw_ef or self._ef_for_size),
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


def shard_config(dim: int, index: ServerOptions) -> edge.EdgeConfig:
    """A new shard's configuration: cosine vectors of `dim`, HNSW (Qdrant's defaults unless the options
    say otherwise) and, with `quantization="int8"`, int8 copies kept in RAM beside the originals."""
    quantization = None
    if index.quantization == "int8":
        quantization = edge.ScalarQuantizationConfig(type=edge.ScalarType.Int8, quantile=0.99, always_ram=True)
    m = 16 if index.hnsw_m is None else index.hnsw_m
    ef_construct = 100 if index.hnsw_ef_construct is None else index.hnsw_ef_construct
    return edge.EdgeConfig(
        vectors=edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine, quantization_config=quantization),
        hnsw_config=edge.HnswIndexConfig(m=m, ef_construct=ef_construct, full_scan_threshold=10_000),
    )


def hnsw_ef_for(points: int) -> int:
    """How many candidates an HNSW query considers in a collection of `points`: the graph's recall at a
    fixed ef falls as the collection grows."""
    return HNSW_EF_LARGE if points >= LARGE_FROM else HNSW_EF


def search_params(exact: bool, hnsw_ef: int) -> edge.SearchParams:
    """Exact: every original vector. Else the HNSW graph; on a quantised shard the int8 copies, with the
    best OVERSAMPLING x limit candidates rescored on the originals (ignored by a shard without them)."""
    if exact:
        return edge.SearchParams(exact=True, quantization=edge.QuantizationSearchParams(ignore=True))
    rescoring = edge.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
    return edge.SearchParams(hnsw_ef=hnsw_ef, quantization=rescoring)


def same_kind(existing: CollectionInfo, wanted: CollectionInfo) -> bool:
    """Vectors of the same model, size and preprocessing: safe to add to."""
    return (existing.model, existing.dim, existing.preprocessing) == (wanted.model, wanted.dim, wanted.preprocessing)
