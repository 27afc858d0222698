"""Server store: qdrant-client against a Qdrant server or cluster (or its `:memory:` stand-in).

Same semantics as the embedded store. The collection records its model in Qdrant's collection
metadata. qdrant-client 1.16+ removed `search`: everything goes through `query_points`.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from scinsearch.errors import ScinSearchError
from scinsearch.settings import Settings
from scinsearch.store import (INDEXED_FIELDS, CollectionInfo, Filter, Hit, Match, Range, StoredPoint, as_vector,
                              is_uuid)

SCHEMAS = {"keyword": models.PayloadSchemaType.KEYWORD, "integer": models.PayloadSchemaType.INTEGER,
           "bool": models.PayloadSchemaType.BOOL, "float": models.PayloadSchemaType.FLOAT}
SERVER_ERRORS = (ResponseHandlingException, UnexpectedResponse, ConnectionError, TimeoutError)


def to_client_filter(filter: Filter | None) -> models.Filter | None:
    if not filter:
        return None
    return models.Filter(must=[to_client_condition(c) for c in filter.must] or None,
                         must_not=[to_client_condition(c) for c in filter.must_not] or None)


def to_client_condition(condition: Match | Range) -> models.FieldCondition:
    if isinstance(condition, Range):
        return models.FieldCondition(key=condition.key, range=models.Range(gte=condition.gte, lte=condition.lte))
    values = list(condition.values)
    if len(values) == 1 and isinstance(values[0], bool):
        return models.FieldCondition(key=condition.key, match=models.MatchValue(value=values[0]))
    return models.FieldCondition(key=condition.key, match=models.MatchAny(any=values))


class ClientStore:
    """One collection on a Qdrant server (or `:memory:`), through qdrant-client."""

    def __init__(self, settings: Settings):
        self.name = settings.collection
        self.where = settings.store_description()
        try:
            if settings.qdrant_url:
                self.client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=60)
            else:
                self.client = QdrantClient(location=settings.qdrant_location)
        except (ValueError, *SERVER_ERRORS) as exc:
            raise ScinSearchError(f"cannot connect to {self.where}: {exc}") from None

    def call(self, method: str, *args, **kwargs):
        """Every request goes through here, so a server failure becomes one clear line."""
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except SERVER_ERRORS as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ScinSearchError(f"{self.where}: {method} failed: {reason}") from None

    def info(self) -> CollectionInfo | None:
        if not self.call("collection_exists", self.name):
            return None
        return CollectionInfo.from_metadata(self.call("get_collection", self.name).config.metadata)

    def create(self, info: CollectionInfo, recreate: bool = False) -> None:
        exists = self.call("collection_exists", self.name)
        if exists and not recreate:
            return
        if exists:
            self.call("delete_collection", self.name)
        self.call("create_collection", self.name, metadata=info.as_metadata(),
                  vectors_config=models.VectorParams(size=info.dim, distance=models.Distance.COSINE))
        if self.client.init_options.get("location") != ":memory:":  # local mode ignores indexes, with a warning
            for field, kind in INDEXED_FIELDS.items():
                self.call("create_payload_index", self.name, field_name=field, field_schema=SCHEMAS[kind])

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 1000):
            records = self.call("retrieve", self.name, ids=list(ids[start:start + 1000]),
                                with_payload=False, with_vectors=False)
            found.update(str(r.id) for r in records)
        return found

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        if points:
            self.call("upsert", self.name, wait=True, points=models.Batch(
                ids=[p.id for p in points], vectors=[np.asarray(p.vector, dtype=np.float32).tolist() for p in points],
                payloads=[p.payload for p in points]))

    def query(self, vector: np.ndarray, limit: int, filter: Filter | None = None,
              min_score: float | None = None, with_vectors: bool = False) -> list[Hit]:
        response = self.call("query_points", self.name, query=np.asarray(vector, dtype=np.float32).tolist(),
                             limit=limit, query_filter=to_client_filter(filter), score_threshold=min_score,
                             with_payload=True, with_vectors=with_vectors)
        return [Hit(str(p.id), p.payload or {}, as_vector(p.vector), float(p.score)) for p in response.points]

    def retrieve(self, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        valid = [i for i in ids if is_uuid(i)]
        records = self.call("retrieve", self.name, ids=valid, with_payload=True, with_vectors=with_vectors) if valid else []
        return [StoredPoint(str(r.id), r.payload or {}, as_vector(r.vector)) for r in records]

    def scroll(self, filter: Filter | None = None, with_vectors: bool = False, page: int = 256) -> Iterator[StoredPoint]:
        offset = None
        while True:
            records, offset = self.call("scroll", self.name, scroll_filter=to_client_filter(filter), limit=page,
                                        offset=offset, with_payload=True, with_vectors=with_vectors)
            for r in records:
                yield StoredPoint(str(r.id), r.payload or {}, as_vector(r.vector))
            if offset is None:
                return

    def count(self, filter: Filter | None = None) -> int:
        return self.call("count", self.name, count_filter=to_client_filter(filter), exact=True).count

    def finish_writes(self) -> None:
        """A server builds its indexes in the background: nothing to do here."""

    def close(self) -> None:
        self.client.close()
