"""GPU embedding throughput in one short go (H100 / H200): decode-only, model-only and end-to-end images/s.

For each architecture (random weights built from its config: siglip-base-patch16-224 and
siglip-so400m-patch14-384) and each batch size (64, 128, 256, 512), in half precision:

- decode-only: the pipeline's decode workers, one per CPU core, on synthetic SCIN-sized PNGs
  (810x1080) — decode + resize to the model's input size (measured once per input size);
- model-only: `Embedder.embed_batch` on ready uint8 batches in page-locked memory (copy to the GPU,
  normalise there, the tower, L2 normalise, copy back);
- end-to-end: `scinsearch.pipeline.run_embed` on the files (decode workers, batching into pinned
  memory, non-blocking copies, the model, store writes in a background thread).

On a GPU decoding (CPU cores) and the model (the GPU) run on different hardware, so the ceiling is
min(decode, model) and the ratio is end-to-end / ceiling. Runs in about 2-4 minutes including model
builds and warm-ups; needs torch with CUDA, transformers, Pillow, numpy (no Qdrant: writes go to an
in-memory store, or Qdrant Edge with --edge when installed).

    python benchmarks/gpu_bench.py                          # the committed run (needs a GPU)
    python benchmarks/gpu_bench.py --device cpu --models google/siglip-base-patch16-224 \\
        --batch-sizes 8 --images 16                         # smoke test of the script itself, no GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, no install needed

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODELS = ["google/siglip-base-patch16-224", "google/siglip-so400m-patch14-384"]
BATCH_SIZES = [64, 128, 256, 512]


class MemoryStore:
    """Just enough of the VectorStore protocol for run_embed, kept in memory (the GPU box has no Qdrant)."""

    name = "memory"

    def __init__(self):
        self.points, self.collection, self.lock = {}, None, threading.Lock()

    def info(self):
        return self.collection

    def create(self, info, recreate=False):
        if recreate or self.collection is None:
            self.collection, self.points = info, {}

    def existing_ids(self, ids):
        return {i for i in ids if i in self.points}

    def upsert(self, points):
        with self.lock:
            for point in points:
                self.points[point.id] = point.vector

    def finish_writes(self):
        pass

    def close(self):
        pass


def one_png(seed: int) -> bytes:
    from scinsearch.testing import scin_sized_png

    return scin_sized_png(seed)


def make_files(folder: Path, count: int, distinct: int) -> list:
    """`count` SCIN-sized PNG files (a few distinct pictures, copied) as pipeline records."""
    from scinsearch.dataset import ImageRecord

    with Pool(min(distinct, os.cpu_count() or 1)) as pool:
        pngs = pool.map(one_png, range(distinct))
    records = []
    for number in range(count):
        file = folder / f"{number:06d}.png"
        file.write_bytes(pngs[number % distinct])
        records.append(ImageRecord(f"img{number}", file, {"image_id": f"img{number}"}))
    return records, float(np.mean([len(p) for p in pngs]))


def build_embedder(model_id: str, device: str, precision: str):
    from PIL import Image

    from scinsearch.embedding import Embedder, Preprocessor
    from scinsearch.models import KNOWN_MODELS, random_vision_model

    info = KNOWN_MODELS[model_id]
    torch.manual_seed(0)
    started = time.perf_counter()
    target = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch.device(target):  # initialise the weights on the device itself: seconds, not a minute
        model = random_vision_model(model_id)
    preprocessor = Preprocessor(
        "fixed", info.image_size, int(Image.Resampling.BICUBIC), 1 / 255, (0.5,) * 3, (0.5,) * 3, fast=True
    )
    embedder = Embedder.from_model(
        model, preprocessor, model_id, device=str(target), precision=precision, compile="off"
    )
    return embedder, time.perf_counter() - started


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(embedder, batch_size: int, min_seconds: float, min_batches: int) -> float:
    side = embedder.preprocessor.image_size
    pixels = torch.randint(0, 256, (batch_size, side, side, 3), dtype=torch.uint8)
    if embedder.device.type == "cuda":
        pixels = pixels.pin_memory()
    batch = {"pixels": pixels}
    for _ in range(2):  # warm-up: kernels chosen, memory pools grown
        embedder.embed_batch(batch)
    synchronize(embedder.device)
    count, started = 0, time.perf_counter()
    while count < min_batches * batch_size or time.perf_counter() - started < min_seconds:
        embedder.embed_batch(batch)  # returns numpy: includes the copy back, so it is synchronised
        count += batch_size
    return count / (time.perf_counter() - started)


def decode_only(records, preprocessor, workers: int, chunk: int) -> float:
    import types

    from scinsearch import pipeline

    shape = types.SimpleNamespace(preprocessor=preprocessor, device=torch.device("cpu"))
    pipeline.DECODE_NICENESS = 0
    started = time.perf_counter()
    count = sum(len(c.indices) for c in pipeline.make_loader(records, shape, workers, None, chunk=chunk))
    assert count == len(records), count
    return count / (time.perf_counter() - started)


def end_to_end(records, embedder, batch_size: int, workers: int | None, edge_folder: Path | None) -> float:
    from scinsearch.dataset import Dataset
    from scinsearch.pipeline import run_embed

    if edge_folder is not None:
        from scinsearch.settings import Settings
        from scinsearch.store import open_store

        store = open_store(Settings(qdrant_path=edge_folder / f"run{time.time_ns()}", collection="bench"))
    else:
        store = MemoryStore()
    try:
        summary = run_embed(
            Dataset(records, records[0].file.parent),
            embedder,
            store,
            batch_size=batch_size,
            workers=workers,
            progress=False,
            warn=lambda message: None,
        )
    finally:
        store.close()
    assert summary.embedded == len(records) and not summary.failed, summary.lines()
    return summary.images_per_second


def describe_machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    import PIL
    import transformers

    text = (
        f"CPU {cpu} ({os.cpu_count()} logical cores); torch {torch.__version__}, transformers "
        f"{transformers.__version__}, Pillow {PIL.__version__}, Python {platform.python_version()}"
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text = f"GPU {props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}); " + text
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto", help="auto = bf16 where the GPU supports it, else fp16")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--images", type=int, default=2048, help="files for decode-only and end-to-end")
    parser.add_argument("--distinct", type=int, default=16, help="distinct synthetic pictures among them")
    parser.add_argument("--workers", type=int, default=None, help="end-to-end decode workers (default: cores - 1)")
    parser.add_argument("--model-seconds", type=float, default=2.0, help="minimum timed seconds per model-only row")
    parser.add_argument("--edge", action="store_true", help="write to a Qdrant Edge store (needs qdrant-edge-py)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this script is for a GPU machine (try --device cpu for a smoke test)")
    device = torch.device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    cores = os.cpu_count() or 1
    begun = time.perf_counter()
    print(f"# scinsearch GPU embedding benchmark\n\n{describe_machine(device)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as folder:
        records, png_bytes = make_files(Path(folder), args.images, args.distinct)
        print(
            f"{len(records)} synthetic SCIN-sized PNGs (810x1080, {png_bytes / 1e6:.1f} MB each) written in "
            f"{time.perf_counter() - begun:.0f} s\n",
            flush=True,
        )
        rows, decode_cache = [], {}
        for model_id in args.models.split(","):
            embedder, build_s = build_embedder(model_id, args.device, args.precision)
            side = embedder.preprocessor.image_size
            if side not in decode_cache:
                decode_cache[side] = decode_only(records, embedder.preprocessor, cores, 16)
            decode = decode_cache[side]
            for batch_size in batch_sizes:
                model = model_only(embedder, batch_size, args.model_seconds, min_batches=3)
                e2e = end_to_end(
                    records, embedder, batch_size, args.workers, Path(folder) / "edge" if args.edge else None
                )
                ceiling = min(decode, model) if device.type == "cuda" else 1 / (1 / decode + 1 / model)
                memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
                rows.append((model_id, side, embedder.precision_name, batch_size, decode, model, e2e, ceiling, memory))
                print(
                    f"  {model_id} batch {batch_size}: decode {decode:.0f}, model {model:.0f}, end-to-end {e2e:.0f} "
                    f"img/s (built in {build_s:.0f} s; {time.perf_counter() - begun:.0f} s so far)",
                    flush=True,
                )
            del embedder
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
    from scinsearch.pipeline import default_workers

    workers = args.workers if args.workers is not None else default_workers(device.type)
    print(
        f"\ndecode-only: {cores} workers; end-to-end: {workers} decode workers; {len(records)} images per "
        f"end-to-end run; ceiling = {'min(decode, model)' if device.type == 'cuda' else '1/(1/decode + 1/model)'}\n"
    )
    print(
        "| model | input | precision | batch | decode-only img/s | model-only img/s | end-to-end img/s "
        "| ceiling img/s | ratio | peak GPU memory GiB |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for model_id, side, precision, batch_size, decode, model, e2e, ceiling, memory in rows:
        print(
            f"| {model_id.split('/')[-1]} | {side} | {precision} | {batch_size} | {decode:.0f} | {model:.0f} "
            f"| {e2e:.0f} | {ceiling:.0f} | **{e2e / ceiling:.2f}** | {memory:.1f} |"
        )
    ratios = [row[6] / row[7] for row in rows]
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"\nmedian ratio {statistics.median(ratios):.2f}; peak RSS main {main_rss:.0f} MiB, largest decode "
        f"worker {worker_rss:.0f} MiB (forked: mostly pages shared with the main process); "
        f"total {time.perf_counter() - begun:.0f} s"
    )


if __name__ == "__main__":
    main()
