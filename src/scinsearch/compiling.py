"""torch.compile as scinsearch uses it, for embed runs and for the kiosk's one-at-a-time queries.

Compiling (inductor, one static shape, weights frozen into the graph) makes the CPU forward pass
1.1-1.45x faster on the CPUs measured (docs/performance.md) but costs a one-off 20-90 s and a C++
compiler at run time, so every caller decides whether it pays, and any failure leaves eager, which is
correct, only slower. Kept apart from `embedding` (the model itself) so that both stay short.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import torch

from scinsearch.errors import ScinSearchError
from scinsearch.helpers import first_line

COMPILE_CHOICES = ("auto", "on", "off")
COMPILE_BACKEND = "inductor"  # torch.compile's code generator; tests use "aot_eager" (same graph capture, no C++)
QUERY_TIMING_CALLS = 3  # queries timed each way when "auto" decides whether a compiled query tower pays
QUERY_SPEED_UP = 1.05  # ... and a compiled tower is kept only if it is at least this much faster than eager
QUERY_TEXT = "a photo of skin"  # what the text tower is compiled and timed on (the shape is all that matters)
log = logging.getLogger(__name__)


def compiler_available() -> bool:
    """torch.compile on the CPU (inductor) generates C++: it needs a compiler at run time."""
    return bool(shutil.which(os.environ.get("CXX", "g++")) or shutil.which("clang++"))


def resolve_compile(requested: str | bool | None) -> str:
    if requested is True:
        return "on"
    if requested is False:
        return "off"
    requested = requested or "auto"
    if requested not in COMPILE_CHOICES:
        raise ScinSearchError(f"unknown compile choice {requested!r}: use auto, on or off")
    return requested


def compile_function(function):
    """One static shape, weights frozen into the graph (inductor's `freezing`): the fastest CPU variant measured."""
    options = {"freezing": True} if COMPILE_BACKEND == "inductor" else None
    return torch.compile(function, dynamic=False, backend=COMPILE_BACKEND, options=options)


def median_ms(function, *args, calls: int = QUERY_TIMING_CALLS) -> float:
    """Median wall time of `calls` calls, in milliseconds."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        function(*args)
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def compile_query_towers(embedder, choice: str) -> tuple[object | None, object | None, str]:
    """(compiled image tower for batch 1 or None, compiled text tower for one text or None, a log line).

    "on": whatever compiled. "auto": only where a compiler is present, and each tower only if it answers
    at least QUERY_SPEED_UP times faster than eager, timed here on the same input. "off": nothing."""
    choice = resolve_compile(choice)
    if choice == "off":
        return None, None, ""
    if getattr(embedder, "towers", None) is not None:
        return None, None, "--compile does not apply to --backend openvino: OpenVINO compiled the towers at load"
    if embedder.preprocessor.kind != "fixed":
        return None, None, "query towers not compiled: SigLIP 2 NaFlex inputs vary in shape"
    if choice == "auto" and embedder.device.type == "cpu" and not compiler_available():
        return None, None, "query towers not compiled: no C++ compiler for torch.compile"
    started, notes = time.perf_counter(), []
    image = text = None
    side = embedder.preprocessor.image_size
    pixels = embedder.model_inputs({"pixels": torch.full((1, side, side, 3), 128, dtype=torch.uint8)})
    towers = [("image", embedder.image_tower, pixels["pixel_values"])]
    if embedder.has_text_tower:
        towers.append(("text", embedder.text_tower, embedder.tokenize([QUERY_TEXT]).to(embedder.device)))
    for name, tower, inputs in towers:
        try:
            compiled = compile_function(tower)
            with torch.inference_mode():
                compiled(inputs)  # the compile happens here, on the first call
                keep = choice == "on" or pays(name, tower, compiled, inputs, notes)
        except Exception as exc:  # no compiler, unsupported op, ...: that tower stays eager
            notes.append(f"{name} tower eager (compile failed: {type(exc).__name__}: {first_line(exc)})")
            continue
        if keep and name == "image":
            image = compiled
        elif keep:
            text = compiled
    kept = [name for name, tower in (("image", image), ("text", text)) if tower is not None]
    summary = f"query towers compiled in {time.perf_counter() - started:.0f} s; kept: {', '.join(kept) or 'none'}"
    return image, text, "; ".join([summary, *notes])


def pays(name: str, eager, compiled, inputs: torch.Tensor, notes: list[str]) -> bool:
    """Time both on the same input; True when the compiled one is clearly faster."""
    eager_ms, compiled_ms = median_ms(eager, inputs), median_ms(compiled, inputs)
    kept = eager_ms >= compiled_ms * QUERY_SPEED_UP
    notes.append(f"{name}: {compiled_ms:.0f} ms compiled vs {eager_ms:.0f} ms eager ({'kept' if kept else 'eager'})")
    return kept
