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
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from scinsearch.embedding import Preprocessor, collate
from scinsearch.errors import ScinSearchError
from scinsearch.images import ImageError
from scinsearch.pixel_cache import PixelCache
from scinsearch.store import CollectionInfo, StoredPoint, VectorStore

if TYPE_CHECKING:  # for annotations only: the embed job itself needs no pandas (benchmarks/gpu_bench.py)
    from scinsearch.dataset import Dataset, ImageRecord

MAX_WORKERS = 32
DECODE_NICENESS = 19  # decode workers on the CPU: run when the model does not need the core
CHUNK = 16  # images per decode-worker task
PREFETCH = 2  # chunks queued per worker


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
    decoded: int = 0  # images decoded from their files in this run
    from_cache: int = 0  # images whose pixels came from the pixel cache

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        lines = [
            f"embedded {self.embedded}, already present {self.already_present}, failed {len(self.failed)} "
            f"(of {self.total} images)",
            f"model {self.model} on {self.device} in {self.precision}; "
            f"{self.images_per_second:.1f} images/s over {self.seconds:.1f} s",
            f"store: {self.store}",
        ]
        if self.from_cache:
            lines.append(f"pixels: {self.from_cache} from the cache, {self.decoded} decoded")
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return lines


class DecodeImages(TorchDataset):
    """Runs in DataLoader workers: decode one file and preprocess it (or load its pixels from the cache),
    or return the reason it failed. Items: (index, arrays or None, reason or None, came from the cache)."""

    def __init__(self, records: Sequence[ImageRecord], preprocessor: Preprocessor, cache: PixelCache | None = None):
        self.records = records
        self.preprocessor = preprocessor
        self.cache = cache
        self.cache_key = preprocessor.cache_key if cache is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        file = self.records[index].file
        try:
            if self.cache_key:
                side = self.preprocessor.image_size
                pixels = self.cache.get(file, self.cache_key, (side, side, 3))
                if pixels is not None:
                    return index, {"pixels": pixels}, None, True
            arrays = self.preprocessor.load(file)
            if self.cache_key:
                self.cache.put(file, self.cache_key, arrays["pixels"])
            return index, arrays, None, False
        except ImageError as exc:
            return index, None, str(exc), False
        except Exception as exc:  # a decoder bug must not stop a 10,000-image run
            return index, None, f"unexpected {type(exc).__name__}: {exc}", False


class DecodedChunk(NamedTuple):
    """What a decode worker hands back: a few images as one tensor per input (shared memory, no pickling)."""

    indices: list[int]
    arrays: dict[str, torch.Tensor] | None
    failures: list[tuple[int, str]]
    from_cache: int


def collate_decoded(items) -> DecodedChunk:
    """Split a worker chunk into (indices, stacked tensors or None, failures, cache hits)."""
    good = [(index, arrays) for index, arrays, _, _ in items if arrays is not None]
    failures = [(index, reason) for index, arrays, reason, _ in items if arrays is None]
    arrays = None
    if good:
        arrays = {key: torch.from_numpy(value) for key, value in collate([a for _, a in good]).items()}
    return DecodedChunk([index for index, _ in good], arrays, failures, sum(1 for item in items if item[3]))


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


def lower_priority(_worker_id: int) -> None:
    """DataLoader worker_init_fn: decode at the lowest CPU priority (the model thread comes first)."""
    try:
        os.nice(DECODE_NICENESS)
    except (OSError, AttributeError):  # not permitted, or not a POSIX system: keep the priority
        pass


def prepare_collection(
    store: VectorStore, model: str, dim: int, recreate: bool, extra: dict, preprocessing: str = "fast"
) -> None:
    """Create the collection when missing, recording how its images are preprocessed (queries follow it);
    refuse a model or preprocessing mismatch unless asked to recreate."""
    info = store.info()
    if info is not None and not recreate and (info.model != model or info.dim != dim):
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
) -> EmbedSummary:
    """Embed every record not yet in the store; return what happened.

    `cache`: a `PixelCache` to read preprocessed pixels from and write them to (None = decode every image)."""
    if batch_size < 1:
        raise ScinSearchError("--batch-size must be at least 1")
    records = dataset.records[:limit] if limit is not None else dataset.records
    prepare_collection(
        store,
        embedder.model_name,
        embedder.dim,
        recreate,
        {"image_root": str(dataset.image_root)},
        preprocessing=embedder.preprocessor.mode,
    )
    present = store.existing_ids([r.point_id for r in records])
    todo = [r for r in records if r.point_id not in present]
    summary = EmbedSummary(
        total=len(records),
        already_present=len(records) - len(todo),
        model=embedder.model_name,
        device=str(embedder.device),
        precision=embedder.precision_name,
        store=getattr(store, "folder", None) and str(store.folder) or store.name,
    )
    started = time.perf_counter()
    if todo:
        prepare = getattr(embedder, "prepare", None)  # compile (or not) before the decode workers start
        note = prepare(batch_size, len(todo)) if prepare else ""
        if note:
            warn(note)
        embed_records(todo, embedder, store, batch_size, workers, progress, warn, summary, cache)
    store.finish_writes()
    summary.seconds = time.perf_counter() - started
    return summary


def make_loader(
    todo: Sequence[ImageRecord], embedder, workers: int | None, cache: PixelCache | None, chunk: int
) -> DataLoader:
    """Decode workers: chunks of `chunk` images, at most PREFETCH chunks queued per worker (bounded memory)."""
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
) -> None:
    loader = make_loader(todo, embedder, workers, cache, chunk=min(batch_size, CHUNK))
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

    with tqdm(total=len(todo), unit="img", desc="embedding", disable=not progress, dynamic_ncols=True) as bar:
        try:
            for chunk in loader:
                for index, reason in chunk.failures:
                    summary.failed.append((str(todo[index].file), reason))
                    warn(f"skipped {todo[index].file}: {reason}")
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
                f"writing to the store failed: {str(exc).splitlines()[0] if str(exc) else exc!r} "
                f"(points written before this batch are kept: run again to resume)"
            ) from None
    return pending
