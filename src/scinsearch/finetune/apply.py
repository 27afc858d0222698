"""Using an adapter: its stored side (a new, adapted collection) and its query side (the `Searcher`).

Stored side: `apply_adapter` reads every point of a collection once, transforms its vector and writes it,
with its payload unchanged, to ANOTHER collection; the original is never written to. The new collection
records the base model (so the ordinary model checks still hold), the adapter's id (binding its record and
weights), its folder and the source collection.

The query side (`query_adapter`, what search uses) is in `vectors.adapter`, apart from training code.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from scinsearch.errors import ScinSearchError
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, StoredPoint, open_store, require_collection
from scinsearch.store.record import ADAPTED_FROM, ADAPTER_DIR, ADAPTER_ID, CALIBRATION
from scinsearch.vectors.adapter import Adapter

PAGE = 512


@dataclasses.dataclass
class ApplySummary:
    source: str
    target: str
    points: int
    seconds: float
    adapter: str

    def lines(self) -> list[str]:
        return [
            f"wrote {self.points} adapted points from {self.source!r} to {self.target!r} in {self.seconds:.1f} s",
            f"{self.adapter}",
            f"search it with: scinsearch serve --collection {self.target} --adapter <the adapter folder>",
        ]


def apply_adapter(
    settings: Settings, adapter: Adapter, to_collection: str, recreate: bool = False, progress: bool = False
) -> ApplySummary:
    """Transform every stored vector of `settings.collection` into `to_collection` (created here).

    Re-running onto a collection made by the same adapter from the same source rewrites it (points have the
    same ids: an interrupted run is finished this way); any other existing collection needs `recreate`."""
    if not to_collection or to_collection == settings.collection:
        raise ScinSearchError("--to-collection must name a new collection: the original is never changed")
    if settings.qdrant_location == ":memory:":
        raise ScinSearchError("apply needs a store that outlives the command (embedded or a server), not ':memory:'")
    started = time.perf_counter()
    source = open_store(settings)
    target = None
    try:
        info = require_collection(source)
        adapter.check_frozen_collection(info, settings.collection)
        target = open_store(settings.replace(collection=to_collection))
        prepare_target(target, info, adapter, settings.collection, recreate)
        written = copy_adapted(source, target, adapter, progress)
        target.finish_writes()
        if target.count() != source.count():
            raise ScinSearchError(
                f"{to_collection!r} holds {target.count()} points, {settings.collection!r} "
                f"{source.count()}: run the same command again"
            )
    finally:
        source.close()
        if target is not None:
            target.close()
    return ApplySummary(settings.collection, to_collection, written, time.perf_counter() - started, adapter.describe())


def prepare_target(target, info: CollectionInfo, adapter: Adapter, source_name: str, recreate: bool) -> None:
    existing = target.info()
    same = existing is not None and existing.adapter_id == adapter.id and existing.adapted_from == source_name
    if existing is not None and not same and not recreate:
        raise ScinSearchError(
            f"collection {target.name!r} already exists (not made by this adapter from "
            f"{source_name!r}): pick another --to-collection, or --recreate to replace it"
        )
    extra = {
        **{k: v for k, v in info.extra.items() if k != CALIBRATION},  # the source's: another vector space
        ADAPTER_ID: adapter.id,
        ADAPTER_DIR: str(adapter.folder.resolve()),
        ADAPTED_FROM: source_name,
    }
    target.create(CollectionInfo(info.model, info.dim, extra, info.preprocessing), recreate=recreate)


def copy_adapted(source, target, adapter: Adapter, progress: bool) -> int:
    """Page through the source with vectors, transform each page, write it: memory stays one page."""
    from tqdm import tqdm

    written = 0
    page: list[StoredPoint] = []
    with tqdm(total=source.count(), unit="pt", desc="adapting", disable=not progress, leave=False) as bar:
        for point in source.scroll(with_vectors=True, page=PAGE):
            if point.vector is None:
                continue
            page.append(point)
            if len(page) == PAGE:
                written += write_page(target, adapter, page)
                bar.update(len(page))
                page = []
        if page:
            written += write_page(target, adapter, page)
            bar.update(len(page))
    return written


def write_page(target, adapter: Adapter, page: list[StoredPoint]) -> int:
    vectors = adapter.transform(np.stack([p.vector for p in page]))
    target.upsert([StoredPoint(p.id, p.payload, v) for p, v in zip(page, vectors)])
    return len(page)
