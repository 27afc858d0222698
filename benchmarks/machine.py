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


# Is the machine quiet? ----------------------------------------------------------------------------------

QUIET_LOAD_PER_CORE = 0.25  # 1-minute load average per usable core before a run, at most, to call it quiet
QUIET_OTHERS_SHARE = 0.05  # share of the CPUs' time other processes may take during a quiet run, at most
QUIET_DRIFT = 0.10  # repeatability drift (a script's own before/after check) a quiet run may show, at most


def busy_and_total_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat ((0, 0) where there is none)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class LoadWatch:
    """The machine's load around a run: the load averages before and after, and the share of the CPUs'
    time that other processes took meanwhile (all busy time minus this process tree's). A run is quiet
    when the load before was low, others took almost nothing, and the script's own drift is small."""

    def __init__(self):
        self.before = os.getloadavg()
        self._ticks = busy_and_total_ticks()
        self._own = own_cpu_seconds()
        self.after: tuple[float, float, float] | None = None
        self.others_share: float | None = None
        self.drift: float | None = None

    def stop(self, drift: float | None = None) -> LoadWatch:
        """Take the after readings (and the script's repeatability drift, as a fraction, when it has one)."""
        self.after = os.getloadavg()
        busy, total = busy_and_total_ticks()
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        if total > self._ticks[1]:
            elapsed_cpu = (total - self._ticks[1]) / ticks_per_second  # all CPUs' seconds
            others = (busy - self._ticks[0]) / ticks_per_second - (own_cpu_seconds() - self._own)
            self.others_share = max(0.0, others) / elapsed_cpu
        self.drift = drift
        return self

    def reasons(self) -> list[str]:
        """Why the run was not quiet (empty: it was)."""
        found = []
        if self.before[0] > QUIET_LOAD_PER_CORE * usable_cores():
            found.append(f"load average {self.before[0]:.2f} before the run (over {QUIET_LOAD_PER_CORE:g} per core)")
        if self.others_share is None:
            found.append("the CPU time of other processes could not be read")
        elif self.others_share > QUIET_OTHERS_SHARE:
            found.append(f"other processes took {self.others_share:.0%} of the CPUs meanwhile")
        if self.drift is not None and self.drift > QUIET_DRIFT:
            found.append(f"repeatability drift {self.drift:.0%} (over {QUIET_DRIFT:.0%})")
        return found

    @property
    def quiet(self) -> bool:
        return not self.reasons()

    def describe(self) -> str:
        """One line for the table's header: the load averages, the others' share, and the verdict."""
        after = "/".join(f"{v:.2f}" for v in self.after) if self.after else "?"
        others = f"{self.others_share:.0%}" if self.others_share is not None else "?"
        verdict = "quiet" if self.quiet else "UNDER LOAD: " + "; ".join(self.reasons())
        before = "/".join(f"{v:.2f}" for v in self.before)
        return (
            f"load average (1/5/15 min) {before} before, {after} after; other processes {others} of the CPUs; {verdict}"
        )


def write_table(path: Path | None, text: str, watch: LoadWatch, under_load: bool = False) -> bool:
    """Write a result table, refusing (False, one line on stderr) when the run was not quiet, unless
    `under_load` says the table is to be kept as an under-load measurement; its header then says so."""
    import sys

    if path is None:
        return True
    if not watch.quiet and not under_load:
        print(
            f"Error: not writing {path}: the machine was not quiet ({'; '.join(watch.reasons())}); rerun on a "
            f"quiet machine, or pass --under-load to keep it as an under-load measurement",
            file=sys.stderr,
        )
        return False
    if not watch.quiet:
        text = f"**Measured under load** ({watch.describe()}): compare ratios within this table only.\n\n{text}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")
    return True


class Tee:
    """Within `with`: what is printed goes to the terminal as before and is also kept, for `text()`."""

    def __init__(self):
        import io

        self._kept = io.StringIO()
        self._stdout = None

    def write(self, text: str) -> int:
        self._kept.write(text)
        return self._stdout.write(text)

    def flush(self) -> None:
        self._stdout.flush()

    def __enter__(self) -> Tee:
        import sys

        self._stdout, sys.stdout = sys.stdout, self
        return self

    def __exit__(self, *exc_info) -> None:
        import sys

        sys.stdout = self._stdout

    def text(self) -> str:
        return self._kept.getvalue()
