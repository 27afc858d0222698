"""Embedding throughput on this machine, as a multiple of the old scripts' recipe measured in the same run:
decode-only, model-only and end-to-end images/s, and model-only as a fraction of the machine's matmul bound.

Synthetic SCIN-sized photos (PNG, 810x1080) are embedded with the real architecture of a known
SigLIP checkpoint (default google/siglip-base-patch16-224), randomly initialised from its config
(same arithmetic and speed as the trained weights; nothing to download). The end-to-end figure is
the real `scinsearch.pipeline.run_embed` — decode workers, batching, the model and the writes to
a temporary Qdrant Edge store — on the same files.

The yardstick (`old_recipe.py`): the old scripts' loop — batch 32, `Image.open(p).convert("RGB")`,
the processor on the list, `get_image_features(...).pooler_output` divided by its norm, fp32 — on the
same files with the same weights on the same device. Old and ours alternate, round after round
(`--rounds`), so a change in the machine's load hits both; each rate is the median of its rounds.

The machine's own limit, measured in the same run: dense `torch.matmul` throughput (fp32, and bf16
where the CPU has it natively) and the model's FLOPs per image (FlopCounterMode): model-only images/s
divided by (matmul FLOP/s / FLOPs per image) says how close the model runs to the hardware.

Ceiling: on a CPU decoding and the model share the cores, so an image costs 1/decode + 1/model
seconds of the whole machine and the ceiling is 1 / (1/decode + 1/model); on a GPU the two run
on different hardware and the ceiling is min(decode, model). Ratio = end-to-end / ceiling.

Each phase runs in a fresh process (clean timings, clean peak RSS). Compile time and warm-up are
paid before the timed part and reported separately.

    python benchmarks/bench_embed.py --model tiny --images 4 --rounds 1   # checks the script, seconds
    python benchmarks/bench_embed.py --quick                 # smoke run (eager, 48 images), a few minutes
    python benchmarks/bench_embed.py --compile off,on        # the committed run (320 images, 2 rounds)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import machine  # noqa: E402
import old_recipe  # noqa: E402

SCIN_IMAGES = 10_408  # images in the SCIN release: what "auto" choices are made for


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
    pngs = [testing.scin_sized_png(seed) for seed in range(min(distinct, images))]
    files = sorted((folder / "dataset" / "images").glob("*.png"))
    for number, file in enumerate(files):
        file.write_bytes(pngs[number % len(pngs)])


def load_records(folder: Path, images: int):
    from scinsearch.dataset import read_release

    data = read_release(folder)
    data.records = data.records[:images]
    if len(data.records) < images:
        raise SystemExit(f"only {len(data.records)} images in the synthetic release")
    return data


def make_preprocessor(args, side: int):
    from PIL import Image

    from scinsearch.embedding import Preprocessor

    bicubic = int(Image.Resampling.BICUBIC)
    return Preprocessor("fixed", side, bicubic, 1 / 255, (0.5,) * 3, (0.5,) * 3, fast=not args.exact)


def build_embedder(args, compile_choice: str):
    import torch

    from scinsearch.embedding import Embedder

    torch.manual_seed(0)
    model, side = machine.build_vision_model(args.model)
    embedder = Embedder.from_model(
        model, make_preprocessor(args, side), args.model, device=args.device, precision=args.precision,
        compile=compile_choice,
    )  # fmt: skip
    started = time.perf_counter()
    embedder.prepare(args.batch_size, SCIN_IMAGES)  # "auto" decides as it would for the whole of SCIN
    warm = {"pixels": torch.randint(0, 256, (args.batch_size, side, side, 3), dtype=torch.uint8)}
    for _ in range(2):
        embedder.embed_batch(warm)
    return embedder, time.perf_counter() - started


def decode_workers(args) -> int:
    """Decode-only uses as many workers as end to end (the first of --workers): no inflated ceiling."""
    from scinsearch.embedding import resolve_device
    from scinsearch.pipeline import default_workers

    first = str(args.workers).split(",")[0]
    return default_workers(resolve_device(args.device).type) if first in ("auto", "None") else int(first)


# --------------------------------------------------------------------------------------- phases


def phase_peak(args) -> dict:
    """The machine's matmul throughput (fp32; bf16 where native) and the model's GFLOP per image."""
    import torch

    from scinsearch.embedding import resolve_device

    device = resolve_device(args.device)
    kinds = ["fp32"]
    if device.type == "cuda":
        kinds.append("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    elif machine.native_bf16():
        kinds.append("bf16")
    rates = {kind: machine.matmul_gflops(str(device), kind, args.matmul_size, args.matmul_seconds) for kind in kinds}
    torch.manual_seed(0)
    model, side = machine.build_vision_model(args.model)
    return {"matmul": rates, "gflop": machine.flops_per_image(model, side)}


def phase_decode(args) -> dict:
    """Decode-only: the pipeline's own decode workers, nothing else running."""
    import types

    import torch

    from scinsearch import decoding, pipeline

    data = load_records(Path(args.data), args.images)
    _, side = machine.build_vision_model(args.model)
    shape = types.SimpleNamespace(preprocessor=make_preprocessor(args, side), device=torch.device("cpu"))
    workers = args.decode_workers or decode_workers(args)
    decoding.DECODE_NICENESS = 0  # alone on the machine: no need to yield
    started = time.perf_counter()
    chunk = min(args.batch_size, pipeline.CHUNK)
    with pipeline.decode_pool(data.records, shape, workers, None, chunk, decoding.DECODE_TIMEOUT) as pool:
        count = sum(len(c.indices) for c in pool.chunks(range(len(data.records))))
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
    from scinsearch import decoding, pipeline
    from scinsearch.settings import Settings
    from scinsearch.store import open_store

    if args.niceness is not None:
        decoding.DECODE_NICENESS = args.niceness
    data = load_records(Path(args.data), args.images)
    embedder, _ = build_embedder(args, args.compile_choice)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        store = open_store(Settings(qdrant_path=Path(folder), collection="bench"))
        try:
            summary = pipeline.run_embed(
                data, embedder, store, batch_size=args.batch_size, workers=args.workers, progress=False,
                warn=lambda message: None,
            )  # fmt: skip
        finally:
            store.close()
    assert summary.embedded == args.images and not summary.failed, summary.lines()
    main_rss, worker_rss = peak_rss_mib()
    workers = pipeline.default_workers(embedder.device.type) if args.workers is None else args.workers
    return {"end_to_end": summary.images_per_second, "workers": workers, "main_rss": main_rss, "worker_rss": worker_rss}


def phase_old(args) -> dict:
    """The old scripts' recipe on the same files and weights (fp32), and how close its vectors are to ours."""
    import torch

    from scinsearch.embedding import Embedder, resolve_device

    device = resolve_device(args.device)
    data = load_records(Path(args.data), args.images)
    files = [record.file for record in data.records]
    torch.manual_seed(0)  # the same weights as ours
    vision, side = machine.build_vision_model(args.model)
    model, processor = old_recipe.old_model(vision, device), old_recipe.old_processor(side)
    rate, vectors = old_recipe.timed_run(model, processor, files, device)
    rss = peak_rss_mib()[0]
    ours = Embedder.from_model(vision, make_preprocessor(args, side), args.model, device=str(device),
                               precision=args.precision, compile="off")  # fmt: skip
    check = min(len(files), 8)
    return {
        "end_to_end": rate,
        "threads": torch.get_num_threads(),
        "main_rss": rss,
        "cosine": old_recipe.agreement(ours.embed_images(files[:check]), vectors[:check]),
    }


PHASES = {
    "peak": phase_peak,
    "decode": phase_decode,
    "model": phase_model,
    "end_to_end": phase_end_to_end,
    "old": phase_old,
}


def run_phase(name: str, args, **extra) -> dict:
    """One phase in a fresh Python process; its result comes back as JSON on the last stdout line."""
    command = [sys.executable, __file__, "--phase", name, "--data", args.data, "--model", args.model]
    command += ["--images", str(args.images), "--batch-size", str(args.batch_size), "--device", args.device]
    command += ["--precision", args.precision, "--workers", str(args.workers)]
    command += ["--matmul-seconds", str(args.matmul_seconds)]
    if args.matmul_size:
        command += ["--matmul-size", str(args.matmul_size)]
    if args.exact:
        command.append("--exact")
    if args.decode_workers:
        command += ["--decode-workers", str(args.decode_workers)]
    for key, value in extra.items():
        if value is not None:
            command += [f"--{key.replace('_', '-')}", str(value)]
    print(f"  {name} {' '.join(f'{k}={v}' for k, v in extra.items() if v is not None)}", file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"phase {name} failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


def ceiling(decode: float, model: float, device: str) -> float:
    if device.startswith("cuda"):
        return min(decode, model)
    return 1 / (1 / decode + 1 / model)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="google/siglip-base-patch16-224", help=f"a known id, or {machine.TINY}")
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
    parser.add_argument("--rounds", type=int, default=2, help="rounds of old recipe / ours, alternating (median)")
    parser.add_argument("--workers", default="auto", help="decode workers end to end: auto, a number, or a list")
    parser.add_argument("--niceness", default=None, help="decode-worker niceness on the CPU (default: the pipeline's)")
    parser.add_argument("--decode-workers", type=int, default=None, help="decode-only workers (default: as e2e)")
    parser.add_argument("--exact", action="store_true", help="exact (processor-identical) preprocessing")
    parser.add_argument("--matmul-size", type=int, default=None, help="matrix side (default 2048 CPU, 8192 GPU)")
    parser.add_argument("--matmul-seconds", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 48 images, one round")
    parser.add_argument("--out", type=Path, help="also write the output here, only if the machine stayed quiet")
    parser.add_argument("--under-load", action="store_true", help="write --out even if not quiet, marked as such")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--compile-choice", default="auto", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.phase:
        sys.path.insert(0, str(HERE.parent / "src"))
        if args.phase == "end_to_end":
            args.workers = None if args.workers in ("auto", "None") else int(args.workers)
        args.niceness = None if args.niceness in (None, "None") else int(args.niceness)
        print(json.dumps(PHASES[args.phase](args)))
        return
    if args.quick:
        args.images, args.rounds = 48, 1
    if args.compile is None:
        args.compile = "off" if args.quick else "auto"  # a smoke run does not wait for a compile
    if args.images < 1 or args.batch_size < 1 or args.rounds < 1:
        raise SystemExit("--images, --batch-size and --rounds must be at least 1")
    args.images = -(-args.images // args.batch_size) * args.batch_size  # whole batches: comparable phases
    sys.path.insert(0, str(HERE.parent / "src"))
    import torch
    from PIL import Image

    watch, output = machine.LoadWatch(), machine.Tee()
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as folder, output:
        args.data = folder
        started = time.perf_counter()
        make_dataset(Path(folder), args.images)
        print(
            f"# scinsearch embedding benchmark\n\n- {machine.describe_cpu()}\n- torch {torch.__version__}, "
            f"Pillow {Image.__version__}, Python {platform.python_version()}\n- {args.images} synthetic SCIN-sized "
            f"PNGs (810x1080, {mean_png_mb(folder):.1f} MB each, made in {time.perf_counter() - started:.0f} s); "
            f"model {args.model} (random weights); preprocessing {'exact' if args.exact else 'fast'}\n",
            flush=True,
        )
        drift = measure(args)
        print(f"\n{watch.stop(drift).describe()}")
    if not machine.write_table(args.out, output.text(), watch, args.under_load):
        sys.exit(1)


def measure(args) -> float:
    """Peak and decode first, model-only before and after, old / ours alternating in between. Returns the
    worst drift of a rate measured before and after."""
    peak = run_phase("peak", args)
    decodes = [run_phase("decode", args)]
    compiles = args.compile.split(",")
    befores = {choice: run_phase("model", args, compile_choice=choice) for choice in compiles}
    configs = [
        (choice, workers, niceness)
        for choice in compiles
        for workers in args.workers.split(",")
        for niceness in (args.niceness.split(",") if args.niceness else [None])
    ]
    olds, ours = [], {config: [] for config in configs}
    for _ in range(args.rounds):
        olds.append(run_phase("old", args))
        for choice, workers, niceness in configs:
            run = run_phase("end_to_end", args, compile_choice=choice, workers=workers, niceness=niceness)
            ours[(choice, workers, niceness)].append(run)
    afters = {choice: run_phase("model", args, compile_choice=choice) for choice in compiles}
    decodes.append(run_phase("decode", args))
    decode = dict(decodes[0], decode=statistics.fmean(d["decode"] for d in decodes))
    models = {
        choice: dict(befores[choice], model=(befores[choice]["model"] + afters[choice]["model"]) / 2)
        for choice in compiles
    }
    old = dict(olds[0], end_to_end=statistics.median(o["end_to_end"] for o in olds))
    rows = [(config, models[config[0]], median_run(runs)) for config, runs in ours.items()]
    print_table(args, peak, decode, old, rows)
    return print_notes(args, peak, decodes, befores, afters, olds, ours, rows)


def median_run(runs: list[dict]) -> dict:
    runs = sorted(runs, key=lambda run: run["end_to_end"])
    return dict(runs[len(runs) // 2], end_to_end=statistics.median(run["end_to_end"] for run in runs))


def mean_png_mb(folder: str) -> float:
    sizes = [f.stat().st_size for f in Path(folder, "dataset", "images").glob("*.png")]
    return sum(sizes) / len(sizes) / 1e6


def print_table(args, peak: dict, decode: dict, old: dict, rows) -> None:
    print(
        "| recipe | device | precision | compiled | threads | batch | images | decode workers (decode-only / e2e) "
        "| decode-only img/s | model-only img/s | of matmul bound | end-to-end img/s | × old recipe | ceiling img/s "
        "| ratio | peak RSS MiB (main / worker) |"
    )
    print("|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    device = rows[0][1]["device"] if rows else args.device
    print(
        f"| old scripts | {device} | {old_recipe.OLD_PRECISION} | no | {old['threads']} | {old_recipe.OLD_BATCH_SIZE} "
        f"| {args.images} | – / in-process | – | – | – | {old['end_to_end']:.2f} | **1.00** | – | – "
        f"| {old['main_rss']:.0f} / – |"
    )
    for (choice, _, niceness), model, e2e in rows:
        top = ceiling(decode["decode"], model["model"], model["device"])
        bound = machine.model_bound(peak["matmul"].get(model["precision"]), peak["gflop"])
        fraction = f"{model['model'] / bound:.2f}" if bound else "–"
        nice = "" if niceness is None else f", nice {niceness}"
        print(
            f"| scinsearch | {model['device']} | {model['precision']} | {'yes' if model['compiled'] else 'no'} "
            f"({choice}) | {model['threads']} | {args.batch_size} | {args.images} "
            f"| {decode['decode_workers']} / {e2e['workers']}{nice} | {decode['decode']:.1f} | {model['model']:.2f} "
            f"| {fraction} | {e2e['end_to_end']:.2f} | **{e2e['end_to_end'] / old['end_to_end']:.2f}** | {top:.2f} "
            f"| **{e2e['end_to_end'] / top:.2f}** | {e2e['main_rss']:.0f} / {e2e['worker_rss']:.0f} |"
        )


def print_notes(args, peak, decodes, befores, afters, olds, ours, rows) -> float:
    rates = ", ".join(f"{kind} {machine.flops_text(rate)}" for kind, rate in peak["matmul"].items())
    bounds = ", ".join(
        f"{kind} {machine.model_bound(rate, peak['gflop']):.2f} img/s" for kind, rate in peak["matmul"].items()
    )
    print(
        f"\nmatmul (torch.matmul, square, best of repeated runs): {rates}; the model: {peak['gflop']:.3g} GFLOP "
        f"per image (FlopCounterMode), so the matmul bound is {bounds}"
    )
    print(
        f"old recipe and ours alternate: {args.rounds} round(s); old recipe "
        + " / ".join(f"{o['end_to_end']:.2f}" for o in olds)
        + " img/s; ours "
        + "; ".join(
            f"{choice}: " + " / ".join(f"{r['end_to_end']:.2f}" for r in runs) for (choice, _, _), runs in ours.items()
        )
        + f" img/s; smallest cosine between the old recipe's vectors and ours: {min(o['cosine'] for o in olds):.4f}"
    )
    setups = ", ".join(f"{m['setup_s']:.0f} s ({'compiled' if m['compiled'] else 'eager'})" for _, m, _ in rows)
    print(f"model build + compile + warm-up (not timed above): {setups}")
    for note in sorted({model["note"] for _, model, _ in rows if model["note"]}):
        print(f"note: {note}")
    spreads = [tuple(d["decode"] for d in decodes)] + [(befores[c]["model"], afters[c]["model"]) for c in befores]
    worst = max(abs(a - b) / max(a, b) for a, b in spreads)
    print(
        f"repeatability: decode-only {spreads[0][0]:.1f} / {spreads[0][1]:.1f}, model-only "
        + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in spreads[1:])
        + " img/s (first / last measurement)"
    )
    if worst > 0.1:
        print(
            f"WARNING: a rate changed by {worst:.0%} during the run: the machine was not quiet, so the ratios "
            "are unreliable; run again on a quiet machine"
        )
    return worst


if __name__ == "__main__":
    main()
