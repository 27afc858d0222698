"""Where the image tower's time goes on this CPU: why model-only images/s sits well below the matmul bound
that bench_embed.py divides by.

bench_embed.py's bound is the square 2048 x 2048 matmul rate times the model's FLOPs. This script says
how much of the gap is the bound itself and how much is work that is not a matrix product:

1. **The products at the model's own shapes**: every linear layer of one encoder block (q, k, v, out,
   fc1, fc2: `batch x tokens` rows) timed alone with `torch.nn.functional.linear` in the model's
   precision, against the square matmul in the same run. Their FLOP-weighted rate is the bound the
   model could reach if it were nothing but its products.
2. **Time by kind of operation**: the whole tower (eager, batch `--batch-size`) under torch.profiler,
   self CPU time summed per kind (matrix products, attention, layer norm, GELU, copies and casts,
   other elementwise, other). The products' share says how fast the model could be at best if the
   rest took no time at all.

The model is a known checkpoint's real architecture with random weights (same arithmetic as the trained
weights). Eager, not compiled: the profiler names eager's operations; the compiled model fuses the
elementwise ones (bench_embed.py measures the effect) but calls the same product kernels.

    python benchmarks/bench_model_ops.py --model tiny --repeats 1       # checks the script, seconds
    python benchmarks/bench_model_ops.py --out benchmarks/results/model-ops-cpu.md
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import machine  # noqa: E402

KINDS = {  # kind -> substrings of aten operation names (first match wins, in this order)
    "attention": ("scaled_dot_product", "flash_attention", "softmax", "baddbmm", "bmm"),
    "matrix products": ("addmm", "aten::mm", "linear", "matmul", "mkldnn", "onednn", "convolution", "conv2d"),
    "layer norm": ("layer_norm",),
    "GELU": ("gelu",),
    "copies and casts": ("copy_", "to_copy", "clone", "contiguous", "cat", "empty", "reshape", "view", "permute"),
    "other elementwise": ("add", "mul", "div", "tanh", "sub"),
}


def kind_of(name: str) -> str:
    for kind, needles in KINDS.items():
        if any(needle in name for needle in needles):
            return kind
    return "other"


def time_call(call, repeats: int) -> float:
    """Best seconds per call over `repeats` timed runs of at least 50 ms each (after one warm-up)."""
    call()
    began = time.perf_counter()
    call()
    inner = max(1, int(0.05 / max(time.perf_counter() - began, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(inner):
            call()
        best = min(best, (time.perf_counter() - began) / inner)
    return best


def block_linears(model, rows: int, dtype, repeats: int) -> list[dict]:
    """Each linear layer of the first encoder block at the model's row count: GFLOP and GFLOP/s."""
    import torch

    block = model.encoder.layers[0]
    layers = {
        "q / k / v (each)": block.self_attn.q_proj,
        "attention out": block.self_attn.out_proj,
        "MLP fc1": block.mlp.fc1,
        "MLP fc2": block.mlp.fc2,
    }
    found = []
    for name, layer in layers.items():
        x = torch.randn(rows, layer.in_features).to(dtype)
        weight, bias = layer.weight.to(dtype), layer.bias.to(dtype)
        with torch.inference_mode():
            seconds = time_call(functools.partial(torch.nn.functional.linear, x, weight, bias), repeats)
        gflop = 2 * rows * layer.in_features * layer.out_features / 1e9
        count = 3 if name.startswith("q /") else 1
        found.append(
            dict(
                name=name,
                shape=f"{rows}x{layer.in_features} @ {layer.in_features}x{layer.out_features}",
                gflop=gflop,
                count=count,
                rate=gflop / seconds,
            )
        )
    return found


def time_by_kind(model, pixels, repeats: int) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Self CPU seconds per forward pass, summed per kind of aten operation (torch.profiler), and each
    kind's largest operations by name."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(pixel_values=pixels)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(pixel_values=pixels)
    totals: dict[str, float] = defaultdict(float)
    names: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for event in prof.key_averages():
        if event.key.startswith("aten::") or "mkldnn" in event.key or "onednn" in event.key:
            seconds = event.self_cpu_time_total / 1e6 / repeats
            totals[kind_of(event.key)] += seconds
            names[kind_of(event.key)].append((seconds, event.key))
    largest = {kind: [name for _, name in sorted(found, reverse=True)[:3]] for kind, found in names.items()}
    return dict(totals), largest


def report(args) -> str:
    import torch

    model, side = machine.build_vision_model(args.model)
    precision = args.precision if args.precision != "auto" else ("bf16" if machine.native_bf16() else "fp32")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    model = model.to(dtype)
    patch = model.config.patch_size
    tokens = (side // patch) ** 2
    rows = args.batch_size * tokens
    square = machine.matmul_gflops("cpu", precision, args.matmul_size, args.matmul_seconds)
    gflop_image = machine.flops_per_image(model, side)
    pixels = torch.randn(args.batch_size, 3, side, side).to(dtype)
    with torch.inference_mode():
        forward = time_call(lambda: model(pixel_values=pixels), args.repeats)
    linears = block_linears(model, rows, dtype, args.repeats)
    kinds, largest = time_by_kind(model, pixels, max(1, args.repeats))
    profiled = sum(kinds.values())

    lines = [
        "## Where the image tower's time goes",
        "",
        f"- {machine.describe_cpu()}",
        f"- torch {torch.__version__}; model {args.model} (random weights), {precision}, eager, batch {args.batch_size}"
        f" ({tokens} tokens per image, {rows} rows per product); threads {torch.get_num_threads()}",
        "",
        "| linear layer (one encoder block) | shape | per block | GFLOP | GFLOP/s | of the square matmul |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for layer in linears:
        lines.append(
            f"| {layer['name']} | {layer['shape']} | {layer['count']} | {layer['gflop']:.2f} | "
            f"{layer['rate']:.0f} | {layer['rate'] / square:.2f} |"
        )
    block_gflop = sum(layer["gflop"] * layer["count"] for layer in linears)
    block_seconds = sum(layer["gflop"] * layer["count"] / layer["rate"] for layer in linears)
    shaped = block_gflop / block_seconds
    lines += [
        "",
        f"square {args.matmul_size or 2048}-side matmul: {square:.0f} GFLOP/s; the block's products at their own "
        f"shapes: {shaped:.0f} GFLOP/s ({shaped / square:.2f} of it)",
        "",
        "| kind of operation | ms per batch (self CPU) | share | largest operations |",
        "|---|---:|---:|---|",
    ]
    for kind, seconds in sorted(kinds.items(), key=lambda item: -item[1]):
        top = ", ".join(f"`{name}`" for name in largest[kind])
        lines.append(f"| {kind} | {seconds * 1000:.1f} | {seconds / profiled:.0%} | {top} |")
    images_s = args.batch_size / forward
    products = kinds.get("matrix products", 0.0)
    lines += [
        "",
        f"forward pass: {forward * 1000:.0f} ms per batch of {args.batch_size} = {images_s:.2f} img/s; "
        f"the model {gflop_image:.3g} GFLOP per image",
        f"- bound from the square matmul (bench_embed.py's): {square / gflop_image:.2f} img/s -> the model "
        f"reaches {images_s / (square / gflop_image):.2f} of it",
        f"- bound from the products at the model's shapes: {shaped / gflop_image:.2f} img/s -> "
        f"{images_s / (shaped / gflop_image):.2f} of it",
        f"- if everything but the matrix products took no time: {args.batch_size / max(products, 1e-9):.2f} img/s "
        f"(the products are {products / profiled:.0%} of the profiled time)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="google/siglip-base-patch16-224", help=f"a known id, or {machine.TINY}")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best) and profiled passes")
    parser.add_argument("--matmul-size", type=int, default=None)
    parser.add_argument("--matmul-seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (if quiet)")
    parser.add_argument("--under-load", action="store_true", help="write --out even if not quiet, marked as such")
    args = parser.parse_args()
    watch = machine.LoadWatch()
    text = report(args)
    watch.stop()
    text += f"\n\n{watch.describe()}"
    print(text)
    machine.write_table(args.out, text, watch, args.under_load)


if __name__ == "__main__":
    main()
