"""How the store's cost grows with the collection: build time, memory, disk, the kiosk query's latency
and its recall, from SCIN's 10 k images up, for each store setting.

Data: `scinsearch.testing.space.ClusteredSpace` (768-d, a few hundred clusters of cases of 1-3 images;
the pairwise cosine spread is printed) with payloads exactly as `embed` stores them (from a synthetic
release, one per case). The query is the kiosk's: `Searcher.nearest`, top 10 with one result per case
(over-fetch and group, `rules.one_per_case`), without a filter and with a skin-type filter (Fitzpatrick
FST5 or FST6), for queries that are new cases of known clusters. Recall@10 is the overlap with the
same query answered exactly by numpy over the generated vectors (filter and grouping applied the same
way), an independent reference.

Settings: `exact` (every vector), `hnsw` (scinsearch's default past 20,000 points: m 16, ef_construct
100, hnsw_ef 128), `hnsw-ef512` (the same graph searched with hnsw_ef 512: the tuned setting),
`int8` (the graph over int8 copies, the best 2x candidates rescored on the originals). On Qdrant Edge
`exact`, `hnsw` and `hnsw-ef512` share one build (the exact row's build time is the upsert; the HNSW
rows add `optimize()`); qdrant-client's local mode only searches exactly (it ignores the others); a
server (`--url`) gets `hnsw` and `int8`. Each build runs in a fresh process, so its peak RSS is its own.

    python benchmarks/bench_scale.py --quick                          # smoke run: 500 and 1,000 points, 32-d
    nice -n 19 python benchmarks/bench_scale.py --sizes 10000,100000 --out benchmarks/results/scale-cpu.md \\
        --plot docs/scale-cpu.png
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import machine  # noqa: E402

MODEL = "bench-scale"
TOP_K = 10
SKIN_FILTER = ("FST5", "FST6")
BUILDS = {  # backend -> build -> the settings measured on it
    "edge": {"float": ("exact", "hnsw", "hnsw-ef512"), "int8": ("int8",)},
    "local": {"float": ("exact",)},
    "server": {"float": ("hnsw",), "int8": ("int8",)},
}
LOCAL_FEWER_QUERIES_ABOVE, LOCAL_QUERIES = 20_000, 20  # local mode is slow past its own 20,000-point warning
SEARCH = {"exact": (True, None), "hnsw": (False, 128), "hnsw-ef512": (False, 512), "int8": (False, 128)}


def payloads_for(case_of_point: np.ndarray) -> list[dict]:
    """A SCIN payload per point, one template per case (so a case's photos agree on skin type)."""
    from bench_search import payload_templates, scin_payload

    templates = payload_templates()
    return [
        scin_payload(templates[case % len(templates)], f"{number}", f"{case}")
        for number, case in enumerate(case_of_point.tolist())
    ]


def skin_filter():
    from scinsearch.search_filters import SearchFilters

    return SearchFilters(fitzpatrick=SKIN_FILTER).to_store_filter()


def matches(payload: dict, store_filter) -> bool:
    """The reference's reading of a filter of Match conditions (any value; a list field: any element)."""
    for condition in store_filter.must:
        value = payload.get(condition.key)
        values = value if isinstance(value, list) else [value]
        if not set(values) & set(condition.values):
            return False
    return True


def exact_answers(vectors, payloads, queries, store_filter) -> list[list[str]]:
    """The kiosk query answered by numpy: best-first over the (filtered) points, one image per case."""
    from scinsearch import rules

    allowed = np.array([matches(p, store_filter) for p in payloads]) if store_filter else None
    answers = []
    for query in queries:
        scores = vectors @ query
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        order = np.argsort(-scores, kind="stable")[: TOP_K * 8]
        order = [i for i in order if np.isfinite(scores[i])]
        kept = rules.one_per_case([payloads[i]["case_ids"] for i in order], TOP_K)
        answers.append([payloads[order[i]]["image_id"] for i in kept])
    return answers


def open_store(backend: str, build: str, folder: Path, url: str | None):
    from scinsearch.settings import ServerOptions, Settings
    from scinsearch.store.client import ClientStore

    index = ServerOptions(quantization="int8" if build == "int8" else "none")
    if backend == "edge":
        from scinsearch.store.edge import EdgeStore

        return EdgeStore(folder, "scale", index=index)
    if backend == "local":
        return ClientStore(Settings(qdrant_location=":memory:", collection="scale"))
    return ClientStore(Settings(qdrant_url=url, collection="scale_bench", server=index))


def build_store(store, backend: str, vectors, payloads) -> dict:
    """Create, upsert in batches of 256, then build the index: seconds for each."""
    from scinsearch.schema import point_id_for
    from scinsearch.store import CollectionInfo, StoredPoint

    store.create(CollectionInfo(MODEL, vectors.shape[1]), recreate=True)
    began = time.perf_counter()
    for start in range(0, len(vectors), 256):
        batch = range(start, min(start + 256, len(vectors)))
        store.upsert([StoredPoint(point_id_for(payloads[i]["image_id"]), payloads[i], vectors[i]) for i in batch])
    if backend == "edge":
        store.shard.flush()
    upserted = time.perf_counter()
    if backend == "edge":
        store.shard.optimize()  # the HNSW graph (and int8 copies) at every size, to compare them
    elif backend == "server":
        while store.call("get_collection", store.name).status.value != "green":
            time.sleep(0.2)
    return {"upsert_s": upserted - began, "index_s": time.perf_counter() - upserted}


def folder_mib(folder: Path) -> float | None:
    if not folder.exists():
        return None
    return sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file()) / 2**20


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker(job: dict) -> dict:
    """One build of one backend at one size, every setting measured on it (run in its own process)."""
    from scinsearch.search import Searcher
    from scinsearch.search_filters import SearchOptions
    from scinsearch.settings import Settings
    from scinsearch.testing.space import ClusteredSpace, cosine_spread

    space = ClusteredSpace(job["dim"], job["clusters"], seed=0)
    vectors, case_of_point = space.points(job["size"])
    count = job["queries"]
    if job["backend"] == "local" and job["size"] > LOCAL_FEWER_QUERIES_ABOVE:
        count = min(count, LOCAL_QUERIES)  # a filtered query takes a second or more there
    queries = space.queries(count)
    payloads = payloads_for(case_of_point)
    filters = {"none": None, "skin": skin_filter()}
    references = {name: exact_answers(vectors, payloads, queries, f) for name, f in filters.items()}
    result = {
        "data_rss_mib": rss_mib(),
        "spread": cosine_spread(vectors, case_of_point),
        "skin_share": float(np.mean([matches(p, filters["skin"]) for p in payloads])),
    }
    folder = Path(job["folder"])
    store = open_store(job["backend"], job["build"], folder, job.get("url"))
    try:
        result.update(build_store(store, job["backend"], vectors, payloads))
        result["disk_mib"] = folder_mib(folder) if job["backend"] == "edge" else None
        result["indexed"] = store.shard.info().indexed_vectors_count if job["backend"] == "edge" else None
        embedder = SimpleNamespace(model_name=MODEL, dim=job["dim"])
        searcher = Searcher(Settings(), embedder=embedder, store=store)
        options = SearchOptions(top_k=TOP_K)
        rows = {}
        for setting in BUILDS[job["backend"]][job["build"]]:
            exact, hnsw_ef = SEARCH[setting]
            if job["backend"] == "edge":
                store.search_exactly(exact)
                store.hnsw_ef = hnsw_ef or 128
            rows[setting] = {
                name: measure_queries(searcher, queries, f, options, references[name], job["warmup"])
                for name, f in filters.items()
            }
        result["settings"] = rows
    finally:
        store.close()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def saved_or_measured(job: dict) -> dict:
    """A job's result, kept beside its folder (`<backend>-<size>-<build>.json`): a run over a kept folder
    (`--keep`) resumes, measuring only what it has not measured yet."""
    saved = Path(job["folder"]).with_suffix(".json")
    if saved.exists():
        return json.loads(saved.read_text())
    result = worker(job)
    saved.write_text(json.dumps(result))
    return result


def measure_queries(searcher, queries, store_filter, options, reference, warmup: int) -> dict:
    from scinsearch.store import Filter

    for query in queries[:warmup]:
        searcher.nearest(query, store_filter or Filter(), options)
    times, recalls = [], []
    for query, expected in zip(queries, reference, strict=True):
        began = time.perf_counter()
        found = searcher.nearest(query, store_filter or Filter(), options)
        times.append((time.perf_counter() - began) * 1000)
        found_ids = {n.image_id for n in found}
        recalls.append(len(found_ids & set(expected)) / max(1, len(expected)))
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "recall": statistics.fmean(recalls)}


def run_job(job: dict) -> dict:
    """The worker in a fresh process (its own peak RSS; nothing left over from the previous build)."""
    command = [sys.executable, __file__, "--worker", json.dumps(job)]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode < 0:  # SIGKILL is what the kernel's out-of-memory killer sends
        return {"error": f"killed by signal {-done.returncode}", "wall_s": time.perf_counter() - began}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail, "wall_s": time.perf_counter() - began}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - began}


def with_others_share(job: dict, run) -> dict:
    """Run a job, noting the share of the CPUs other processes took meanwhile (the load average cannot
    judge one build: the previous build's own work is still in it). A kept result keeps the share it was
    measured with, so a resumed run's table says which rows were measured under load."""
    saved = Path(job["folder"]).with_suffix(".json")
    kept = json.loads(saved.read_text()) if saved.exists() else None
    if kept is not None and "others_share" in kept:
        return {**kept, "wall_s": 0.0}
    watch = machine.LoadWatch()
    result = run(job)
    result["others_share"] = watch.stop().others_share
    if saved.exists():
        saved.write_text(json.dumps({k: v for k, v in result.items() if k != "wall_s"}))
    return result


def quiet_build(result: dict) -> bool:
    share = result.get("others_share")
    return share is not None and share <= machine.QUIET_OTHERS_SHARE


def table(results: list[tuple[dict, dict]]) -> str:
    lines = [
        "| backend | points | setting | upsert s | index s | peak RSS MiB (data alone) | disk MiB "
        "| p50 / p95 ms | recall@10 | p50 / p95 ms, FST5-6 filter | recall@10, filtered | others' CPU share |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for job, result in results:
        head = f"| {job['backend']} | {job['size']:,} "
        if "error" in result:
            lines.append(head + f"| {job['build']} | failed: {result['error']} |" + " |" * 9)
            continue
        disk = f"{result['disk_mib']:.0f}" if result["disk_mib"] is not None else "– (in memory)"
        for setting, by_filter in result["settings"].items():
            index = "–" if setting == "exact" else f"{result['index_s']:.1f}"
            if setting != "exact" and result.get("indexed") == 0:
                index += " (no graph: under Edge's indexing threshold)"
            cells = [
                setting,
                f"{result['upsert_s']:.1f}",
                index,
                f"{result['peak_rss_mib']:.0f} ({result['data_rss_mib']:.0f})",
                disk,
            ]
            for name in ("none", "skin"):
                row = by_filter[name]
                cells += [f"{row['p50_ms']:.1f} / {row['p95_ms']:.1f}", f"{row['recall']:.3f}"]
            share = result.get("others_share")
            cells.append("?" if share is None else f"{share:.0%}" + ("" if quiet_build(result) else " (under load)"))
            lines.append(head + "| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[tuple[dict, dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str, str], list[tuple[int, dict]]] = {}
    for job, result in results:
        for setting, by_filter in result.get("settings", {}).items():
            for name, row in by_filter.items():
                series.setdefault((job["backend"], setting, name), []).append((job["size"], row))
    figure, (latency, recall) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (backend, setting, name), points in sorted(series.items()):
        points.sort(key=lambda p: p[0])
        sizes = [p[0] for p in points]
        style = "-" if name == "none" else "--"
        label = f"{backend} {setting}" + (" (FST5-6 filter)" if name == "skin" else "")
        latency.plot(sizes, [p[1]["p50_ms"] for p in points], style, marker="o", label=label)
        recall.plot(sizes, [p[1]["recall"] for p in points], style, marker="o", label=label)
    for axis, ylabel in ((latency, "kiosk query p50, ms (log)"), (recall, "recall@10 vs exact")):
        axis.set_xscale("log")
        axis.set_xlabel("points in the collection (log)")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    latency.set_yscale("log")
    recall.axhline(0.95, color="grey", linewidth=0.8)
    latency.legend(fontsize=6)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="collection sizes, comma-separated")
    parser.add_argument("--backends", default="edge,local", help="edge, local, server (needs --url)")
    parser.add_argument("--local-max", type=int, default=100_000, help="largest size run in local mode")
    parser.add_argument("--url", default=None, help="a Qdrant server to measure too")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--queries", type=int, default=50, help="timed queries per setting and filter")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 and 1,000 points, 32-d, 5 queries")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--plot", type=Path, default=None, help="draw latency and recall against size (PNG)")
    parser.add_argument("--under-load", action="store_true", help="write --out even if not quiet, marked as such")
    parser.add_argument("--builds", default=None, help="only these, e.g. edge-int8,local-float (default: all)")
    parser.add_argument("--keep", type=Path, default=None, help="keep results here; a rerun resumes from them")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.dim, args.clusters, args.queries, args.warmup = "500,1000", 32, 20, 5, 1
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.backends = [b.strip() for b in args.backends.split(",")]
    if "server" in args.backends and not args.url:
        raise SystemExit("Error: --backends server needs --url")
    if unknown := set(args.backends) - set(BUILDS):
        raise SystemExit(f"Error: unknown backend(s) {', '.join(sorted(unknown))}: use {', '.join(BUILDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "src"))
    if args.worker:
        print(json.dumps(saved_or_measured(json.loads(args.worker))))
        return 0
    watch = machine.LoadWatch()
    results = []
    wanted = set(args.builds.split(",")) if args.builds else None
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        for size in args.sizes:
            for backend in args.backends:
                if backend == "local" and size > args.local_max:
                    continue
                for build in BUILDS[backend]:
                    if wanted is not None and f"{backend}-{build}" not in wanted:
                        continue
                    folder = Path(root) / f"{backend}-{size}-{build}"
                    job = dict(vars(args), backend=backend, build=build, size=size, folder=str(folder))
                    job = {
                        k: v for k, v in job.items() if k not in ("out", "plot", "sizes", "backends", "keep", "builds")
                    }
                    result = with_others_share(job, run_job)
                    shutil.rmtree(folder, ignore_errors=True)
                    results.append((job, result))
                    print(
                        f"{backend} {size:,} {build}: {result.get('error') or 'done'} in {result['wall_s']:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    watch.stop()
    loaded = [job for job, result in results if "error" not in result and not quiet_build(result)]
    spread = next((r["spread"] for _, r in results if "spread" in r), None)
    share = next((r["skin_share"] for _, r in results if "skin_share" in r), 0.0)
    header = [
        "## Store scale: the kiosk query (top 10, one per case) against collection size",
        "",
        f"- {machine.describe_cpu()}",
        f"- {watch.describe()}",
        f"- builds measured with other processes taking at most {machine.QUIET_OTHERS_SHARE:.0%} of the CPUs: "
        f"{len(results) - len(loaded)} of {len(results)} (last column)",
        f"- vectors: {args.dim}-d `ClusteredSpace` ({args.clusters} clusters); pairwise cosine "
        + (
            f"mean {spread['mean']:.2f}, p5 / p50 / p95 {spread['p5']:.2f} / {spread['p50']:.2f} / "
            f"{spread['p95']:.2f}; a point's nearest image of another case: median "
            f"{spread['nearest_other_case_p50']:.2f}"
            if spread
            else "n/a"
        ),
        f"- {args.queries} timed queries per row after {args.warmup} warm-up; the filter (Fitzpatrick "
        f"{' or '.join(SKIN_FILTER)}) keeps {share:.0%} of the points; recall@10 against numpy's exact answer "
        f"(local mode past {LOCAL_FEWER_QUERIES_ABOVE:,} points: {LOCAL_QUERIES} queries)",
        "",
        "",
    ]
    text = "\n".join(header) + table(results)
    print(text)
    if args.plot:
        plot(results, args.plot, f"{machine.cpu_model()}: {'quiet' if watch.quiet else 'under load'}")
    if loaded and args.out and not args.under_load:  # a resumed run can be quiet while rows it kept were not
        print(f"Error: not writing {args.out}: {len(loaded)} builds were measured under load (last column); "
              "rerun them on a quiet machine, or pass --under-load", file=sys.stderr)  # fmt: skip
        return 1
    return 0 if machine.write_table(args.out, text, watch, args.under_load) else 1


if __name__ == "__main__":
    sys.exit(main())
