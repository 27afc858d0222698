"""The embed job: records -> decoded pixels (parallel workers) -> vectors -> Qdrant, resumably.

Re-runs embed only what is missing (deterministic point ids), broken images are skipped and
named, decoding runs in worker processes so the model never waits for files, and store writes
run in a background thread so the model never waits for the store either.

Throughput (docs/performance.md): workers decode chunks of CHUNK images and hand them over as
shared-memory tensors, at most PREFETCH chunks each in flight (memory does not grow with the data
set); the `Batcher` regroups them into exact model batches, on CUDA straight into page-locked memory
(a fast DMA copy; it does not overlap with filling the next batch, see `Batcher`).
On a CPU there is one worker per core at the lowest priority, so decoding fills the time the model
leaves free; an optional `PixelCache` skips decoding altogether on later runs.

Robustness: a file that kills or hangs its decode worker is found and skipped (`scinsearch.decoding`),
and remembered beside the images so the next run skips it at once (`scinsearch.undecodable`). The run
is `complete` only when every image is stored, the release's one known-missing file excepted.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from scinsearch.decoding import (  # noqa: F401  (DecodedChunk, DECODE_NICENESS: part of this module's API)
    DECODE_NICENESS,
    DECODE_TIMEOUT,
    PREFETCH,
    DecodedChunk,
    DecodeImages,
    DecodePool,
    collate_decoded,
    lower_priority,
)
from scinsearch.errors import ScinSearchError
from scinsearch.helpers import first_line
from scinsearch.pixel_cache import PixelCache
from scinsearch.schema import is_known_missing
from scinsearch.store import CollectionInfo, StoredPoint, VectorStore
from scinsearch.store.record import IMAGE_ROOT
from scinsearch.undecodable import UndecodableFiles

if TYPE_CHECKING:  # for annotations only: the embed job itself needs no pandas (benchmarks/gpu_bench.py)
    from scinsearch.dataset import Dataset, ImageRecord

MAX_WORKERS = 32
CHUNK = 16  # images per decode-worker task


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
    backend: str = "torch"  # what ran the model: torch or openvino
    store: str = ""
    decoded: int = 0  # images decoded from their files in this run
    from_cache: int = 0  # images whose pixels came from the pixel cache
    undecodable_record: str = ""  # where files that crash or hang the decoder are remembered
    crashed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)  # such files found in this run
    skipped_as_recorded: int = 0  # such files found by an earlier run and skipped at once

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    @property
    def known_gaps(self) -> list[tuple[str, str]]:
        """Failures that are the release's own gap (its one missing image): reported, not counted."""
        return [(path, reason) for path, reason in self.failed if is_known_missing(path) and reason == "file not found"]

    @property
    def missing(self) -> list[tuple[str, str]]:
        """Images that should be in the store and are not."""
        gaps = set(self.known_gaps)
        return [failure for failure in self.failed if failure not in gaps]

    @property
    def complete(self) -> bool:
        """Every image stored (the known gap excepted): what `scinsearch embed`'s exit code 0 means."""
        return not self.missing

    def lines(self) -> list[str]:
        lines = [
            f"embedded {self.embedded}, already present {self.already_present}, failed {len(self.failed)} "
            f"(of {self.total} images)",
            f"model {self.model} on {self.device} in {self.precision}"
            + ("" if self.backend == "torch" else f" through {self.backend}")
            + f"; {self.images_per_second:.1f} images/s over {self.seconds:.1f} s",
            f"store: {self.store}",
        ]
        if self.from_cache:
            lines.append(f"pixels: {self.from_cache} from the cache, {self.decoded} decoded")
        gaps = set(self.known_gaps)
        lines += [f"  known gap of the release (not an error): {path}: {reason}" for path, reason in sorted(gaps)]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed if (path, reason) not in gaps]
        if self.crashed:
            lines.append(
                f"{len(self.crashed)} file(s) crashed or hung the decoder: listed in {self.undecodable_record}, "
                f"so the next run skips them at once (delete a line there to try that file again)"
            )
        if self.skipped_as_recorded:
            lines.append(
                f"{self.skipped_as_recorded} file(s) skipped at once: they crashed or hung the decoder in an "
                f"earlier run (listed in {self.undecodable_record}; delete a line there to try that file again)"
            )
        if self.complete:
            lines.append("complete: every image is stored" + (" (the known gap excepted)" if gaps else ""))
        else:
            lines.append(f"incomplete: {len(self.missing)} image(s) not stored (see above)")
        return lines


class Batcher:
    """Regroups decoded chunks into model batches of exactly `batch_size` (the last may be shorter).

    Workers decode small chunks, so memory in flight is workers x prefetch x chunk images whatever the
    batch size. On CUDA each batch is assembled straight into page-locked memory, so its copy to the GPU
    is a fast DMA transfer issued without blocking. It does not overlap with filling the next batch:
    `embed_batch` waits for its vectors (copied back to the CPU) before the next batch is assembled, so
    upload, model and assembly take turns while the decode workers keep decoding. Two buffers alternate
    only so that a buffer is never overwritten while a copy from it could still be in flight."""

    def __init__(self, batch_size: int, pin: bool):
        self.batch_size = batch_size
        self.pin = pin
        self.indices: list[int] = []
        self.parts: list[dict[str, torch.Tensor]] = []
        self.buffers: dict[tuple, list[torch.Tensor]] = {}
        self.turn = 0

    def add(self, chunk: DecodedChunk):
        """Yield every full batch that `chunk` completes, as (indices, arrays)."""
        if chunk.arrays is None:
            return
        self.indices.extend(chunk.indices)
        self.parts.append(chunk.arrays)
        while len(self.indices) >= self.batch_size:
            yield self.take(self.batch_size)

    def flush(self):
        if self.indices:
            yield self.take(len(self.indices))

    def take(self, count: int) -> tuple[list[int], dict[str, torch.Tensor]]:
        merged = {
            key: torch.cat([part[key] for part in self.parts]) if len(self.parts) > 1 else self.parts[0][key]
            for key in self.parts[0]
        }
        batch = {key: self.staged(key, value[:count]) for key, value in merged.items()}
        rest = {key: value[count:] for key, value in merged.items()}
        indices, self.indices = self.indices[:count], self.indices[count:]
        self.parts = [rest] if self.indices else []
        return indices, batch

    def staged(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        if not self.pin:
            return tensor
        shape = (self.batch_size, *tensor.shape[1:])
        slots = self.buffers.setdefault((key, shape, tensor.dtype), [])
        if len(slots) < 2:
            slots.append(torch.empty(shape, dtype=tensor.dtype).pin_memory())
        buffer = slots[self.turn % 2][: len(tensor)]
        self.turn += 1
        buffer.copy_(tensor)
        return buffer


def default_batch_size(device_type: str = "cpu") -> int:
    """Images per model call when `--batch-size` is not given: a GPU wants large batches, a CPU small ones."""
    return 256 if device_type == "cuda" else 16


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask (a container's or taskset's CPU set), not
    `os.cpu_count()`, which counts every core of the host and would start a worker for each."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_workers(device_type: str = "cpu") -> int:
    """Decoding processes. On the CPU one per usable core: the workers run at the lowest priority, so
    they decode while the model waits and stay out of its way while it runs (both cores for both jobs).
    On a GPU all usable cores but one (the main process feeds the GPU and runs the store writes).
    At most MAX_WORKERS either way."""
    cores = usable_cores()
    return max(1, min(MAX_WORKERS, cores if device_type == "cpu" else cores - 1))


def prepare_collection(
    store: VectorStore, model: str, dim: int, recreate: bool, extra: dict, preprocessing: str = "fast"
) -> None:
    """Create the collection when missing, recording how its images are preprocessed (queries follow it);
    refuse a model or preprocessing mismatch unless asked to recreate."""
    info = store.info()
    if info is not None and not recreate and not info.same_space(model, dim):
        raise ScinSearchError(
            f"collection {store.name!r} holds {info.dim}-d vectors of {info.model!r}; "
            f"embedding with {model!r} ({dim}-d) would mix models: use another --collection, "
            f"or --recreate to start it over"
        )
    if info is not None and not recreate and info.preprocessing != preprocessing:
        flag = "add --exact-preprocessing" if info.preprocessing == "exact" else "drop --exact-preprocessing"
        raise ScinSearchError(
            f"collection {store.name!r} was embedded with {info.preprocessing} preprocessing, "
            f"this run uses {preprocessing}: {flag} to resume it, or --recreate to start it over"
        )
    store.create(CollectionInfo(model, dim, extra, preprocessing=preprocessing), recreate=recreate)


def run_embed(
    dataset: Dataset,
    embedder,
    store: VectorStore,
    batch_size: int = 32,
    workers: int | None = None,
    limit: int | None = None,
    recreate: bool = False,
    progress: bool = True,
    warn: Callable[[str], None] = tqdm.write,
    cache: PixelCache | None = None,
    decode_timeout: float = DECODE_TIMEOUT,
    remember_undecodable: bool = True,
) -> EmbedSummary:
    """Embed every record not yet in the store; return what happened (`summary.complete`: all stored).

    `cache`: a `PixelCache` to read preprocessed pixels from and write them to (None = decode every image).
    `decode_timeout`: seconds one file may take to decode before its worker is killed and the file
    tried alone. `remember_undecodable`: list files that crash or hang the decoder beside the images
    (`scinsearch.undecodable`), and skip the ones listed there at once."""
    if batch_size < 1:
        raise ScinSearchError("--batch-size must be at least 1")
    if not decode_timeout > 0:
        raise ScinSearchError("--decode-timeout must be more than 0 seconds")
    records = dataset.records[:limit] if limit is not None else dataset.records
    prepare_collection(
        store,
        embedder.model_name,
        embedder.dim,
        recreate,
        {IMAGE_ROOT: str(dataset.image_root)},
        preprocessing=embedder.preprocessor.mode,
    )
    present = store.existing_ids([r.point_id for r in records])
    todo = [r for r in records if r.point_id not in present]
    summary = EmbedSummary(
        total=len(records) + len(dataset.refused),
        already_present=len(records) - len(todo),
        failed=list(dataset.refused),
        model=embedder.model_name,
        device=str(embedder.device),
        precision=embedder.precision_name,
        backend=embedder.backend,
        store=getattr(store, "folder", None) and str(store.folder) or store.name,
    )
    undecodable = UndecodableFiles(dataset.image_root) if remember_undecodable else None
    if undecodable is not None:
        summary.undecodable_record = str(undecodable.path)
        todo = skip_recorded(todo, undecodable, summary)
    started = time.perf_counter()
    if todo:
        prepare = getattr(embedder, "prepare", None)  # compile (or not) before the decode workers start
        note = prepare(batch_size, len(todo)) if prepare else ""
        if note:
            warn(note)
        embed_records(todo, embedder, store, batch_size, workers, progress, warn, summary, cache, decode_timeout)
        if undecodable is not None and summary.crashed:
            remember(summary, undecodable, warn)
    store.finish_writes()
    summary.seconds = time.perf_counter() - started
    return summary


def skip_recorded(todo: list[ImageRecord], undecodable: UndecodableFiles, summary: EmbedSummary) -> list[ImageRecord]:
    """Leave out the files an earlier run found undecodable (unchanged since): each would cost a worker again."""
    kept = []
    for record in todo:
        reason = undecodable.reason(record.file)
        if reason is None:
            kept.append(record)
        else:
            summary.failed.append((str(record.file), f"skipped: in an earlier run {reason}"))
            summary.skipped_as_recorded += 1
    return kept


def remember(summary: EmbedSummary, undecodable: UndecodableFiles, warn) -> None:
    """Write this run's culprits to the record beside the images."""
    for file, reason in summary.crashed:
        if not undecodable.add(file, reason):
            warn(f"cannot write {undecodable.path} ({undecodable.unwritable}): the next run will find these again")
            summary.undecodable_record = f"{undecodable.path} (not written: {undecodable.unwritable})"
            return


def make_loader(
    todo: Sequence[ImageRecord], embedder, workers: int | None, cache: PixelCache | None, chunk: int
) -> DataLoader:
    """A plain DataLoader over the decode workers (chunks of `chunk` images, at most PREFETCH chunks queued
    per worker), for callers that need one. `embed_records` uses the guarded `DecodePool` instead: a file
    that kills a DataLoader worker stops the whole loader."""
    on_cpu = embedder.device.type == "cpu"
    workers = default_workers(embedder.device.type) if workers is None else workers
    return DataLoader(
        DecodeImages(todo, embedder.preprocessor, cache),
        batch_size=chunk,
        num_workers=workers,
        collate_fn=collate_decoded,
        prefetch_factor=PREFETCH if workers else None,
        worker_init_fn=lower_priority if workers and on_cpu else None,
        persistent_workers=False,
    )


def decode_pool(
    todo: Sequence[ImageRecord], embedder, workers: int | None, cache: PixelCache | None, chunk: int, timeout: float
) -> DecodePool:
    """The guarded decode workers (`scinsearch.decoding`): a file that crashes or hangs one is found and skipped."""
    workers = default_workers(embedder.device.type) if workers is None else workers
    decode = DecodeImages(todo, embedder.preprocessor, cache)
    return DecodePool(decode, workers, chunk, timeout=timeout, nice=embedder.device.type == "cpu")


def embed_records(
    todo: list[ImageRecord],
    embedder,
    store: VectorStore,
    batch_size: int,
    workers: int | None,
    progress: bool,
    warn: Callable[[str], None],
    summary: EmbedSummary,
    cache: PixelCache | None = None,
    decode_timeout: float = DECODE_TIMEOUT,
) -> None:
    batcher = Batcher(batch_size, pin=embedder.device.type == "cuda")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scinsearch-store")
    pending: list[Future] = []

    def embed(indices: list[int], arrays: dict) -> None:
        nonlocal pending
        vectors = embedder.embed_batch(arrays)
        points = [StoredPoint(todo[i].point_id, todo[i].payload, v) for i, v in zip(indices, vectors)]
        pending.append(writer.submit(store.upsert, points))
        summary.embedded += len(points)
        pending = wait_for_writes(pending, keep=2)
        bar.update(len(indices))

    pool = decode_pool(todo, embedder, workers, cache, min(batch_size, CHUNK), decode_timeout)
    with tqdm(total=len(todo), unit="img", desc="embedding", disable=not progress, dynamic_ncols=True) as bar:
        try:
            with pool:
                for chunk in pool.chunks(range(len(todo))):
                    for index, reason in chunk.failures:
                        summary.failed.append((str(todo[index].file), reason))
                        warn(f"skipped {todo[index].file}: {reason}")
                    reasons = dict(chunk.failures)
                    summary.crashed += [(todo[index].file, reasons[index]) for index in chunk.crashed]
                    bar.update(len(chunk.failures))
                    summary.from_cache += chunk.from_cache
                    summary.decoded += len(chunk.indices) - chunk.from_cache
                    for indices, arrays in batcher.add(chunk):
                        embed(indices, arrays)
            for indices, arrays in batcher.flush():
                embed(indices, arrays)
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
            raise ScinSearchError(
                f"writing to the store failed: {first_line(exc, limit=1000)} "
                f"(points written before this batch are kept: run again to resume)"
            ) from None
    return pending
