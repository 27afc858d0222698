"""What every benchmark says about the machine, and the machine's own speed limit for a model.

- `describe_cpu()`: the CPU model, the cores this process may use (its affinity mask, not the host's
  count) and the instruction sets that decide CPU inference speed (AVX2, AVX-512, AVX-512-BF16, AMX);
- `matmul_gflops()`: dense `torch.matmul` throughput on square matrices, fp32 and bf16 — what the
  machine can do at best, measured in the same run as the model;
- `flops_per_image()`: the model's arithmetic per image, counted by torch's FlopCounterMode, so that
  model-only images/s can be read as a fraction of what that throughput allows;
- `build_vision_model()`: the real architecture of a known checkpoint with random weights, or "tiny"
  for smoke runs of the scripts.

Imports nothing beyond the standard library, torch, transformers and scinsearch modules that need
only those (gpu_bench.py runs in a venv holding just torch, transformers, Pillow and numpy).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx")
TINY = "tiny"  # a 2-layer, 32-wide SigLIP tower at 32 px: runs every script in seconds, measures nothing


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> dict[str, bool]:
    """The instruction sets that matter here; "amx" = any AMX tile unit (amx_tile / amx_bf16)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    found = {name: name in flags for name in CPU_FLAGS}
    found["amx"] = bool({"amx_tile", "amx_bf16"} & flags)
    return found


def native_bf16() -> bool:
    """bf16 matrix instructions on this CPU (AVX-512-BF16 or AMX): bf16 is then worth measuring."""
    flags = cpu_flags()
    return flags["avx512_bf16"] or flags["amx"]


def usable_cores() -> int:
    from scinsearch.pipeline import usable_cores as cores

    return cores()


def describe_cpu() -> str:
    """One line: model, usable / installed cores, and yes/no for each instruction set."""
    flags = ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in cpu_flags().items())
    return f"CPU {cpu_model()}, {usable_cores()} usable cores (of {os.cpu_count()}); {flags}"


def shm_size() -> tuple[int, int] | None:
    """(size, free) of /dev/shm in bytes, or None where there is none: decode workers pass pixels through it."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return None
    return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize


def synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(
    device: str = "cpu", dtype_name: str = "fp32", size: int | None = None, seconds: float = 1.0
) -> float:
    """Best sustained rate of torch.matmul on two size x size matrices (2 n^3 FLOP per product), GFLOP/s.

    The best of repeated measurements, each long enough (>= 50 ms) to hide the call overhead: a ceiling
    for the model's matrix products, which are smaller and less regular."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    target = torch.device(device)
    size = size or (8192 if target.type == "cuda" else 2048)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(target, dtype)
    b = torch.randn(size, size, generator=generator).to(target, dtype)
    out = torch.matmul(a, b)  # warm-up: kernels chosen, memory allocated
    synchronize(target)
    began = time.perf_counter()
    torch.matmul(a, b, out=out)
    synchronize(target)
    repeats = max(1, int(0.05 / max(time.perf_counter() - began, 1e-6)))
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        began = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        synchronize(target)
        best = max(best, repeats * 2 * size**3 / (time.perf_counter() - began))
    return best / 1e9


def flops_per_image(model, image_size: int, device: str = "cpu") -> float:
    """FLOPs of one image through the vision tower (GFLOP), counted with torch's FlopCounterMode.

    Counted with eager attention: the counter does not see the CPU's fused attention kernel, which
    would leave out the attention products (35.4 GFLOP for siglip-base-patch16-224; 34.0 without)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    config = model.config
    before = getattr(config, "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        dtype = next(model.parameters()).dtype
        pixels = torch.zeros((1, 3, image_size, image_size), device=device, dtype=dtype)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            if hasattr(model, "get_image_features"):
                model.get_image_features(pixel_values=pixels)
            else:
                model(pixel_values=pixels)
    finally:
        if switch:
            model.set_attn_implementation(before)
    return counter.get_total_flops() / 1e9


def flops_text(gflops: float) -> str:
    """A rate in GFLOP/s as text, in TFLOP/s from 1000 up."""
    return f"{gflops / 1000:.1f} TFLOP/s" if gflops >= 1000 else f"{gflops:.0f} GFLOP/s"


def model_bound(matmul_rate: float | None, gflop_per_image: float) -> float | None:
    """Images/s the matmul throughput would allow if the model were nothing but such products."""
    return matmul_rate / gflop_per_image if matmul_rate and gflop_per_image else None


def build_vision_model(model_id: str):
    """(vision model with random weights, input side): a known checkpoint's real architecture, or TINY."""
    from scinsearch.models import KNOWN_MODELS, random_vision_model

    if model_id == TINY:
        from transformers import SiglipVisionConfig, SiglipVisionModel

        from scinsearch.testing import TINY_TOWER

        config = SiglipVisionConfig(image_size=32, patch_size=8, **TINY_TOWER)
        return SiglipVisionModel(config).eval(), 32
    if model_id not in KNOWN_MODELS:
        raise SystemExit(f"unknown model {model_id!r}: use {TINY} or one of {', '.join(KNOWN_MODELS)}")
    return random_vision_model(model_id), KNOWN_MODELS[model_id].image_size
