"""Query latency on this machine: the whole `Searcher` path for photo and text queries, p50/p95,
beside the model-only forward times and the store-only search time measured in the same run.

The model is the real google/siglip-base-patch16-224 architecture (both towers; transformers'
`SiglipConfig()` defaults), randomly initialised (same arithmetic and speed as the trained weights,
nothing to download), saved with `save_pretrained` next to a SentencePiece tokenizer and a 224-pixel
image processor, and loaded through `Embedder` like a real checkpoint. The store is a temporary Qdrant
Edge folder holding 10,000 random unit vectors with realistic SCIN payloads (the size of SCIN).

A photo query is a SCIN-sized PNG (810x1080) given as bytes, as the kiosk service receives it:
decode + EXIF + resize + vision tower + Qdrant + per-case grouping + suggestions. A text query:
tokenise (64 tokens) + text tower + the same search. Warm-up queries run before the timed ones.

    python benchmarks/bench_search.py --quick      # smoke run: 300 points, 3 queries of each kind
    python benchmarks/bench_search.py              # 10,000 points, 50 queries of each kind (CPU)
    python benchmarks/bench_search.py --out benchmarks/results/search-cpu.md
"""

from __future__ import annotations

import argparse
import copy
import logging
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (describe_cpu)

TEXTS = [
    "itchy red ring on the arm",
    "dark raised bumpy patch on the leg",
    "flaky rough skin on the scalp",
    "small fluid filled blisters on the hand",
    "painful swollen red area",
    "white scaly plaques on elbows",
]


def build_base_siglip(folder: Path) -> Path:
    """siglip-base-patch16-224 with random weights and a real processor, saved like a checkpoint."""
    import torch
    from transformers import SiglipConfig, SiglipModel, SiglipProcessor, SiglipTokenizer
    from transformers.models.siglip import SiglipImageProcessorPil

    from scinsearch.testing import train_sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(folder / "spiece.model")
    tokenizer = SiglipTokenizer(
        vocab_file=str(folder / "spiece.model"), model_max_length=64, model_input_names=["input_ids"]
    )
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": 224, "width": 224}), tokenizer=tokenizer
    )
    config = SiglipConfig(
        text_config=dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    )
    torch.manual_seed(0)
    SiglipModel(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def payload_templates() -> list[dict]:
    """Payloads exactly as `scinsearch embed` stores them, from a small synthetic release."""
    from scinsearch import testing
    from scinsearch.dataset import read_release

    with tempfile.TemporaryDirectory(prefix="bench-search-scin-") as folder:
        root = testing.write_release(Path(folder) / "scin", cases=60, image_size=(8, 8), broken_files=False)
        return [record.payload for record in read_release(root).records]


def scin_payload(template: dict, image_id: str, case_id: str) -> dict:
    """A copy of a stored payload that names another image of another case."""
    from scinsearch.cells import split_for_case

    payload = copy.deepcopy(template)
    payload.update(
        image_id=image_id,
        image_path=f"dataset/images/{image_id}.png",
        case_id=case_id,
        case_ids=[case_id],
        split=split_for_case(case_id),
    )
    return payload


def fill_store(settings, model_name: str, dim: int, points: int, seed: int = 0) -> None:
    """`points` random unit vectors with realistic payloads, two images per case on average."""
    from scinsearch.schema import point_id_for
    from scinsearch.store import CollectionInfo, StoredPoint, open_store

    rng = np.random.default_rng(seed)
    ids = random.Random(seed)
    templates = payload_templates()
    store = open_store(settings)
    try:
        store.create(CollectionInfo(model_name, dim), recreate=True)
        case_id = ""
        batch = []
        for number in range(points):
            if number % 2 == 0 or ids.random() < 0.2:
                case_id = str(ids.randrange(-(2**63), 2**63))
            image_id = str(ids.randrange(-(2**63), 2**63))
            payload = scin_payload(templates[number % len(templates)], image_id, case_id)
            vector = rng.normal(size=dim).astype(np.float32)
            batch.append(StoredPoint(point_id_for(image_id), payload, vector / np.linalg.norm(vector)))
            if len(batch) == 256:
                store.upsert(batch)
                batch = []
        store.upsert(batch)
        store.finish_writes()
    finally:
        store.close()


def timed(function, runs: int, warmup: int) -> list[float]:
    """Milliseconds per call, after `warmup` untimed calls."""
    for index in range(warmup):
        function(index)
    times = []
    for index in range(runs):
        started = time.perf_counter()
        function(index)
        times.append((time.perf_counter() - started) * 1000)
    return times


def row(name: str, what: str, times: list[float]) -> str:
    p50, p95 = np.percentile(times, [50, 95])
    return f"| {name} | {what} | {len(times)} | {p50:.1f} | {p95:.1f} | {statistics.fmean(times):.1f} |"


def measure(searcher, photos: list[bytes], runs: int, warmup: int) -> list[str]:
    """Every row of the table, from one loaded model and one open store."""
    import torch

    from scinsearch.embedding import collate

    embedder = searcher.embedder
    pixels = [collate([embedder.preprocessor.load(photo)]) for photo in photos]
    token_ids = [embedder.tokenize([text]).to(embedder.device) for text in TEXTS]
    query_vector = embedder.embed_texts([TEXTS[0]])[0]

    def text_tower(i):
        with torch.inference_mode():
            embedder.model.get_text_features(input_ids=token_ids[i % len(token_ids)])

    return [
        row(
            "photo query",
            "`Searcher.search_image(png_bytes)`: decode + preprocess + vision tower + Qdrant + grouping",
            timed(lambda i: searcher.search_image(photos[i % len(photos)]), runs, warmup),
        ),
        row(
            "photo: model only",
            "vision tower forward, one preprocessed image",
            timed(lambda i: embedder.embed_batch(pixels[i % len(pixels)]), runs, warmup),
        ),
        row(
            "photo: decode only",
            "PNG 810x1080 -> RGB -> 224x224 (`Preprocessor.load`)",
            timed(lambda i: embedder.preprocessor.load(photos[i % len(photos)]), runs, warmup),
        ),
        row(
            "text query",
            "`Searcher.search_text(text)`: tokenise + text tower + Qdrant + grouping",
            timed(lambda i: searcher.search_text(TEXTS[i % len(TEXTS)]), runs, warmup),
        ),
        row("text: model only", "text tower forward, 64 tokens", timed(text_tower, runs, warmup)),
        row(
            "search only",
            "`Searcher.search_vector`: Qdrant query + per-case grouping + suggestions",
            timed(
                lambda i: searcher.search_vector(query_vector, {"kind": "vector"}, None, 5, None, True), runs, warmup
            ),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 points, 3 queries of each kind")
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50, help="timed queries of each kind")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.queries, args.warmup = 300, 3, 1
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import torch
    from transformers.utils import logging as transformers_logging

    from scinsearch import testing
    from scinsearch.embedding import Embedder
    from scinsearch.search import Searcher
    from scinsearch.settings import Settings

    transformers_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        started = time.perf_counter()
        model_dir = build_base_siglip(Path(folder) / "siglip-base-patch16-224-random")
        embedder = Embedder(str(model_dir), device="cpu", precision=args.precision)
        settings = Settings(qdrant_path=Path(folder) / "qdrant", collection="bench", model=str(model_dir))
        fill_store(settings, embedder.model_name, embedder.dim, args.points)
        setup_seconds = time.perf_counter() - started
        photos = [testing.scin_sized_png(seed) for seed in range(4)]
        with Searcher(settings, embedder=embedder) as searcher:
            points = searcher.store.count()
            rows = measure(searcher, photos, args.queries, args.warmup)
    lines = [
        f"## Search latency{' (QUICK SMOKE RUN: not for comparison)' if args.quick else ''}",
        "",
        f"- machine: {machine.describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"Python {platform.python_version()}",
        f"- model: google/siglip-base-patch16-224 architecture, random weights, {embedder.dim}-d, "
        f"on {embedder.device} in {embedder.precision_name}",
        f"- store: embedded Qdrant Edge, {points:,} points ({embedder.dim}-d random unit vectors, SCIN payloads), "
        f"exact search; top_k 5, one result per case",
        f"- {args.queries} timed queries of each kind after {args.warmup} warm-up; setup {setup_seconds:.0f} s",
        "",
        "| measurement | what is timed | n | p50 ms | p95 ms | mean ms |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
