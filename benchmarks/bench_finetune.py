"""What fine-tuning costs: the adapter on stored vectors (CPU), and LoRA images/s (a GPU).

Adapter (default): 10,000 planted 768-d vectors (`scinsearch.testing.planted`: SCIN-like payloads, a subtle
condition direction under strong nuisance) in a temporary Qdrant Edge store, then the whole path a user
runs: read the collection, train (train split only, early stopping), save, and `finetune apply` into a new
collection. Prints a markdown table: seconds per step, epochs, peak RSS, torch threads, CPU flags.

LoRA (`--lora`): the real google/siglip-base-patch16-224 architecture with random weights (same arithmetic
and speed as the trained model, nothing to download) on a synthetic release of SCIN-sized PNGs, through
the embed pipeline's decoding. Timed separately: the no-grad pass (prototypes, frozen validation) and
one training epoch (decode + forward + backward + step). Peak GPU memory on CUDA.

    python benchmarks/bench_finetune.py --quick                    # smoke run: 600 vectors, 64-d
    python benchmarks/bench_finetune.py                            # adapter, 10,000 x 768-d (CPU)
    python benchmarks/bench_finetune.py --lora --device cuda       # LoRA images/s on a GPU (512 images)
    python benchmarks/bench_finetune.py --lora --quick             # LoRA smoke run: tiny model, CPU
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
        present = set(line.split(":", 1)[1].split())
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(f for f in FLAGS if f in present) or "none of " + "/".join(FLAGS)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_adapter(points: int, dim: int, rank: int) -> list[str]:
    import torch

    from scinsearch.finetune.adapter import save_adapter, train_adapter
    from scinsearch.finetune.apply import apply_adapter
    from scinsearch.finetune.config import AdapterConfig
    from scinsearch.settings import Settings
    from scinsearch.store import CollectionInfo, open_store
    from scinsearch.testing.planted import PlantedSpace, planted_points
    from scinsearch.vectors.adapter import Adapter
    from scinsearch.vectors.neighbours import load_table

    space = PlantedSpace(dim=dim, conditions=8, nuisance_directions=min(16, dim - 12))
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as folder:
        settings = Settings(qdrant_path=Path(folder) / "qdrant", collection="bench")
        vectors = planted_points(space, cases=round(points / 2), seed=1)[:points]  # 1-3 photos a case: 2 on average
        store = open_store(settings)
        store.create(CollectionInfo("planted-model", dim))
        for start in range(0, len(vectors), 512):
            store.upsert(vectors[start : start + 512])
        store.finish_writes()
        store.close()
        timings = {}
        started = time.perf_counter()
        store = open_store(settings)
        table = load_table(store)
        store.close()
        timings["read the collection"] = time.perf_counter() - started
        started = time.perf_counter()
        trained = train_adapter(table, model="planted-model", collection="bench", config=AdapterConfig(rank=rank))
        timings["train (select, fit, validate)"] = time.perf_counter() - started
        started = time.perf_counter()
        adapter_dir = save_adapter(trained, Path(folder) / "adapter")
        timings["save"] = time.perf_counter() - started
        started = time.perf_counter()
        apply_adapter(settings, Adapter.load(adapter_dir), "bench_adapted")
        timings["apply to a new collection"] = time.perf_counter() - started
    record = trained.record
    validation = record["validation"]
    lines = [
        f"Adapter: {len(table)} stored {dim}-d vectors ({record['data']['fit_images']} training images, "
        f"{record['data']['validation_images']} validation), rank {rank}; {machine()}; CPU flags: {cpu_flags()}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "",
        "| step | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in timings.items()]
    lines += [
        f"| **total** | **{sum(timings.values()):.2f}** |",
        "",
        "| epochs run | best epoch | peak RSS MiB | validation kNN top-1 frozen | adapted |",
        "|---:|---:|---:|---:|---:|",
        f"| {record['training']['epochs_run']} | {record['training']['best_epoch']} | {peak_rss_mib():.0f} | "
        f"{validation['frozen']['knn_majority']['top1_accuracy']:.3f} | "
        f"{validation['adapted']['knn_majority']['top1_accuracy']:.3f} |",
    ]
    return lines


def build_model(folder: Path, quick: bool) -> Path:
    """siglip-base-patch16-224 with random weights (or, --quick, the tiny test model), saved like a checkpoint."""
    from scinsearch import testing

    if quick:
        return testing.build_tiny_siglip(folder / "tiny")
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_search import build_base_siglip

    return build_base_siglip(folder / "siglip-base-random")


def bench_lora(images: int, device: str, batch_size: int, workers: int | None, quick: bool) -> list[str]:
    import numpy as np
    import torch

    from scinsearch import testing
    from scinsearch.dataset import read_release
    from scinsearch.finetune import lora
    from scinsearch.finetune.config import LoraConfig
    from scinsearch.finetune.data import choose_examples, table_from_payloads
    from scinsearch.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-lora-") as folder:
        size = (48, 64) if quick else (810, 1080)
        release = testing.write_release(
            Path(folder) / "scin", cases=max(images // 2, 12), image_size=size, broken_files=False
        )
        dataset = read_release(release)
        model = build_model(Path(folder), quick)
        settings = Settings(model=str(model), device=device, precision="fp32")
        config = LoraConfig(batch_size=batch_size, epochs=1)
        table = table_from_payloads([r.image_id for r in dataset.records], [r.payload for r in dataset.records])
        training = choose_examples(table, seed=0)
        run = lora.open_run(training, dataset, settings, Path(folder) / "out", config, False, workers, lambda _: None)
        cuda = run.embedder.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        lora.start_from_frozen(run, config, lambda _: None)
        frozen_seconds = time.perf_counter() - started
        started = time.perf_counter()
        lora.train_epoch(run, config, Path(folder) / "out", None, 0, lambda _: None)
        if cuda:
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - started
        passed = len(training.fit) + len(training.validation)
        memory = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if cuda else "–"
        model_name = "tiny test model" if quick else "siglip-base-224 (random)"
        return [
            f"LoRA rank {config.rank}, batch {batch_size}, {model_name} "
            f"on {run.embedder.describe()}; images {size[0]}x{size[1]} PNG; {machine()}; CPU flags: {cpu_flags()}",
            "",
            "| measurement | images | seconds | images/s | peak GPU GiB | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|",
            f"| no-grad pass (decode + forward) | {passed} | {frozen_seconds:.1f} | {passed / frozen_seconds:.1f} | "
            f"{memory} | {peak_rss_mib():.0f} |",
            f"| training epoch (decode + forward + backward + step) | {len(training.fit)} | {train_seconds:.1f} | "
            f"{len(training.fit) / train_seconds:.1f} | {memory} | {peak_rss_mib():.0f} |",
            "",
            f"final training loss {np.mean(run.state.running):.3f}",
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000, help="Adapter: stored vectors.")
    parser.add_argument("--dim", type=int, default=768, help="Adapter: vector size.")
    parser.add_argument("--rank", type=int, default=64, help="Adapter rank.")
    parser.add_argument("--lora", action="store_true", help="Measure LoRA instead of the adapter.")
    parser.add_argument("--images", type=int, default=512, help="LoRA: images in the synthetic release.")
    parser.add_argument("--device", default="auto", help="LoRA: auto, cpu, cuda.")
    parser.add_argument("--batch-size", type=int, default=32, help="LoRA batch size.")
    parser.add_argument("--workers", type=int, default=None, help="LoRA: decode workers (default as embed).")
    parser.add_argument("--quick", action="store_true", help="Smoke run: small sizes (adapter) or the tiny model.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the table to this file.")
    args = parser.parse_args()
    if args.lora:
        lines = bench_lora(
            24 if args.quick else args.images,
            args.device,
            8 if args.quick else args.batch_size,
            0 if args.quick and args.workers is None else args.workers,
            args.quick,
        )
    else:
        lines = bench_adapter(
            600 if args.quick else args.points, 64 if args.quick else args.dim, 16 if args.quick else args.rank
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
