"""The vector store: one small interface, two Qdrant backends chosen by one setting.

- Embedded (default, `store.edge`): Qdrant Edge, the Qdrant engine in-process, one shard per collection
  under `<qdrant_path>/<collection>/`. No server to start; one process at a time owns it.
- Server (`store.client`): qdrant-client against a Qdrant server or cluster (`qdrant_url`), or its
  in-process `:memory:` mode, which runs the same client code and is what the tests use for this path.

The interface, the types and the loops both backends share are in `store.base`. Callers only see those
types (`Filter`, `Hit`, `StoredPoint`, `CollectionInfo`), never a backend's. A backend module (and its
Qdrant library) is imported only when a store of its kind is opened.
"""

from __future__ import annotations

from scinsearch.settings import Settings
from scinsearch.store.base import (
    CollectionInfo,
    Filter,
    Hit,
    Match,
    Range,
    StoredPoint,
    VectorStore,
    as_vector,
    check_model,
    is_uuid,
    require_collection,
)

__all__ = [
    "CollectionInfo",
    "Filter",
    "Hit",
    "Match",
    "Range",
    "StoredPoint",
    "VectorStore",
    "as_vector",
    "check_model",
    "is_uuid",
    "open_store",
    "require_collection",
]


def open_store(settings: Settings) -> VectorStore:
    """The backend the settings name: a server URL or ':memory:' -> qdrant-client; else Qdrant Edge."""
    if settings.uses_server:
        from scinsearch.store.client import ClientStore

        return ClientStore(settings)
    from scinsearch.store.edge import EdgeStore

    return EdgeStore(settings.qdrant_path, settings.collection, index=settings.server)


def __getattr__(name: str):
    """Names that live in a backend module load it (and its Qdrant library) only when asked for."""
    if name in ("EdgeStore", "EXACT_SEARCH_BELOW"):
        from scinsearch.store import edge

        return getattr(edge, name)
    if name == "ClientStore":
        from scinsearch.store import client

        return client.ClientStore
    if name == "INDEXED_FIELDS":  # declared with the rest of the payload schema
        from scinsearch.schema import INDEXED_FIELDS

        return INDEXED_FIELDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
