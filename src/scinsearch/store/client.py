"""Server store: qdrant-client against a Qdrant server or cluster (or its local mode: `:memory:` or a folder).

Same semantics as the embedded store. The collection records its model in Qdrant's collection
metadata. qdrant-client 1.16+ removed `search`: everything goes through `query_points`. A collection is
made with the settings' `ServerOptions` (shards, replicas, on-disk storage, HNSW, quantisation) and the
payload indexes of `scinsearch.schema`. Aliases (`aliases`, `switch_alias`) let readers of one name move
from one collection to another atomically (`scinsearch.transfer.versions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from scinsearch.errors import ScinSearchError, StoreLockedError
from scinsearch.helpers import first_line
from scinsearch.schema import INDEXED_FIELDS
from scinsearch.settings import ServerOptions, Settings
from scinsearch.store.base import CollectionInfo, StoredPoint, VectorStore, vector_list

SCHEMAS = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "bool": models.PayloadSchemaType.BOOL,
    "float": models.PayloadSchemaType.FLOAT,
}
# ValueError: local mode's answer to what a server answers with an error response (unknown collection, ...)
SERVER_ERRORS = (ResponseHandlingException, UnexpectedResponse, ConnectionError, TimeoutError, ValueError)
OVERSAMPLING = 2.0  # int8 collections: candidates per wanted result, rescored on the originals (as on Edge)
LOCAL_MODE_TOLERANCE = 1e-6  # local mode re-normalises every cosine vector: stored values may move by an ulp or two


def collection_config(dim: int, server: ServerOptions) -> dict:
    """`create_collection` arguments for one unnamed cosine vector of `dim`, as the server options say."""
    hnsw = None
    if server.hnsw_m is not None or server.hnsw_ef_construct is not None:
        hnsw = models.HnswConfigDiff(m=server.hnsw_m, ef_construct=server.hnsw_ef_construct)
    quantization = None
    if server.quantization == "int8":
        quantization = models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
        )
    config = {
        "vectors_config": models.VectorParams(
            size=dim,
            distance=models.Distance.COSINE,
            on_disk=server.on_disk_vectors or None,
            hnsw_config=hnsw,
            quantization_config=quantization,
        ),
        "shard_number": server.shard_number,
        "replication_factor": server.replication_factor,
        "write_consistency_factor": server.write_consistency_factor,
        "on_disk_payload": server.on_disk_payload or None,
    }
    return {key: value for key, value in config.items() if value is not None}


class ClientStore(VectorStore):
    """One collection on a Qdrant server (or in qdrant-client's local mode), through qdrant-client.

    `client`: share an open client (another collection of the same server, or the same local-mode
    folder, which allows one client at a time); the store then leaves closing it to its owner."""

    def __init__(self, settings: Settings, client: QdrantClient | None = None):
        self.name = settings.collection
        self.settings = settings
        self.where = settings.store_description()
        self.local = not settings.qdrant_url  # local mode ignores payload indexes and server options
        self.vector_tolerance = LOCAL_MODE_TOLERANCE if self.local else 0.0
        self._owns_client = client is None
        if client is not None:
            self.client = client
            return
        try:
            if settings.qdrant_url:
                self.client = QdrantClient(
                    url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=settings.qdrant_timeout
                )
            elif settings.qdrant_client_path:
                self.client = QdrantClient(path=str(Path(settings.qdrant_client_path).expanduser()))
            else:
                self.client = QdrantClient(location=settings.qdrant_location)
        except RuntimeError as exc:  # local mode: the folder is locked by another client
            raise StoreLockedError(
                f"{self.where} is open in another process (qdrant-client allows one at a time): {exc}"
            ) from None
        except (OSError, *SERVER_ERRORS) as exc:
            raise ScinSearchError(f"cannot connect to {self.where}: {exc}") from None

    def sibling(self, collection: str) -> ClientStore:
        """Another collection through the same client (and the same server options)."""
        return ClientStore(self.settings.replace(collection=collection), client=self.client)

    def call(self, method: str, *args, **kwargs):
        """Every request goes through here, so a server failure becomes one clear line."""
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except SERVER_ERRORS as exc:
            reason = first_line(exc, limit=1000)
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
            **collection_config(info.dim, self.settings.server),
        )
        if not self.local:  # local mode ignores payload indexes, with a warning
            for field, kind in INDEXED_FIELDS.items():
                self.call("create_payload_index", self.name, field_name=field, field_schema=SCHEMAS[kind])

    def update_metadata(self, extra: dict) -> None:
        """Qdrant merges the given keys into the collection's metadata."""
        if not self.call("collection_exists", self.name):
            raise ScinSearchError(f"collection {self.name!r} does not exist on {self.where}")
        self.call("update_collection", self.name, metadata=extra)

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

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.call("delete", self.name, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    def drop(self) -> None:
        if self.call("collection_exists", self.name):
            self.call("delete_collection", self.name)

    def finish_writes(self) -> None:
        """A server builds its indexes in the background: nothing to do here."""

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # Collections and aliases (a server's, or local mode's) ----------------------------------------------

    def collection_names(self) -> list[str]:
        return sorted(c.name for c in self.call("get_collections").collections)

    def aliases(self) -> dict[str, str]:
        """alias name -> the collection it points to."""
        return {a.alias_name: a.collection_name for a in self.call("get_aliases").aliases}

    def switch_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection` in one request: readers see the old collection or the new one, never none."""
        operations = []
        if alias in self.aliases():
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
        )
        self.call("update_collection_aliases", change_aliases_operations=operations)

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
            search_params=self.search_params,
        ).points

    @property
    def search_params(self) -> models.SearchParams | None:
        """A server's int8 collection is searched on the copies, the best candidates rescored on the
        originals; local mode searches exactly and warns about any search parameters, so gets none."""
        if self.local or self.settings.server.quantization != "int8":
            return None
        rescoring = models.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
        return models.SearchParams(quantization=rescoring)

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
