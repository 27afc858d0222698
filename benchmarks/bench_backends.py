"""Inference backends for the SigLIP image tower on this CPU, decided by numbers: torch eager, torch.compile
(inductor, frozen weights: what `scinsearch embed --compile` uses) and OpenVINO, at batch 16 (indexing)
and batch 1 (a kiosk query), in one process with interleaved rounds, each with its cosine to eager fp32.

The model is the real architecture of a known checkpoint (default google/siglip-base-patch16-224) with
random weights (same arithmetic and speed as the trained weights; nothing to download). Every round
runs every backend at every batch size on the same input, so a change in the machine's load hits all of
them; the table gives the median over rounds. Backends in bf16 are added where the CPU has native bf16
(AVX-512-BF16 or AMX): scinsearch runs bf16 there.

The rule (docs/performance.md): an optional backend is adopted only where it beats compiled torch of
the same precision by >= 1.2x at both batch sizes with cosine >= 0.999 to eager fp32; the last lines
say whether it does. OpenVINO passed it and is the optional extra `pip install 'scinsearch[openvino]'`
(`scinsearch embed/serve --backend openvino`); its rows here run the tower exactly as scinsearch does
(`scinsearch.openvino_tower.compile_tower`: one conversion with a free batch dimension, compiled for
the CPU at the row's precision). Without the extra the OpenVINO rows are skipped with the reason.

    python benchmarks/bench_backends.py --model tiny --rounds 1          # checks the script, seconds
    python benchmarks/bench_backends.py                                  # base-224, 5 rounds
    python benchmarks/bench_backends.py --out benchmarks/results/backends-cpu.md
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import machine  # noqa: E402

ADOPT_SPEED_UP = 1.2
ADOPT_COSINE = 0.999


class Backend:
    """One way to run the tower: `prepare(batch, example)` builds it for that batch size (compile,
    convert), then `run(batch, pixels)` returns the raw features as a float32 numpy array."""

    def __init__(self, name: str, precision: str, family: str):
        self.name, self.precision, self.family = name, precision, family
        self.runners: dict[int, object] = {}
        self.setup_s = 0.0
        self.skipped = ""

    def prepare(self, batch: int, example):
        raise NotImplementedError

    def run(self, batch: int, pixels) -> np.ndarray:
        return self.runners[batch](pixels)


class TorchBackend(Backend):
    def __init__(self, model, precision: str, compiled: bool):
        super().__init__(f"torch {'compile' if compiled else 'eager'} {precision}", precision, "torch")
        import torch

        self.torch, self.compiled = torch, compiled
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        self.model = model if precision == "fp32" else copy.deepcopy(model).to(self.dtype)

    def tower(self, pixels):
        return self.model(pixel_values=pixels).pooler_output

    def prepare(self, batch: int, example) -> None:
        from scinsearch.compiling import compile_function

        function = compile_function(self.tower) if self.compiled else self.tower
        torch = self.torch

        @torch.inference_mode()
        def runner(pixels):
            return function(pixels.to(self.dtype)).float().numpy()

        runner(example)  # warm-up; for torch.compile the compile itself
        self.runners[batch] = runner


class OpenVinoBackend(Backend):
    """The tower as `scinsearch embed --backend openvino` runs it: `openvino_tower.compile_tower` (converted
    once from the torch module with a free batch dimension, compiled for the CPU at this precision)."""

    def __init__(self, model, precision: str):
        super().__init__(f"OpenVINO {precision}", precision, "openvino")
        from scinsearch.openvino_tower import import_openvino, shared_core

        self.ov = import_openvino()  # a one-line ScinSearchError when it is not installed
        self.core = shared_core()  # the one Core scinsearch uses (see there why one)
        self.model, self.tower = model, None
        self.hint = {"fp32": "f32", "bf16": "bf16"}[precision]

    def prepare(self, batch: int, example) -> None:
        from scinsearch.openvino_tower import compile_tower

        if self.tower is None:  # one conversion and one compile serve every batch size
            function = lambda pixels: self.model(pixel_values=pixels).pooler_output  # noqa: E731
            self.tower = compile_tower(self.ov, self.core, self.model, function, example, self.hint, "image")

        def runner(pixels):
            return self.tower(pixels).numpy()

        runner(example)
        self.runners[batch] = runner


def make_backends(args, model) -> tuple[list[Backend], list[str]]:
    """The backends asked for, in order; and a reason for each one left out."""
    precisions = ["fp32"] + (["bf16"] if machine.native_bf16() else [])
    backends, skipped = [], []
    for precision in precisions:
        if "eager" in args.backends:
            backends.append(TorchBackend(model, precision, compiled=False))
        if "compile" in args.backends:
            from scinsearch.compiling import compiler_available

            if compiler_available():
                backends.append(TorchBackend(model, precision, compiled=True))
            else:
                skipped.append(f"torch compile {precision}: skipped (no C++ compiler for inductor)")
        if "openvino" in args.backends:
            from scinsearch.errors import ScinSearchError

            try:
                backends.append(OpenVinoBackend(model, precision))
            except ScinSearchError as exc:  # not installed: the message says how to install it
                skipped.append(f"OpenVINO {precision}: skipped ({exc})")
    return backends, skipped


def prepare_all(backends: list[Backend], inputs: dict, skipped: list[str]) -> list[Backend]:
    """Build every backend for every batch size (compile, convert); a backend that fails is left out."""
    ready = []
    for backend in backends:
        started = time.perf_counter()
        try:
            for batch, pixels in inputs.items():
                backend.prepare(batch, pixels)
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            skipped.append(f"{backend.name}: skipped ({type(exc).__name__}: {reason})")
            continue
        backend.setup_s = time.perf_counter() - started
        print(f"  {backend.name}: ready in {backend.setup_s:.0f} s", file=sys.stderr, flush=True)
        ready.append(backend)
    return ready


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def measure(args, backends: list[Backend], inputs: dict) -> dict:
    """Rounds of every backend at every batch size; per (backend, batch): seconds per call, each round."""
    times: dict = {(b.name, batch): [] for b in backends for batch in inputs}
    for number in range(args.rounds):
        print(f"  round {number + 1} of {args.rounds}", file=sys.stderr, flush=True)
        for batch, pixels in inputs.items():
            calls = max(1, math.ceil(args.min_images / batch))
            for backend in backends:
                started = time.perf_counter()
                for _ in range(calls):
                    backend.run(batch, pixels)
                times[(backend.name, batch)].append((time.perf_counter() - started) / calls)
    return times


def report(args, backends, skipped, inputs, times, cosines, header) -> str:
    big, small = max(inputs), min(inputs)
    median = {key: statistics.median(values) for key, values in times.items()}

    def rate(name: str) -> float:
        return big / median[(name, big)]

    def speed_up(name: str, than: str | None, batch: int) -> str:
        if than is None or (than, batch) not in median:
            return "–"
        return f"{median[(than, batch)] / median[(name, batch)]:.2f}"

    names = [b.name for b in backends]
    eager = "torch eager fp32" if "torch eager fp32" in names else None
    lines = [*header, ""]
    lines.append(
        f"| backend | batch {big}: img/s | × eager fp32 | batch {small}: ms per query | × eager fp32 "
        "| cosine to eager fp32 (min) | build / compile s |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for backend in backends:
        name = backend.name
        lines.append(
            f"| {name} | {rate(name):.2f} | {speed_up(name, eager, big)} | {median[(name, small)] * 1000:.0f} "
            f"| {speed_up(name, eager, small)} | {cosines[name]:.6f} | {backend.setup_s:.0f} |"
        )
    lines += ["", *[f"- {line}" for line in skipped]] if skipped else []
    verdict = verdicts(backends, median, cosines, big, small)
    if args.model == machine.TINY:
        verdict = [f"(tiny model, no verdict) {line}" for line in verdict]
    lines += ["", *verdict]
    return "\n".join(lines)


def verdicts(backends, median, cosines, big, small) -> list[str]:
    """Each non-torch backend against compiled torch of its precision (eager where it did not compile)."""
    lines = []
    torch_rows = {b.precision: b.name for b in backends if b.family == "torch" and "eager" in b.name}
    torch_rows |= {b.precision: b.name for b in backends if b.family == "torch" and "compile" in b.name}
    for backend in backends:
        if backend.family == "torch":
            continue
        rival = torch_rows.get(backend.precision)
        if rival is None:
            lines.append(f"{backend.name}: no torch row of the same precision to compare with")
            continue
        ups = [median[(rival, batch)] / median[(backend.name, batch)] for batch in (big, small)]
        adopt = min(ups) >= ADOPT_SPEED_UP and cosines[backend.name] >= ADOPT_COSINE
        lines.append(
            f"{backend.name} vs {rival}: {ups[0]:.2f}x at batch {big}, {ups[1]:.2f}x at batch {small}, cosine "
            f"{cosines[backend.name]:.6f}: {'ADOPT as an optional extra' if adopt else 'do not adopt'} (rule: "
            f">= {ADOPT_SPEED_UP}x at both batch sizes and cosine >= {ADOPT_COSINE})"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="google/siglip-base-patch16-224", help=f"a known id, or {machine.TINY}")
    parser.add_argument("--batch-sizes", default="16,1", help="the first is the throughput row, the last the query")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-images", type=int, default=32, help="images per timed measurement (at least one call)")
    parser.add_argument("--backends", default="eager,compile,openvino", help="any of eager, compile, openvino")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (if quiet)")
    parser.add_argument("--under-load", action="store_true", help="write --out even if not quiet, marked as such")
    args = parser.parse_args(argv)
    args.backends = {name.strip() for name in args.backends.split(",")}
    batches = sorted({int(b) for b in args.batch_sizes.split(",")}, reverse=True)
    if min(batches) < 1 or args.rounds < 1 or args.min_images < 1:
        raise SystemExit("batch sizes, --rounds and --min-images must be at least 1")
    import torch

    watch = machine.LoadWatch()
    torch.manual_seed(0)
    model, side = machine.build_vision_model(args.model)
    generator = torch.Generator().manual_seed(1)
    inputs = {b: torch.rand((b, 3, side, side), generator=generator) * 2 - 1 for b in batches}  # [-1, 1]
    backends, skipped = make_backends(args, model)
    backends = prepare_all(backends, inputs, skipped)
    if not backends:
        raise SystemExit("no backend could run: " + "; ".join(skipped))
    reference = TorchBackend(model, "fp32", compiled=False)
    cosines = {}
    for backend in backends:
        cosines[backend.name] = 1.0
        for batch, pixels in inputs.items():
            if batch not in reference.runners:
                reference.prepare(batch, pixels)
            cosines[backend.name] = min(
                cosines[backend.name], cosine(backend.run(batch, pixels), reference.run(batch, pixels))
            )
    times = measure(args, backends, inputs)
    tiny = " (TINY MODEL: checks the script, measures nothing)" if args.model == machine.TINY else ""
    header = [
        f"## Image-tower backends{tiny}",
        "",
        f"- {machine.describe_cpu()}",
        f"- torch {torch.__version__} ({torch.get_num_threads()} threads), OpenVINO {openvino_version()}, "
        f"Python {platform.python_version()}",
        f"- model: {args.model} vision tower, random weights, {side}x{side} input; {args.rounds} interleaved rounds, "
        f"median; at least {args.min_images} images per measurement",
    ]
    text = report(args, backends, skipped, inputs, times, cosines, header)
    text += f"\n\n{watch.stop().describe()}"
    print(text)
    return 0 if machine.write_table(args.out, text, watch, args.under_load) else 1


def openvino_version() -> str:
    from scinsearch.errors import ScinSearchError
    from scinsearch.openvino_tower import import_openvino

    try:
        return import_openvino().__version__.split("-")[0]
    except ScinSearchError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
