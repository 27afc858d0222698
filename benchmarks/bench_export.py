"""Moving a collection: `scinsearch export` of 10,000 points (768-d) to each target, seconds and peak memory.

The source is an embedded Qdrant Edge collection of random unit vectors with realistic SCIN payloads
(`bench_search.fill_store`, the same data the search benchmark uses). Each target runs in a fresh
process, so its peak RSS is its own: the process's peak (ru_maxrss) after the export, and how much it
grew over the peak before the export began (the store opened, the libraries imported). Targets:

- edge: another Qdrant Edge folder (`--to-edge-path`)
- qdrant-client folder: qdrant-client's local mode on disk (`--to-qdrant-path`; SQLite, one commit per point)
- memory: qdrant-client `:memory:`, the code path a server URL takes (`--to-url`), without the network
- parquet: a Parquet file (`--to-parquet`)
- import parquet -> edge: the file back into a new Edge folder (`scinsearch import`)

    python benchmarks/bench_export.py --quick       # smoke run: 300 points of 32-d
    python benchmarks/bench_export.py               # 10,000 points of 768-d
    python benchmarks/bench_export.py --out benchmarks/results/export-cpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = ("edge", "qdrant-client folder", "memory", "parquet", "import parquet -> edge")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(target: str, folder: Path) -> dict:
    """One export in this (fresh) process; returns its time and memory."""
    from scinsearch.settings import Settings
    from scinsearch.store import open_store
    from scinsearch.transfer import copy_collection, export_parquet, import_parquet

    source_settings = Settings(qdrant_path=folder / "source", collection="bench")
    targets = {
        "edge": Settings(qdrant_path=folder / "edge", collection="bench"),
        "qdrant-client folder": Settings(qdrant_client_path=folder / "client", collection="bench"),
        "memory": Settings(qdrant_location=":memory:", collection="bench"),
        "import parquet -> edge": Settings(qdrant_path=folder / "imported", collection="bench"),
    }
    parquet = folder / "bench.parquet"
    if target == "import parquet -> edge":
        store = open_store(targets[target])
        before = peak_rss_mib()
        started = time.perf_counter()
        summary = import_parquet(parquet, store, progress=False)
    else:
        source = open_store(source_settings)
        store = open_store(targets[target]) if target != "parquet" else None
        before = peak_rss_mib()
        started = time.perf_counter()
        if target == "parquet":
            summary = export_parquet(source, parquet, progress=False)
        else:
            summary = copy_collection(source, store, progress=False)
        source.close()
    seconds = time.perf_counter() - started
    if store is not None:
        store.close()
    size = parquet.stat().st_size if target == "parquet" else None
    return {"seconds": seconds, "points": summary.copied, "peak": peak_rss_mib(), "before": before, "bytes": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 points of 32-d")
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.folder)))
        return 0
    if args.quick:
        args.points, args.dim = 300, 32

    from bench_search import fill_store, machine

    from scinsearch.settings import Settings

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as name:
        folder = Path(name)
        fill_store(Settings(qdrant_path=folder / "source", collection="bench"), "bench-model", args.dim, args.points)
        for target in TARGETS:  # in this order: the import reads the Parquet file the export wrote
            done = subprocess.run(
                [sys.executable, __file__, "--child", target, "--folder", str(folder)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            result = json.loads(done.stdout.strip().splitlines()[-1])
            size = f"{result['bytes'] / 2**20:.1f} MiB file" if result["bytes"] else ""
            rows.append(
                f"| {target} | {result['points']:,} | {result['seconds']:.2f} | "
                f"{result['points'] / max(result['seconds'], 1e-9):,.0f} | {result['peak']:.0f} | "
                f"{max(0.0, result['peak'] - result['before']):.0f} | {size} |"
            )
    lines = [
        f"## Export{' (QUICK SMOKE RUN: not for comparison)' if args.quick else ''}",
        "",
        f"- machine: {machine()}; Python {platform.python_version()}",
        f"- source: embedded Qdrant Edge, {args.points:,} points ({args.dim}-d random unit vectors, SCIN payloads)",
        "- each target in a fresh process; pages of 256 points (1,024 for Parquet); verification included",
        "",
        "| target | points | seconds | points/s | peak RSS MiB | growth during export MiB | note |",
        "|---|---|---|---|---|---|---|",
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
