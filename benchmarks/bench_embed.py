"""Embedding throughput on this machine: decode-only, model-only and end-to-end images/s, in one run.

Synthetic SCIN-sized photos (PNG, 810x1080) are embedded with the real architecture of a known
SigLIP checkpoint (default google/siglip-base-patch16-224), randomly initialised from its config
(same arithmetic and speed as the trained weights; nothing to download). The end-to-end figure is
the real `scinsearch.pipeline.run_embed` — decode workers, batching, the model and the writes to
a temporary Qdrant Edge store — on the same files.

Ceiling: on a CPU decoding and the model share the cores, so an image costs 1/decode + 1/model
seconds of the whole machine and the ceiling is 1 / (1/decode + 1/model); on a GPU the two run
on different hardware and the ceiling is min(decode, model). Ratio = end-to-end / ceiling.

Each phase runs in a fresh process (clean timings, clean peak RSS). Compile time and warm-up are
paid before the timed part and reported separately.

    python benchmarks/bench_embed.py --quick                 # smoke run (eager), a minute or two
    python benchmarks/bench_embed.py                         # 320 images: ~5 min (bf16 Zen 5), ~10 (fp32 Zen 3)
    python benchmarks/bench_embed.py --compile off,on        # compare eager and compiled in one run
    python benchmarks/bench_embed.py --device cuda --batch-size 256 --images 4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCIN_IMAGES = 10_408  # images in the SCIN release: what "auto" choices are made for


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores"


def peak_rss_mib() -> tuple[float, float]:
    """(this process, its largest finished child) peak resident memory in MiB (Linux reports KiB)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale,
    )


# ----------------------------------------------------------------------------------------- data


def make_dataset(folder: Path, images: int, distinct: int = 8) -> None:
    """A SCIN-layout release whose image files are SCIN-sized PNGs (a few distinct ones, copied)."""
    from scinsearch import testing

    cases = images // 2 + 2  # write_release gives cases 1, 2 or 3 images each (2 on average)
    testing.write_release(folder, cases=cases, image_size=(8, 8), broken_files=False)
    pngs = [testing.scin_sized_png(seed) for seed in range(distinct)]
    files = sorted((folder / "dataset" / "images").glob("*.png"))
    for number, file in enumerate(files):
        file.write_bytes(pngs[number % distinct])


def load_records(folder: Path, images: int):
    from scinsearch.dataset import read_release

    data = read_release(folder)
    data.records = data.records[:images]
    if len(data.records) < images:
        raise SystemExit(f"only {len(data.records)} images in the synthetic release")
    return data


def build_embedder(args, compile_choice: str):
    import torch
    from PIL import Image

    from scinsearch.embedding import Embedder, Preprocessor
    from scinsearch.models import KNOWN_MODELS, random_vision_model

    info = KNOWN_MODELS[args.model]
    torch.manual_seed(0)
    model = random_vision_model(args.model)
    preprocessor = Preprocessor(
        "fixed", info.image_size, int(Image.Resampling.BICUBIC), 1 / 255, (0.5,) * 3, (0.5,) * 3, fast=not args.exact
    )
    embedder = Embedder.from_model(
        model, preprocessor, args.model, device=args.device, precision=args.precision, compile=compile_choice
    )
    started = time.perf_counter()
    embedder.prepare(args.batch_size, SCIN_IMAGES)  # "auto" decides as it would for the whole of SCIN
    side = info.image_size
    warm = {"pixels": torch.randint(0, 256, (args.batch_size, side, side, 3), dtype=torch.uint8)}
    for _ in range(2):
        embedder.embed_batch(warm)
    return embedder, time.perf_counter() - started


# --------------------------------------------------------------------------------------- phases


def phase_decode(args) -> dict:
    """Decode-only: the pipeline's own decode workers, one per core, nothing else running."""
    import types

    import torch
    from PIL import Image

    from scinsearch import pipeline
    from scinsearch.embedding import Preprocessor
    from scinsearch.models import KNOWN_MODELS

    data = load_records(Path(args.data), args.images)
    info = KNOWN_MODELS[args.model]
    preprocessor = Preprocessor(
        "fixed", info.image_size, int(Image.Resampling.BICUBIC), 1 / 255, (0.5,) * 3, (0.5,) * 3, fast=not args.exact
    )
    shape = types.SimpleNamespace(preprocessor=preprocessor, device=torch.device("cpu"))  # all make_loader reads
    workers = args.decode_workers or os.cpu_count() or 1
    pipeline.DECODE_NICENESS = 0  # alone on the machine: no need to yield
    started = time.perf_counter()
    count = sum(
        len(chunk.indices)
        for chunk in pipeline.make_loader(
            data.records, shape, workers, None, chunk=min(args.batch_size, pipeline.CHUNK)
        )
    )
    seconds = time.perf_counter() - started
    assert count == args.images, count
    main_rss, child_rss = peak_rss_mib()
    return {"decode": count / seconds, "decode_workers": workers, "decode_rss": max(main_rss, child_rss)}


def phase_model(args) -> dict:
    """Model-only: embed_batch on ready uint8 batches (normalisation, the tower, L2, copy back)."""
    import torch

    embedder, setup = build_embedder(args, args.compile_choice)
    side = embedder.preprocessor.image_size
    batches = [{"pixels": torch.randint(0, 256, (args.batch_size, side, side, 3), dtype=torch.uint8)} for _ in range(2)]
    count, started = 0, time.perf_counter()
    while count < args.images:
        embedder.embed_batch(batches[count // args.batch_size % 2])
        count += args.batch_size
    seconds = time.perf_counter() - started
    return {
        "model": count / seconds,
        "setup_s": setup,
        "compiled": embedder.compiled,
        "precision": embedder.precision_name,
        "device": str(embedder.device),
        "threads": torch.get_num_threads(),
        "model_rss": peak_rss_mib()[0],
        "note": embedder.compile_note,
    }


def phase_end_to_end(args) -> dict:
    """End-to-end: scinsearch.pipeline.run_embed into a temporary Qdrant Edge store."""
    from scinsearch import pipeline
    from scinsearch.settings import Settings
    from scinsearch.store import open_store

    if args.niceness is not None:
        pipeline.DECODE_NICENESS = args.niceness
    data = load_records(Path(args.data), args.images)
    embedder, _ = build_embedder(args, args.compile_choice)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        store = open_store(Settings(qdrant_path=Path(folder), collection="bench"))
        try:
            summary = pipeline.run_embed(
                data,
                embedder,
                store,
                batch_size=args.batch_size,
                workers=args.workers,
                progress=False,
                warn=lambda message: None,
            )
        finally:
            store.close()
    assert summary.embedded == args.images and not summary.failed, summary.lines()
    main_rss, worker_rss = peak_rss_mib()
    workers = pipeline.default_workers(embedder.device.type) if args.workers is None else args.workers
    return {"end_to_end": summary.images_per_second, "workers": workers, "main_rss": main_rss, "worker_rss": worker_rss}


PHASES = {"decode": phase_decode, "model": phase_model, "end_to_end": phase_end_to_end}


def run_phase(name: str, args, **extra) -> dict:
    """One phase in a fresh Python process; its result comes back as JSON on the last stdout line."""
    command = [
        sys.executable,
        __file__,
        "--phase",
        name,
        "--data",
        args.data,
        "--model",
        args.model,
        "--images",
        str(args.images),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--precision",
        args.precision,
    ]
    if args.exact:
        command.append("--exact")
    if args.decode_workers:
        command += ["--decode-workers", str(args.decode_workers)]
    for key, value in extra.items():
        if value is not None:
            command += [f"--{key.replace('_', '-')}", str(value)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"phase {name} failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


def ceiling(decode: float, model: float, device: str) -> float:
    if device.startswith("cuda"):
        return min(decode, model)
    return 1 / (1 / decode + 1 / model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="google/siglip-base-patch16-224")
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--compile",
        default=None,
        help="auto (the pipeline's choice for all of SCIN), on, off, or a list to compare: off,on "
        "(default auto; off with --quick)",
    )
    parser.add_argument("--workers", default="auto", help="decode workers end to end: auto, a number, or a list")
    parser.add_argument("--niceness", default=None, help="decode-worker niceness on the CPU (default: the pipeline's)")
    parser.add_argument("--decode-workers", type=int, default=None, help="decode-only workers (default: all cores)")
    parser.add_argument("--exact", action="store_true", help="exact (processor-identical) preprocessing")
    parser.add_argument("--repeat", type=int, default=1, help="end-to-end runs per configuration (median)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 48 images")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--compile-choice", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        if args.workers == "auto":
            args.workers = None
        elif args.workers is not None:
            args.workers = int(args.workers)
        args.niceness = None if args.niceness in (None, "None") else int(args.niceness)
        print(json.dumps(PHASES[args.phase](args)))
        return
    if args.quick:
        args.images = 48
    if args.compile is None:
        args.compile = "off" if args.quick else "auto"  # a smoke run does not wait for a compile
    args.images = -(-args.images // args.batch_size) * args.batch_size  # whole batches: comparable phases
    import torch
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as folder:
        args.data = folder
        started = time.perf_counter()
        make_dataset(Path(folder), args.images)
        print(
            f"# scinsearch embedding benchmark\n\nmachine: {machine()}; torch {torch.__version__}, "
            f"Pillow {Image.__version__}, Python {platform.python_version()}; "
            f"{args.images} synthetic SCIN-sized PNGs (810x1080, {mean_png_mb(folder):.1f} MB each, "
            f"made in {time.perf_counter() - started:.0f} s); model {args.model} (random weights); "
            f"preprocessing {'exact' if args.exact else 'fast'}\n",
            flush=True,
        )
        decodes = [run_phase("decode", args)]
        rows, models = [], []
        for compile_choice in args.compile.split(","):
            # model-only before and after the end-to-end runs: the ceiling uses their mean, and a
            # difference between them shows that the machine's load changed during the run
            before = run_phase("model", args, compile_choice=compile_choice)
            e2e_runs = []
            for workers in args.workers.split(","):
                for niceness in args.niceness.split(",") if args.niceness else [None]:
                    runs = [
                        run_phase("end_to_end", args, compile_choice=compile_choice, workers=workers, niceness=niceness)
                        for _ in range(args.repeat)
                    ]
                    runs.sort(key=lambda r: r["end_to_end"])
                    e2e_runs.append((niceness, runs[len(runs) // 2]))
            after = run_phase("model", args, compile_choice=compile_choice)
            model = dict(before, model=(before["model"] + after["model"]) / 2, spread=(before["model"], after["model"]))
            models.append(model)
            rows += [(compile_choice, niceness, model, e2e) for niceness, e2e in e2e_runs]
        decodes.append(run_phase("decode", args))
        decode = dict(
            decodes[0], decode=sum(d["decode"] for d in decodes) / 2, spread=tuple(d["decode"] for d in decodes)
        )
        print_table(args, decode, rows)
        steady = [decode["spread"]] + [m["spread"] for m in models]
        worst = max(abs(a - b) / max(a, b) for a, b in steady)
        print(
            f"\nrepeatability: decode-only {decode['spread'][0]:.1f} / {decode['spread'][1]:.1f}, model-only "
            + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in (m["spread"] for m in models))
            + " img/s (first / last measurement)"
            + (
                ""
                if worst <= 0.1
                else f"\nWARNING: a rate changed by {worst:.0%} during the run: the machine was "
                "not quiet, so the ratios are unreliable; run again on a quiet machine"
            )
        )


def mean_png_mb(folder: str) -> float:
    sizes = [f.stat().st_size for f in Path(folder, "dataset", "images").glob("*.png")]
    return sum(sizes) / len(sizes) / 1e6


def print_table(args, decode: dict, rows) -> None:
    print(
        "| device | precision | compiled | threads | batch | images | decode workers (decode-only / e2e) "
        "| decode-only img/s | model-only img/s | end-to-end img/s | ceiling img/s | ratio "
        "| peak RSS MiB (main / worker) |"
    )
    print("|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for compile_choice, niceness, model, e2e in rows:
        top = ceiling(decode["decode"], model["model"], model["device"])
        nice = "" if niceness is None else f", nice {niceness}"
        print(
            f"| {model['device']} | {model['precision']} | {'yes' if model['compiled'] else 'no'} ({compile_choice}) "
            f"| {model['threads']} | {args.batch_size} | {args.images} "
            f"| {decode['decode_workers']} / {e2e['workers']}{nice} "
            f"| {decode['decode']:.1f} | {model['model']:.1f} | {e2e['end_to_end']:.1f} | {top:.1f} "
            f"| **{e2e['end_to_end'] / top:.2f}** | {e2e['main_rss']:.0f} / {e2e['worker_rss']:.0f} |"
        )
    notes = sorted({model["note"] for _, _, model, _ in rows if model["note"]})
    setups = ", ".join(f"{m['setup_s']:.0f} s ({'compiled' if m['compiled'] else 'eager'})" for _, _, m, _ in rows)
    print(f"\nmodel build + compile + warm-up (not timed above): {setups}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
