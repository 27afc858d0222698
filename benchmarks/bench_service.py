"""Kiosk service latency over HTTP on loopback, eager and with the query towers compiled (`serve --compile`),
beside the in-process search latency of the same run.

What runs: the real google/siglip-base-patch16-224 architecture with random weights (same arithmetic
and speed as the trained checkpoint, nothing to download; built by bench_search.build_base_siglip) over
a temporary embedded Qdrant Edge store of 10,000 random unit vectors with SCIN payloads (the size of
SCIN). The measurements run one after the other, so they never share the CPU:

1. in-process: `Searcher.search_image(png_bytes)` in this process (decode + model + store + grouping);
2. over HTTP, once per `--compile` mode (default: off, then on): `scinsearch serve --compile MODE`
   started in a subprocess (the real CLI, uvicorn, one worker); the time until /ready answers is the
   start-up cost (model load, compile, warm-up); then this process POSTs the same SCIN-sized PNGs
   (810x1080, ~2 MB) as multipart uploads to /search on 127.0.0.1 with httpx, and text queries to
   /search/text, from 1, 4 and 16 clients at once (`--clients`: several kiosks on one central service);
3. whether batching would pay: the same towers in this process, forward passes of 1, 4 and 16 inputs
   at once (preprocessed pixels / tokens). The service runs one inference at a time; batching the
   requests queued behind it into one forward pass could at best reach the batched rate, so that rate
   beside the measured queries/s says what batching leaves on the table (docs/performance.md).

The report ends with compiled / eager for the photo and text p50 and p95 and the extra start-up
seconds: what `serve --compile`'s default is decided from. The first HTTP query is reported on its own:
the service warms up at start-up, so it should be close to the median.

    python benchmarks/bench_service.py --quick     # smoke run: 300 points, 3 queries (compiles: minutes)
    python benchmarks/bench_service.py --quick --compile off     # smoke run of the script, no compile
    python benchmarks/bench_service.py --out benchmarks/results/service-cpu.md      # 10,000 points, 50 queries
    python benchmarks/bench_service.py --compile off --clients 1,4,16 --under-load --out ...  # several users
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import bench_search  # noqa: E402  (build_base_siglip, fill_store, TEXTS)
import machine  # noqa: E402  (describe_cpu)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stats(times_ms: list[float]) -> dict:
    p50, p95 = np.percentile(times_ms, [50, 95])
    return {"n": len(times_ms), "p50": p50, "p95": p95, "mean": statistics.fmean(times_ms)}


def row(mode: str, name: str, what: str, result: dict, qps: float) -> str:
    return (
        f"| {mode} | {name} | {what} | {result['n']} | {result['p50']:.1f} | {result['p95']:.1f} | "
        f"{result['mean']:.1f} | {qps:.2f} | {result.get('rejected', '–')} |"
    )


def in_process(settings, embedder, photos: list[bytes], queries: int, warmup: int) -> tuple[dict, float]:
    """search_image latency in this process; the store is closed afterwards so the server can open it."""
    from scinsearch.search import Searcher

    with Searcher(settings, embedder=embedder) as searcher:
        for index in range(warmup):
            searcher.search_image(photos[index % len(photos)])
        times = []
        started = time.perf_counter()
        for index in range(queries):
            began = time.perf_counter()
            searcher.search_image(photos[index % len(photos)])
            times.append((time.perf_counter() - began) * 1000)
        elapsed = time.perf_counter() - started
    return stats(times), queries / elapsed


def start_service(settings, port: int, precision: str, compile_mode: str) -> tuple[subprocess.Popen, float, dict]:
    """`scinsearch serve` in a subprocess; returns it, the seconds until /ready answered, and /ready's body."""
    import httpx

    command = [
        sys.executable,
        "-c",
        "import sys; from scinsearch.cli import main; sys.exit(main())",
        "serve",
        "--qdrant-path",
        str(settings.qdrant_path),
        "--collection",
        settings.collection,
        "--model",
        settings.model,
        "--device",
        "cpu",
        "--precision",
        precision,
        "--compile",
        compile_mode,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE.parent / "src")}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    started = time.perf_counter()
    while time.perf_counter() - started < 900:
        if process.poll() is not None:
            raise SystemExit(f"serve exited: {process.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
            if response.status_code == 200:
                return process, time.perf_counter() - started, response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("serve did not become ready in 900 s")


SERVER_TIMES: list[float] = []  # the service's own time per request (its Server-Timing header)
REJECTED: list[int] = []  # 503 answers (the service's limit on uploads at once), each retried as told
MAX_RETRIES = 20


def send(client, url: str, **body):
    """POST until answered: a 503 with Retry-After (too many searches at once) is waited out and retried,
    as a kiosk does; the time includes the waits."""
    for _ in range(MAX_RETRIES):
        response = client.post(url, **body)
        if response.status_code != 503 or "retry-after" not in response.headers:
            break
        REJECTED.append(1)
        time.sleep(float(response.headers["retry-after"]))
    if response.status_code != 200:
        raise SystemExit(f"HTTP {response.status_code}: {response.text[:300]}")
    return response


def post_photo(client, url: str, photo: bytes) -> float:
    began = time.perf_counter()
    response = send(client, url, files={"photo": ("photo.png", photo, "image/png")})
    elapsed = (time.perf_counter() - began) * 1000
    timing = response.headers.get("server-timing", "")
    if "dur=" in timing:
        SERVER_TIMES.append(float(timing.split("dur=")[1].split(",")[0]))
    return elapsed


def post_text(client, url: str, text: str) -> float:
    began = time.perf_counter()
    send(client, url, json={"text": text})
    return (time.perf_counter() - began) * 1000


def concurrent_queries(post, url: str, inputs: list, queries: int, clients: int) -> tuple[dict, float]:
    """`queries` requests (at least two per client) from `clients` threads at once: latency and queries/s."""
    import httpx

    queries = max(queries, 2 * clients)
    REJECTED.clear()
    with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            started = time.perf_counter()
            times = list(pool.map(lambda i: post(client, url, inputs[i % len(inputs)]), range(queries)))
            qps = queries / (time.perf_counter() - started)
    result = {**stats(times), "rejected": len(REJECTED)}
    print(f"{url.rsplit('/', 1)[-1]} {clients} client(s): {result} {qps:.2f} q/s", file=sys.stderr, flush=True)
    return result, qps


def over_http(port: int, photos: list[bytes], queries: int, warmup: int, clients: list[int]) -> dict:
    """The first photo query apart, then photo and text queries from each number of clients at once (the
    service's own time, from Server-Timing, for the photo queries of one client)."""
    import httpx

    url = f"http://127.0.0.1:{port}/search?top_k=5"
    text_url = f"http://127.0.0.1:{port}/search/text?top_k=5"
    texts = bench_search.TEXTS
    with httpx.Client(timeout=120) as client:
        first = post_photo(client, url, photos[0])
        for index in range(warmup):
            post_photo(client, url, photos[index % len(photos)])
            post_text(client, text_url, texts[index % len(texts)])
    results: dict = {"first": first, "server": None, "photo": {}, "text": {}}
    for count in clients:
        SERVER_TIMES.clear()
        results["photo"][count] = concurrent_queries(post_photo, url, photos, queries, count)
        if count == 1 and SERVER_TIMES:
            results["server"] = stats(SERVER_TIMES)
        results["text"][count] = concurrent_queries(post_text, text_url, texts, queries, count)
    return results


def batched_rates(embedder, photos: list[bytes], sizes: list[int], repeats: int) -> dict:
    """Inputs per second through each tower at each batch size (median of `repeats`), in this process:
    what batching queued requests into one forward pass could reach at most."""
    from scinsearch.embedding import collate

    pixels = embedder.preprocessor.load(photos[0])
    texts = bench_search.TEXTS
    rates: dict = {"photo": {}, "text": {}}
    for size in sizes:
        batch = collate([pixels] * size)
        for kind, run in (
            ("photo", lambda b=batch: embedder.embed_batch(b)),
            ("text", lambda n=size: embedder.embed_texts([texts[i % len(texts)] for i in range(n)])),
        ):
            run()  # warm-up
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                run()
                times.append(time.perf_counter() - began)
            rates[kind][size] = size / statistics.median(times)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 points, 3 queries")
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50, help="timed queries per measurement (bounded)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clients", default="1,4,16", help="numbers of clients at once, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes per batch size (batching rows)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument(
        "--compile", default="off,on", help="serve --compile modes to measure, in this order (off, on, auto)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here, only if quiet")
    parser.add_argument("--under-load", action="store_true", help="write --out even if not quiet, marked as such")
    parser.add_argument("--model", default=None, help=f"{machine.TINY}: a tiny model, checks the script only")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.queries, args.warmup, args.clients, args.repeats = 300, 3, 1, "1,2", 1
    args.clients = sorted({int(c) for c in args.clients.split(",")})
    if args.clients[0] < 1 or args.repeats < 1:
        raise SystemExit("--clients and --repeats must be at least 1")
    args.queries = max(1, min(args.queries, 1000))
    modes = [mode.strip() for mode in args.compile.split(",") if mode.strip()]
    if not modes or any(mode not in ("off", "on", "auto") for mode in modes):
        raise SystemExit(f"--compile takes off, on and auto, comma-separated, not {args.compile!r}")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import torch
    from transformers.utils import logging as transformers_logging

    from scinsearch import testing
    from scinsearch.embedding import Embedder
    from scinsearch.settings import Settings

    transformers_logging.disable_progress_bar()
    photos = [testing.scin_sized_png(seed) for seed in range(4)]
    services = []
    watch = machine.LoadWatch()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as folder:
        started = time.perf_counter()
        if args.model == machine.TINY:
            model_dir = testing.build_tiny_siglip(Path(folder) / "tiny")
        else:
            model_dir = bench_search.build_base_siglip(Path(folder) / "siglip-base-patch16-224-random")
        settings = Settings(qdrant_path=Path(folder) / "qdrant", collection="bench", model=str(model_dir))
        embedder = Embedder(str(model_dir), device="cpu", precision=args.precision)
        bench_search.fill_store(settings, embedder.model_name, embedder.dim, args.points)
        setup = time.perf_counter() - started
        local, local_qps = in_process(settings, embedder, photos, args.queries, args.warmup)
        model_text = f"{embedder.dim}-d on {embedder.device} in {embedder.precision_name}"
        batched = batched_rates(embedder, photos, args.clients, args.repeats)
        del embedder  # the service loads its own copy
        gc.collect()
        for mode in modes:
            print(f"serve --compile {mode} ...", file=sys.stderr, flush=True)
            process, ready_seconds, ready = start_service(settings, free_port(), args.precision, mode)
            try:
                port = int(process.args[process.args.index("--port") + 1])
                services.append(
                    (mode, ready_seconds, ready, over_http(port, photos, args.queries, args.warmup, args.clients))
                )
            finally:
                process.terminate()
                process.wait(timeout=60)
    text = report(args, model_text, local, local_qps, services, setup, torch)
    text += "\n\n" + "\n".join(batching_table(services, batched))
    text += f"\n\n{watch.stop().describe()}"
    print(text)
    return 0 if machine.write_table(args.out, text, watch, args.under_load) else 1


def report(args, model_text, local, local_qps, services, setup, torch) -> str:
    tiny = args.model == machine.TINY
    model_name = "TINY (checks the script, measures nothing)" if tiny else "google/siglip-base-patch16-224 architecture"
    lines = [
        f"## Kiosk service latency{' (QUICK SMOKE RUN: not for comparison)' if args.quick else ''}",
        "",
        f"- machine: {machine.describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"Python {platform.python_version()}",
        f"- model: {model_name}, random weights, {model_text}",
        f"- store: embedded Qdrant Edge, {args.points:,} random unit vectors with SCIN payloads; top_k 5 per case",
        "- query: SCIN-sized PNG (810x1080, ~2 MB) as bytes; HTTP: multipart POST /search on 127.0.0.1 "
        "from another process (httpx), `scinsearch serve` (uvicorn, one worker, inference one at a time, at "
        "most 8 searches admitted at once: more get 503 + Retry-After, which the clients wait out and retry); "
        "text: POST /search/text",
        f"- {args.queries} timed queries per row after {args.warmup} warm-up; setup (model + store) {setup:.0f} s",
        "",
        "| serve --compile | measurement | what is timed | n | p50 ms | p95 ms | mean ms | queries/s "
        "| 503s waited out |",
        "|---|---|---|---|---|---|---|---|---|",
        row("–", "in-process", "`Searcher.search_image(png_bytes)`, eager", local, local_qps),
    ]
    for mode, _, ready, http in services:
        compiled = ", ".join(ready.get("compiled") or []) or "nothing"
        label = f"{mode} ({compiled} compiled)"
        for count in args.clients:
            result, qps = http["photo"][count]
            lines.append(
                row(label, f"HTTP photo, {count} client(s)", "POST /search, upload to JSON received", result, qps)
            )
            if count == 1 and http["server"]:
                what = "the service's own time for the same requests (Server-Timing)"
                lines.append(row(mode, "HTTP photo, server side", what, http["server"], qps))
        for count in args.clients:
            result, qps = http["text"][count]
            lines.append(row(mode, f"HTTP text, {count} client(s)", "POST /search/text, JSON to JSON", result, qps))
    lines += ["", "| serve --compile | ready after launch s | first HTTP photo query ms |", "|---|---:|---:|"]
    lines += [f"| {mode} | {seconds:.1f} | {http['first']:.0f} |" for mode, seconds, _, http in services]
    lines += ["", *comparison(local, services)]
    return "\n".join(lines)


def comparison(local: dict, services: list) -> list[str]:
    """The lines the default of `serve --compile` is decided from: compiled / eager, and the start-up cost."""
    first = services[0][3]["photo"][1][0]["p50"] if 1 in services[0][3]["photo"] else local["p50"]
    lines = [
        f"HTTP + multipart + JSON overhead at the median ({services[0][0]}): {first - local['p50']:.1f} ms "
        f"({(first - local['p50']) / max(local['p50'], 1e-9):.0%} of the in-process time)."
    ]
    by_mode = {mode: (seconds, http) for mode, seconds, _, http in services}
    if "off" not in by_mode:
        return lines
    eager_seconds, eager = by_mode["off"]
    for mode in ("on", "auto"):
        if mode not in by_mode:
            continue
        seconds, http = by_mode[mode]
        ratios = ", ".join(
            f"{label} p50 {eager[key][1][0]['p50'] / http[key][1][0]['p50']:.2f}x, "
            f"p95 {eager[key][1][0]['p95'] / http[key][1][0]['p95']:.2f}x"
            for label, key in (("photo", "photo"), ("text", "text"))
        )
        lines.append(
            f"--compile {mode} vs off: {ratios} as fast (above 1 = compiled faster); start-up "
            f"{seconds - eager_seconds:+.0f} s ({seconds:.0f} s vs {eager_seconds:.0f} s to /ready)."
        )
    return lines


def batching_table(services: list, batched: dict) -> list[str]:
    """Measured queries/s with N clients (one inference at a time) beside the most that batching the N
    queued requests into one forward pass could give: the tower's rate at batch N in this process."""
    if not services:
        return []
    mode, _, _, http = services[0]
    lines = [
        f"Batching (serve --compile {mode}): would one forward pass for the requests queued at once pay?",
        "",
        "| query | clients | measured queries/s (one inference at a time) | tower alone, batch 1, inputs/s "
        "| tower alone, batch N, inputs/s | batched / batch 1: the most batching could gain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ("photo", "text"):
        single = batched[kind].get(1)
        for count, (_, qps) in http[kind].items():
            rate = batched[kind].get(count)
            gain = f"{rate / single:.2f}x" if rate and single else "–"
            single_text = f"{single:.2f}" if single else "–"
            lines.append(f"| {kind} | {count} | {qps:.2f} | {single_text} | {rate:.2f} | {gain} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
