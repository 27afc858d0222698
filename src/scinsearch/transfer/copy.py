"""Copy a collection from any store to any store: ids, vectors, every payload field and its record.

Page by page (memory stays flat whatever the collection's size); points the target already holds are
skipped, so a run that was interrupted resumes where it stopped (like `embed`); at the end the counts
must agree and a sample of points, spread over the collection, must be identical in both stores.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from scinsearch.errors import ScinSearchError
from scinsearch.store import CollectionInfo, StoredPoint, VectorStore, require_collection

PAGE = 256  # points read and written per request: a few MB of 768-d vectors
SAMPLE = 64  # points compared one by one after a transfer


@dataclasses.dataclass
class TransferSummary:
    source: str
    target: str
    points: int = 0  # in the source
    copied: int = 0
    already_present: int = 0
    checked: int = 0  # sampled points found identical in the target
    seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"copied {self.copied}, already present {self.already_present} (of {self.points} points) "
            f"in {self.seconds:.1f} s",
            f"from: {self.source}",
            f"to: {self.target}",
            f"verified: {self.points} points in both, {self.checked} sampled points identical (ids, vectors, payloads)",
        ]


class Sampler:
    """Keeps about `size` points spread evenly over a stream of `total` (bounded memory)."""

    def __init__(self, total: int, size: int = SAMPLE):
        self.step = max(1, total // max(1, size))
        self.size = size
        self.seen = 0
        self.points: list[StoredPoint] = []

    def offer(self, batch: Sequence[StoredPoint]) -> None:
        for point in batch:
            if self.seen % self.step == 0 and len(self.points) < self.size:
                self.points.append(point)
            self.seen += 1


def batched(points: Iterable[StoredPoint], size: int) -> Iterator[list[StoredPoint]]:
    iterator = iter(points)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def prepare_target(target: VectorStore, info: CollectionInfo, origin: str) -> None:
    """Create the target collection with the source's record, or check that an existing one matches it
    (same model, vector size and preprocessing: vectors of two models must never mix)."""
    refuse_mismatch(target, info, origin)
    if target.info() is None:
        target.create(info)
        if target.info() is None:
            raise ScinSearchError(
                f"collection {target.name!r} exists but was not made by scinsearch: choose another collection name"
            )


def refuse_mismatch(target: VectorStore, info: CollectionInfo, origin: str) -> None:
    """One line when the target collection exists with another model, vector size or preprocessing."""
    existing = target.info()
    if existing is None:
        return
    if not existing.same_space(info.model, info.dim) or existing.preprocessing != info.preprocessing:
        raise ScinSearchError(
            f"collection {target.name!r} holds {existing.dim}-d vectors of {existing.model!r} "
            f"({existing.preprocessing} preprocessing), {origin} holds {info.dim}-d vectors of {info.model!r} "
            f"({info.preprocessing} preprocessing): choose another target collection"
        )


def copy_collection(
    source: VectorStore,
    target: VectorStore,
    page: int = PAGE,
    sample: int = SAMPLE,
    progress: bool = True,
) -> TransferSummary:
    """Copy every point of `source` and its record into `target`; skip what `target` already holds."""
    started = time.perf_counter()
    info = require_collection(source)
    prepare_target(target, info, origin=f"collection {source.name!r}")
    total = source.count()
    summary = TransferSummary(source.name, target.name, points=total)
    sampler = Sampler(total, sample)
    with tqdm(total=total, unit="pt", desc="copying", disable=not progress, dynamic_ncols=True) as bar:
        for batch in batched(source.scroll(with_vectors=True, page=page), page):
            write_missing(target, batch, summary)
            sampler.offer(batch)
            bar.update(len(batch))
    target.finish_writes()
    summary.checked = verify(target, total, sampler.points)
    summary.seconds = time.perf_counter() - started
    return summary


def write_missing(target: VectorStore, batch: list[StoredPoint], summary: TransferSummary) -> list[str]:
    """Upsert the points of `batch` the target does not hold yet (how a transfer resumes); their ids."""
    present = target.existing_ids([point.id for point in batch])
    missing = [point for point in batch if point.id not in present]
    target.upsert(missing)
    summary.copied += len(missing)
    summary.already_present += len(batch) - len(missing)
    return [point.id for point in missing]


def verify(target: VectorStore, expected_count: int, sample: list[StoredPoint]) -> int:
    """The target holds `expected_count` points and each sampled point unchanged (vectors bit-identical,
    or as close as the target's `vector_tolerance`); else one line with the reason. Returns how many
    points were compared."""
    found = target.count()
    if found != expected_count:
        raise ScinSearchError(
            f"verification failed: collection {target.name!r} holds {found} points, {expected_count} were expected "
            f"(it held other points before, or the source changed meanwhile)"
        )
    stored = {point.id: point for point in target.retrieve([point.id for point in sample], with_vectors=True)}
    for point in sample:
        problem = difference(point, stored.get(point.id), target.vector_tolerance)
        if problem:
            raise ScinSearchError(f"verification failed: point {point.id} {problem} in collection {target.name!r}")
    return len(sample)


def difference(expected: StoredPoint, actual: StoredPoint | None, tolerance: float = 0.0) -> str | None:
    """Why `actual` is not `expected` (None when it is): missing, another vector, another payload."""
    if actual is None:
        return "is missing"
    if not same_vector(expected.vector, actual.vector, tolerance):
        return "has another vector"
    if payload_fingerprint(expected.payload) != payload_fingerprint(actual.payload):
        return "has another payload"
    return None


def same_vector(a: np.ndarray | None, b: np.ndarray | None, tolerance: float = 0.0) -> bool:
    """Bit-identical float32 (tolerance 0), or within `tolerance` of each other in every component."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        return False
    if tolerance == 0:
        return a.tobytes() == b.tobytes()
    return bool(np.all(np.abs(a - b) <= tolerance))


def payload_fingerprint(payload: dict) -> dict[str, str]:
    """Each field's value as JSON text: tells 1 from 1.0 and True, and keeps the order inside lists and dicts."""
    return {key: json.dumps(value, ensure_ascii=False) for key, value in payload.items()}
