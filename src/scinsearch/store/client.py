"""Server store: qdrant-client against a Qdrant server or cluster (or its `:memory:` stand-in).

Same semantics as the embedded store. The collection records its model in Qdrant's collection
metadata. qdrant-client 1.16+ removed `search`: everything goes through `query_points`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from scinsearch.errors import ScinSearchError
from scinsearch.schema import INDEXED_FIELDS
from scinsearch.settings import Settings
from scinsearch.store.base import CollectionInfo, StoredPoint, VectorStore, vector_list

SCHEMAS = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "bool": models.PayloadSchemaType.BOOL,
    "float": models.PayloadSchemaType.FLOAT,
}
SERVER_ERRORS = (ResponseHandlingException, UnexpectedResponse, ConnectionError, TimeoutError)


class ClientStore(VectorStore):
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
        self.call(
            "create_collection",
            self.name,
            metadata=info.as_metadata(),
            vectors_config=models.VectorParams(size=info.dim, distance=models.Distance.COSINE),
        )
        if self.client.init_options.get("location") != ":memory:":  # local mode ignores indexes, with a warning
            for field, kind in INDEXED_FIELDS.items():
                self.call("create_payload_index", self.name, field_name=field, field_schema=SCHEMAS[kind])

    def upsert(self, points: Sequence[StoredPoint]) -> None:
        if points:
            self.call(
                "upsert",
                self.name,
                wait=True,
                points=models.Batch(
                    ids=[p.id for p in points],
                    vectors=[vector_list(p.vector) for p in points],
                    payloads=[p.payload for p in points],
                ),
            )

    def finish_writes(self) -> None:
        """A server builds its indexes in the background: nothing to do here."""

    def close(self) -> None:
        self.client.close()

    # The raw requests and leaf filter types (see VectorStore) ----------------------------------------

    def _retrieve_records(self, ids: list[str], with_payload: bool, with_vectors: bool) -> list:
        return self.call("retrieve", self.name, ids=ids, with_payload=with_payload, with_vectors=with_vectors)

    def _scroll_page(self, native_filter, offset, limit: int, with_vectors: bool) -> tuple[list, Any]:
        return self.call(
            "scroll",
            self.name,
            scroll_filter=native_filter,
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=with_vectors,
        )

    def _query_points(
        self, vector: list[float], limit: int, native_filter, min_score: float | None, with_vectors: bool
    ) -> list:
        return self.call(
            "query_points",
            self.name,
            query=vector,
            limit=limit,
            query_filter=native_filter,
            score_threshold=min_score,
            with_payload=True,
            with_vectors=with_vectors,
        ).points

    def _count(self, native_filter) -> int:
        return self.call("count", self.name, count_filter=native_filter, exact=True).count

    def _filter(self, must: list | None, must_not: list | None):
        return models.Filter(must=must, must_not=must_not)

    def _match_any(self, key: str, values: list):
        return models.FieldCondition(key=key, match=models.MatchAny(any=values))

    def _match_value(self, key: str, value: bool):
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    def _range(self, key: str, gte: float | None, lte: float | None):
        return models.FieldCondition(key=key, range=models.Range(gte=gte, lte=lte))
