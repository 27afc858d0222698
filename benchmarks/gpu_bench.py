"""GPU embedding throughput in one short go (H100 / H200), as a multiple of the old scripts' recipe measured
in the same run.

For each architecture (random weights from its config: siglip-base-patch16-224 and siglip-so400m-patch14-384)
and each batch size (64, 128, 256, 512), in the GPU's half precision (bf16 where supported):

- the old recipe (`old_recipe.py`: batch 32, `Image.open(p).convert("RGB")` in one thread, the processor,
  `get_image_features`, fp32): measured before and after our rows of that model, on the same files;
- decode-only: the pipeline's decode workers on synthetic SCIN-sized PNGs (810x1080), as many workers as
  end to end (so the ceiling is not inflated), measured once per input size;
- model-only: `Embedder.embed_batch` on ready uint8 batches in page-locked memory (copy to the GPU,
  normalise there, the tower, L2 normalise, copy back), also as a fraction of what the GPU's dense matmul
  throughput (measured at the start) allows for the model's FLOPs (counted per image);
- end-to-end: `scinsearch.pipeline.run_embed` on the files (decode workers, batching into page-locked
  memory, the model, store writes in a background thread), and its multiple of the old recipe.

Decoding (CPU cores) and the model (the GPU) run on different hardware, so the ceiling is min(decode, model)
and the ratio is end-to-end / ceiling. Peak GPU memory is reset for each batch size.

Made to work on the first try on a scarce GPU: it needs only torch (with CUDA), transformers, Pillow and
numpy (no pandas, no Qdrant: writes go to an in-memory store, or Qdrant Edge with --edge); a failing
row (out of memory, a dead decode worker) is recorded in its row and the run goes on; the table is
rewritten to --out after every row; --max-seconds stops the run inside a time budget keeping what it
measured (so does Ctrl-C). Progress and warnings go to stderr; the table goes to stdout and --out.

    python benchmarks/gpu_bench.py --max-seconds 420 --out benchmarks/results/embed-gpu.md   # the GPU run
    python benchmarks/gpu_bench.py --self-check          # the whole script on the CPU with a tiny model
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import resource
import signal
import sys
import tempfile
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # machine.py, old_recipe.py
sys.path.insert(0, str(HERE.parent / "src"))  # run from a checkout, no install needed

import machine  # noqa: E402
import numpy as np  # noqa: E402
import old_recipe  # noqa: E402
import torch  # noqa: E402

MODELS = ["google/siglip-base-patch16-224", "google/siglip-so400m-patch14-384"]
BATCH_SIZES = [64, 128, 256, 512]
SHM_WARNING_BYTES = 1 << 30  # decode workers pass their chunks through /dev/shm: Docker's 64 MB default is too small
SELF_CHECK = dict(
    device="cpu", models=machine.TINY, batch_sizes="2,4", images=8, distinct=2, png_size="120x160",
    model_seconds=0.2, old_images=8, workers=1, matmul_size=256, matmul_seconds=0.2,
)  # fmt: skip


class OutOfTime(BaseException):
    """--max-seconds ran out. A BaseException, so that a row's `except Exception` does not swallow it."""


class Budget:
    """The run's time budget: `allows(estimate)` before each step, and a hard stop (SIGALRM) at the end."""

    def __init__(self, seconds: float | None):
        self.started, self.seconds = time.perf_counter(), seconds
        if seconds:
            signal.signal(signal.SIGALRM, self.expired)
            signal.setitimer(signal.ITIMER_REAL, seconds)

    @staticmethod
    def expired(*_):
        raise OutOfTime

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def allows(self, estimate: float) -> bool:
        return not self.seconds or self.elapsed() + estimate <= self.seconds

    def stop(self) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)


@dataclasses.dataclass
class FileRecord:
    """What run_embed reads of a `scinsearch.dataset.ImageRecord` (that module needs pandas)."""

    image_id: str
    file: Path
    payload: dict

    @property
    def point_id(self) -> str:
        from scinsearch.schema import point_id_for

        return point_id_for(self.image_id)


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


@dataclasses.dataclass
class Row:
    model: str
    side: int
    recipe: str  # "ours" or "old"
    precision: str
    batch: int
    decode: float | None = None
    model_rate: float | None = None
    bound: float | None = None  # images/s the matmul throughput allows
    e2e: float | None = None
    memory: float | None = None
    note: str = ""


class Report:
    """The markdown: header, one row per configuration, notes. Rewritten to --out after every row."""

    def __init__(self, out: Path | None):
        self.out, self.header, self.rows, self.notes = out, [], [], []
        self.old: dict[str, float] = {}  # model -> the old recipe's images/s in this run

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.write(final=False)

    def render(self, final: bool) -> str:
        lines = [*self.header, ""]
        lines.append(
            "| model | input | recipe | precision | batch | decode-only img/s | model-only img/s | of matmul bound "
            "| end-to-end img/s | × old recipe | ceiling img/s | ratio | peak GPU memory GiB | note |"
        )
        lines.append("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        lines += [self.line(row) for row in self.rows]
        lines += ["", *self.notes]
        if not final:
            lines.append("(run in progress or interrupted: the rows above are what was measured so far)")
        return "\n".join(lines) + "\n"

    def line(self, row: Row) -> str:
        def number(value, digits=0):
            return "–" if value is None else f"{value:.{digits}f}"

        old = self.old.get(row.model)
        times_old = row.e2e / old if row.e2e and old else None
        ceiling = min(row.decode, row.model_rate) if row.decode and row.model_rate else None
        ratio = row.e2e / ceiling if row.e2e and ceiling else None
        fraction = row.model_rate / row.bound if row.model_rate and row.bound else None
        recipe = "old scripts" if row.recipe == "old" else "scinsearch"
        return (
            f"| {row.model.split('/')[-1]} | {row.side} | {recipe} | {row.precision} | {row.batch} "
            f"| {number(row.decode)} | {number(row.model_rate)} | {number(fraction, 2)} | {number(row.e2e, 1)} "
            f"| {'**' + number(times_old, 2) + '**' if times_old else '–'} | {number(ceiling)} "
            f"| {number(ratio, 2)} | {number(row.memory, 1)} | {row.note} |"
        )

    def write(self, final: bool) -> None:
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        partial = self.out.with_name(self.out.name + ".partial")
        partial.write_text(self.render(final))
        partial.replace(self.out)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def make_png(args: tuple[int, tuple[int, int]]) -> bytes:
    from scinsearch.testing import scin_sized_png

    seed, size = args
    return scin_sized_png(seed, size)


def make_files(folder: Path, count: int, distinct: int, size: tuple[int, int], cores: int) -> tuple[list, float]:
    """`count` SCIN-sized PNG files (a few distinct pictures, copied) as pipeline records.

    Threads, not processes (PNG encoding releases the GIL): --max-seconds's alarm may land at any moment,
    and one landing while a process pool forked left a worker nobody knew of holding stdout open, so a
    caller reading the table waited forever (seen in CI)."""
    with ThreadPoolExecutor(max(1, min(distinct, cores))) as pool:
        pngs = list(pool.map(make_png, [(seed, size) for seed in range(distinct)]))
    records = []
    for number in range(count):
        file = folder / f"{number:06d}.png"
        file.write_bytes(pngs[number % distinct])
        records.append(FileRecord(f"img{number}", file, {"image_id": f"img{number}"}))
    return records, float(np.mean([len(p) for p in pngs]))


def build(model_id: str, device: torch.device, precision: str):
    """(our Embedder, the old recipe's fp32 model and processor, GFLOP per image) for one architecture."""
    from PIL import Image

    from scinsearch.embedding import Embedder, Preprocessor

    torch.manual_seed(0)
    with torch.device(device):  # initialise the weights on the device itself: seconds, not a minute
        vision, side = machine.build_vision_model(model_id)
    gflop = machine.flops_per_image(vision, side, str(device))
    old = (old_recipe.old_model(vision, device), old_recipe.old_processor(side))  # fp32 copy, before ours converts
    preprocessor = Preprocessor(
        "fixed", side, int(Image.Resampling.BICUBIC), 1 / 255, (0.5,) * 3, (0.5,) * 3, fast=True
    )
    embedder = Embedder.from_model(
        vision, preprocessor, model_id, device=str(device), precision=precision, compile="off"
    )
    return embedder, old, gflop


def model_only(embedder, batch_size: int, min_seconds: float, min_batches: int = 3) -> float:
    side = embedder.preprocessor.image_size
    pixels = torch.randint(0, 256, (batch_size, side, side, 3), dtype=torch.uint8)
    if embedder.device.type == "cuda":
        pixels = pixels.pin_memory()
    batch = {"pixels": pixels}
    for _ in range(2):  # warm-up: kernels chosen, memory pools grown
        embedder.embed_batch(batch)
    machine.synchronize(embedder.device)
    count, started = 0, time.perf_counter()
    while count < min_batches * batch_size or time.perf_counter() - started < min_seconds:
        embedder.embed_batch(batch)  # returns numpy: includes the copy back, so it is synchronised
        count += batch_size
    return count / (time.perf_counter() - started)


def decode_only(records, preprocessor, workers: int) -> float:
    from scinsearch import pipeline

    shape = types.SimpleNamespace(preprocessor=preprocessor, device=torch.device("cpu"))  # all decode_pool reads
    started = time.perf_counter()
    with pipeline.decode_pool(records, shape, workers, None, pipeline.CHUNK, pipeline.DECODE_TIMEOUT) as pool:
        count = sum(len(chunk.indices) for chunk in pool.chunks(range(len(records))))
    if count != len(records):
        raise RuntimeError(f"decoded {count} of {len(records)} images")
    return count / (time.perf_counter() - started)


def end_to_end(records, embedder, batch_size: int, workers: int, edge_folder: Path | None) -> float:
    from scinsearch.pipeline import run_embed

    if edge_folder is not None:
        from scinsearch.settings import Settings
        from scinsearch.store import open_store

        store = open_store(Settings(qdrant_path=edge_folder / f"run{time.time_ns()}", collection="bench"))
    else:
        store = MemoryStore()
    # what run_embed reads of a dataset.Dataset (that module needs pandas, which the GPU machine lacks)
    data = types.SimpleNamespace(records=records, image_root=records[0].file.parent, refused=[])
    try:
        summary = run_embed(data, embedder, store, batch_size=batch_size, workers=workers, progress=False, warn=say)
    finally:
        store.close()
    if summary.embedded != len(records) or summary.failed:
        raise RuntimeError("; ".join(summary.lines()[:3]))
    return summary.images_per_second


def run_old(report: Report, old, embedder, files: list[Path], device, runs: list[float]) -> None:
    """One timed run of the old recipe; its row shows the mean of the runs so far and their spread."""
    model, processor = old
    rate, vectors = old_recipe.timed_run(model, processor, files, device)
    runs.append(rate)
    check = min(len(files), 8)
    cosine = old_recipe.agreement(embedder.embed_images(files[:check]), vectors[:check])
    report.old[embedder.model_name] = float(np.mean(runs))
    row = next(r for r in report.rows if r.recipe == "old" and r.model == embedder.model_name)
    row.e2e = report.old[embedder.model_name]
    row.note = (
        f"{' / '.join(f'{r:.1f}' for r in runs)} img/s in {len(runs)} run(s) of {len(files)} images, before and "
        f"after ours; min cosine to ours {cosine:.4f}"
    )
    report.write(final=False)


def header(args, device: torch.device, cores: int, workers: int) -> list[str]:
    import PIL
    import transformers

    lines = ["# scinsearch GPU embedding benchmark", ""]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
    lines.append(f"- {machine.describe_cpu()}")
    shm = machine.shm_size()
    if shm is None:
        lines.append("- /dev/shm: none")
    else:
        lines.append(f"- /dev/shm: {shm[0] / 2**30:.1f} GiB ({shm[1] / 2**30:.1f} GiB free)")
        if shm[0] < SHM_WARNING_BYTES:
            say(
                f"WARNING: /dev/shm is {shm[0] / 2**20:.0f} MiB: decode workers pass pixels through it and may die; "
                "give the container more (docker run --shm-size=8g)"
            )
    lines.append(
        f"- torch {torch.__version__}, transformers {transformers.__version__}, Pillow {PIL.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}"
    )
    lines.append(
        f"- decode-only and end-to-end: {workers} decode workers ({cores} usable cores); {args.images} images per "
        f"decode-only and end-to-end run; the old recipe: {args.old_images} of the same files, batch "
        f"{old_recipe.OLD_BATCH_SIZE}, fp32, decoding in its one process"
    )
    return lines


def measure_matmul(args, device: torch.device, report: Report) -> dict[str, float]:
    """Dense matmul GFLOP/s in fp32 and, where native, the half precision the model runs in."""
    kinds = ["fp32"]
    if device.type == "cuda":
        kinds.append("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    elif machine.native_bf16():
        kinds.append("bf16")
    rates = {}
    for kind in kinds:
        rates[kind] = machine.matmul_gflops(str(device), kind, args.matmul_size, args.matmul_seconds)
    report.header.append(
        "- dense matmul (torch.matmul, square, best of repeated runs): "
        + ", ".join(f"{kind} {machine.flops_text(rate)}" for kind, rate in rates.items())
    )
    return rates


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto", help="auto = bf16 where the GPU supports it, else fp16")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated; {machine.TINY} for a smoke run")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--images", type=int, default=2048, help="files for decode-only and end-to-end")
    parser.add_argument("--old-images", type=int, default=256, help="files per run of the old recipe")
    parser.add_argument("--distinct", type=int, default=16, help="distinct synthetic pictures among them")
    parser.add_argument("--png-size", default="810x1080", help="width x height of the synthetic photos")
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: usable cores - 1)")
    parser.add_argument("--model-seconds", type=float, default=2.0, help="minimum timed seconds per model-only row")
    parser.add_argument("--matmul-size", type=int, default=None, help="matrix side (default 8192 GPU, 2048 CPU)")
    parser.add_argument("--matmul-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=480, help="time budget; 0 = none (default 480)")
    parser.add_argument("--out", type=Path, default=None, help="write the table here after every row")
    parser.add_argument("--edge", action="store_true", help="write to a Qdrant Edge store (needs qdrant-edge-py)")
    parser.add_argument("--self-check", action="store_true", help="tiny model on the CPU: checks the script itself")
    args = parser.parse_args(argv)
    if args.self_check:
        for key, value in SELF_CHECK.items():
            setattr(args, key, value)
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    if min(args.batch_sizes) < 1 or args.images < 1 or args.old_images < 1 or args.distinct < 1:
        parser.error("batch sizes, --images, --old-images and --distinct must be at least 1")
    args.png_size = tuple(int(v) for v in args.png_size.lower().split("x"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        say("no CUDA device here: this script is for a GPU machine (--self-check runs it on the CPU)")
        return 2
    from scinsearch.pipeline import default_workers, usable_cores

    device, cores = torch.device(args.device), usable_cores()
    workers = args.workers if args.workers is not None else default_workers(device.type)
    report, budget = Report(args.out), Budget(args.max_seconds or None)
    try:
        report.header = header(args, device, cores, workers)
        report.write(final=False)
        with tempfile.TemporaryDirectory(prefix="gpu-bench-") as folder:
            run(args, device, workers, cores, Path(folder), report, budget)
    except (OutOfTime, KeyboardInterrupt) as stop:
        reason = "--max-seconds" if isinstance(stop, OutOfTime) else "Ctrl-C"
        report.notes.append(f"stopped by {reason} after {budget.elapsed():.0f} s: the rows above are what was measured")
        say(report.notes[-1])
    finally:
        budget.stop()
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report.notes.append(
        f"peak RSS main {main_rss:.0f} MiB, largest decode worker {worker_rss:.0f} MiB (forked from the fork server: "
        f"mostly pages shared with it); total {budget.elapsed():.0f} s"
    )
    report.write(final=True)
    print(report.render(final=True), end="")
    failed = [row for row in report.rows if row.note.startswith("error")]
    return 1 if args.self_check and failed else 0


def run(args, device, workers: int, cores: int, folder: Path, report: Report, budget: Budget) -> None:
    records, png_bytes = make_files(folder, args.images, args.distinct, args.png_size, cores)
    files = [record.file for record in records[: args.old_images]]
    report.header.append(
        f"- {len(records)} synthetic SCIN-like PNGs ({args.png_size[0]}x{args.png_size[1]}, "
        f"{png_bytes / 1e6:.2f} MB each), made in {budget.elapsed():.0f} s"
    )
    rates = measure_matmul(args, device, report)
    decoded: dict[int, float | None] = {}
    for model_id in args.models.split(","):
        if not budget.allows(30):
            report.notes.append(f"{model_id}: not measured (time budget)")
            continue
        say(f"{model_id}: building ({budget.elapsed():.0f} s so far)")
        try:
            embedder, old, gflop = build(model_id, device, args.precision)
        except Exception as exc:
            report.add(Row(model_id, 0, "ours", args.precision, 0, note=f"error building: {one_line(exc)}"))
            continue
        precision = embedder.precision_name
        bound = machine.model_bound(rates.get(precision), gflop)
        report.notes.append(
            f"{model_id.split('/')[-1]}: {gflop:.3g} GFLOP per image (FlopCounterMode); the {precision} matmul "
            f"rate allows {bound or 0:.0f} images/s"
        )
        measure_model(args, device, workers, records, files, report, budget, embedder, old, bound, decoded)
        del embedder, old
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measure_model(args, device, workers, records, files, report, budget, embedder, old, bound, decoded) -> None:
    """The old recipe, our rows for every batch size, the old recipe again: each failure stays in its row."""
    model_id, side, precision = embedder.model_name, embedder.preprocessor.image_size, embedder.precision_name
    report.add(Row(model_id, side, "old", old_recipe.OLD_PRECISION, old_recipe.OLD_BATCH_SIZE))
    old_runs: list[float] = []
    old_seconds = 0.0
    try:
        began = time.perf_counter()
        run_old(report, old, embedder, files, device, old_runs)
        old_seconds = time.perf_counter() - began
    except Exception as exc:
        report.rows[-1].note = f"error: {one_line(exc)}"
        report.write(final=False)
    if side not in decoded:
        try:
            decoded[side] = decode_only(records, embedder.preprocessor, workers)
        except Exception as exc:
            decoded[side] = None
            report.notes.append(f"decode-only at {side} px failed: {one_line(exc)}")
    estimate = 0.0
    for batch_size in args.batch_sizes:
        row = Row(model_id, side, "ours", precision, batch_size, decode=decoded[side], bound=bound)
        if not budget.allows(estimate + old_seconds):
            row.note = "not measured (time budget)"
            report.add(row)
            continue
        began = time.perf_counter()
        say(f"  {model_id.split('/')[-1]} batch {batch_size} ({budget.elapsed():.0f} s so far)")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # this batch size's peak, not the model's so far
        try:
            row.model_rate = model_only(embedder, batch_size, args.model_seconds)
            edge = records[0].file.parent / "edge" if args.edge else None
            row.e2e = end_to_end(records, embedder, batch_size, workers, edge)
        except Exception as exc:  # out of memory, a dead decode worker, ...: keep the row, go on
            row.note = f"error: {one_line(exc)}"
            say(f"  batch {batch_size}: {row.note}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if device.type == "cuda":
            row.memory = torch.cuda.max_memory_allocated(device) / 2**30
        report.add(row)
        estimate = time.perf_counter() - began
    if old_runs and budget.allows(old_seconds):
        try:
            run_old(report, old, embedder, files, device, old_runs)
        except Exception as exc:
            say(f"  old recipe, second run: {one_line(exc)}")


if __name__ == "__main__":
    sys.exit(main())
