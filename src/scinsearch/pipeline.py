"""The embed job: records -> decoded pixels (parallel workers) -> vectors -> Qdrant, resumably.

Re-runs embed only what is missing (deterministic point ids), broken images are skipped and
named, decoding runs in worker processes so the model never waits for files, and store writes
run in a background thread so the model never waits for the store either.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

from torch.utils.data import DataLoader, Dataset as TorchDataset
from tqdm import tqdm

from scinsearch.dataset import Dataset, ImageRecord
from scinsearch.embedding import Preprocessor, collate
from scinsearch.errors import ScinSearchError
from scinsearch.images import ImageError, open_rgb
from scinsearch.store import CollectionInfo, StoredPoint, VectorStore


@dataclasses.dataclass
class EmbedSummary:
    total: int = 0
    embedded: int = 0
    already_present: int = 0
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    model: str = ""
    device: str = ""
    precision: str = ""
    store: str = ""

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        lines = [f"embedded {self.embedded}, already present {self.already_present}, failed {len(self.failed)} "
                 f"(of {self.total} images)",
                 f"model {self.model} on {self.device} in {self.precision}; "
                 f"{self.images_per_second:.1f} images/s over {self.seconds:.1f} s",
                 f"store: {self.store}"]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return lines


class DecodeImages(TorchDataset):
    """Runs in DataLoader workers: decode one file and preprocess it, or return the reason it failed."""

    def __init__(self, records: Sequence[ImageRecord], preprocessor: Preprocessor):
        self.records = records
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        try:
            return index, self.preprocessor(open_rgb(self.records[index].file)), None
        except ImageError as exc:
            return index, None, str(exc)
        except Exception as exc:  # a decoder bug must not stop a 10,000-image run
            return index, None, f"unexpected {type(exc).__name__}: {exc}"


def collate_decoded(items):
    """Split a worker batch into (indices, stacked arrays or None, failures)."""
    good = [(index, arrays) for index, arrays, _ in items if arrays is not None]
    failures = [(index, reason) for index, arrays, reason in items if arrays is None]
    batch = collate([arrays for _, arrays in good]) if good else None
    return [index for index, _ in good], batch, failures


def default_workers() -> int:
    """Decoding processes: leave one core to the model (on 2 cores: 1 worker)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def prepare_collection(store: VectorStore, model: str, dim: int, recreate: bool, extra: dict) -> None:
    """Create the collection when missing; refuse a model mismatch unless asked to recreate."""
    info = store.info()
    if info is not None and not recreate and (info.model != model or info.dim != dim):
        raise ScinSearchError(f"collection {store.name!r} holds {info.dim}-d vectors of {info.model!r}; "
                              f"embedding with {model!r} ({dim}-d) would mix models: use another --collection, "
                              f"or --recreate to start it over")
    store.create(CollectionInfo(model, dim, extra), recreate=recreate)


def run_embed(dataset: Dataset, embedder, store: VectorStore, batch_size: int = 32, workers: int | None = None,
              limit: int | None = None, recreate: bool = False, progress: bool = True,
              warn: Callable[[str], None] = tqdm.write) -> EmbedSummary:
    """Embed every record not yet in the store; return what happened."""
    if batch_size < 1:
        raise ScinSearchError("--batch-size must be at least 1")
    records = dataset.records[:limit] if limit is not None else dataset.records
    prepare_collection(store, embedder.model_name, embedder.dim, recreate, {"image_root": str(dataset.image_root)})
    present = store.existing_ids([r.point_id for r in records])
    todo = [r for r in records if r.point_id not in present]
    summary = EmbedSummary(total=len(records), already_present=len(records) - len(todo), model=embedder.model_name,
                           device=str(embedder.device), precision=embedder.precision_name,
                           store=getattr(store, "folder", None) and str(store.folder) or store.name)
    started = time.perf_counter()
    if todo:
        embed_records(todo, embedder, store, batch_size, workers, progress, warn, summary)
    store.finish_writes()
    summary.seconds = time.perf_counter() - started
    return summary


def embed_records(todo: list[ImageRecord], embedder, store: VectorStore, batch_size: int, workers: int | None,
                  progress: bool, warn: Callable[[str], None], summary: EmbedSummary) -> None:
    workers = default_workers() if workers is None else workers
    loader = DataLoader(DecodeImages(todo, embedder.preprocessor), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_decoded, prefetch_factor=4 if workers else None,
                        pin_memory=embedder.device.type == "cuda", persistent_workers=False)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scinsearch-store")
    pending: list[Future] = []
    with tqdm(total=len(todo), unit="img", desc="embedding", disable=not progress, dynamic_ncols=True) as bar:
        try:
            for indices, batch, failures in loader:
                for index, reason in failures:
                    summary.failed.append((str(todo[index].file), reason))
                    warn(f"skipped {todo[index].file}: {reason}")
                if batch is not None:
                    vectors = embedder.embed_batch(batch)
                    points = [StoredPoint(todo[i].point_id, todo[i].payload, v) for i, v in zip(indices, vectors)]
                    pending.append(writer.submit(store.upsert, points))
                    summary.embedded += len(points)
                pending = wait_for_writes(pending, keep=2)
                bar.update(len(indices) + len(failures))
            wait_for_writes(pending, keep=0)
        finally:
            writer.shutdown(wait=True)


def wait_for_writes(pending: list[Future], keep: int) -> list[Future]:
    """Bound the writes in flight (memory stays flat); a failed write stops the run with its reason."""
    while len(pending) > keep:
        try:
            pending.pop(0).result()
        except ScinSearchError as exc:
            raise ScinSearchError(f"{exc} (points written before this batch are kept: run again to resume)") from None
        except Exception as exc:
            raise ScinSearchError(f"writing to the store failed: {str(exc).splitlines()[0] if str(exc) else exc!r} "
                                  f"(points written before this batch are kept: run again to resume)") from None
    return pending
