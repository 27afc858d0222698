"""The SigLIP towers through OpenVINO on the CPU: `--backend openvino` (the optional extra `scinsearch[openvino]`).

Adopted on the rule for another backend (docs/performance.md): on a quiet CPU with native bf16, OpenVINO
bf16 ran the image tower 1.31x (batch 16) and 1.35x (batch 1) faster than compiled torch bf16 at cosine
0.99997 (`benchmarks/bench_backends.py`, benchmarks/results/backends-cpu.md).
`openvino` is imported only when this backend is chosen.

`Embedder(..., backend="openvino")` (`Settings.backend`) loads the model in fp32, and `OpenVinoTowers`
converts each tower (image, and text where the model has one: text queries and the zero-shot condition
texts) once with `openvino.convert_model` from the embedder's own torch functions (`image_tower`,
`text_tower`), with a free batch dimension (one compile serves every batch size; measured as fast as a
fixed one), compiled for the CPU at the embedder's precision (`INFERENCE_PRECISION_HINT`: bf16 where the
CPU has it natively, else f32). From then on those two functions answer through OpenVINO; preprocessing,
tokenising and normalisation stay `Embedder`'s, so the vectors match the torch path's. This module never
imports `embedding` (it is handed the embedder). Refused, each with one line: a device other than the CPU,
SigLIP 2 NaFlex models (their patch count changes from image to image), fp16, and a missing package.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings

import numpy as np
import torch

from scinsearch.compiling import QUERY_TEXT
from scinsearch.errors import ScinSearchError
from scinsearch.helpers import first_line

INSTALL = "pip install 'scinsearch[openvino]'"
log = logging.getLogger(__name__)


TELEMETRY_PACKAGE = "openvino_telemetry"  # installed with openvino; its converter's usage reports


def import_openvino():
    """The `openvino` module, or a one-line error saying how to install it; its usage telemetry is off.

    Why off: `openvino.convert_model` reports usage to Google Analytics unless the user opted out (it turns
    its opt-in question off and takes a missing consent file for consent). It wrote a client id under
    ~/intel and forked this process, model and all, from a thread for each report. A kiosk works offline and
    calls out to no one. The converter uses its own no-op stand-in when `openvino_telemetry` cannot be
    imported, so it is made unimportable before openvino loads (not possible once someone else loaded it)."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault(TELEMETRY_PACKAGE, None)
    try:
        import openvino
    except ImportError as exc:
        raise ScinSearchError(
            f"--backend openvino needs the openvino package, which is not installed ({first_line(exc)}): "
            f"install scinsearch[openvino] ({INSTALL}), or use --backend torch"
        ) from None
    return openvino


_CORE_LOCK = threading.Lock()
_CORE: list = []  # the process's one Core, once made


def shared_core():
    """The process's one OpenVINO Core, made on first use and kept until the process ends.

    Why one: the CPU plugin a Core loads gives the thread that first uses it a new alternate signal stack,
    and when that Core is freed it puts back the stack it found and unmaps its own. Two Cores freed out of
    order left the main thread's alternate stack pointing at unmapped memory, and the next signal with a
    handler (Ctrl-C, SIGTERM, a child's exit under torch's DataLoader) killed the process with a SIGSEGV
    that printed nothing (tests/test_openvino_tower.py)."""
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(import_openvino().Core())
        return _CORE[0]


def check_request(device: str | None, precision: str) -> tuple[str, str]:
    """(device, precision) for `Embedder` to resolve, refusing what needs no model, before it is loaded:
    a missing package, fp16, a device other than the CPU ('auto' means the CPU here). bf16 becomes fp32
    where OpenVINO does not run it natively."""
    import_openvino()  # the package missing is refused first, in one line
    if precision == "fp16":
        raise ScinSearchError(
            "--backend openvino runs bf16 or fp32 on the CPU, not fp16: use --precision auto, bf16 or fp32"
        )
    device = "cpu" if device in ("auto", "", None) else device
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        return device, precision  # `resolve_device` refuses it with its own line
    if kind != "cpu":
        raise ScinSearchError(
            f"--backend openvino runs on the CPU only, not on {device!r}: use --device cpu (or auto), "
            f"or --backend torch for {kind}"
        )
    if precision in ("auto", "bf16") and not native_bf16(shared_core()):
        if precision == "bf16":
            log.warning("this CPU has no native bf16: OpenVINO runs fp32")
        precision = "fp32"
    return device, precision


def native_bf16(core) -> bool:
    """Does OpenVINO run bf16 natively on this CPU (AVX-512-BF16, AMX)?"""
    try:
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:
        return False


class CompiledTower:
    """One converted, compiled tower: torch tensor in (any batch size), float32 torch tensor out."""

    def __init__(self, compiled, hint: str):
        self.hint = hint  # the inference precision it was compiled for ("bf16" or "f32")
        self.request = compiled.create_infer_request()
        self.lock = threading.Lock()  # one infer request: one call at a time

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        array = inputs.detach().cpu()
        array = (array.float() if array.is_floating_point() else array).numpy()
        with self.lock:
            output = self.request.infer([array])[0]
            return torch.from_numpy(np.array(output, dtype=np.float32))  # a copy: the request reuses its buffer


class TowerModule(torch.nn.Module):
    """A tower function as the module `convert_model` traces; `owner` holds its weights."""

    def __init__(self, owner: torch.nn.Module, function):
        super().__init__()
        self.owner, self.function = owner, function

    def forward(self, inputs):
        return self.function(inputs)


def compile_tower(openvino, core, owner, function, example: torch.Tensor, hint: str, name: str) -> CompiledTower:
    """Convert `function` (a tower of the torch model `owner`, e.g. `Embedder.image_tower`) from the torch
    module and `example`, with the first (batch) dimension left free, and compile it for the CPU at `hint`
    precision ("bf16" or "f32"). A failure is one line."""
    shape = openvino.PartialShape([-1, *example.shape[1:]])
    kind = openvino.Type.f32 if example.is_floating_point() else openvino.Type.i64
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
            module = TowerModule(owner, function)
            converted = openvino.convert_model(module, example_input=example, input=[(shape, kind)])
        compiled = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    except Exception as exc:  # an op the converter does not know, ...: the way out is the torch backend
        raise ScinSearchError(
            f"OpenVINO could not convert the {name} tower ({type(exc).__name__}: {first_line(exc)}): "
            f"use --backend torch"
        ) from None
    return CompiledTower(compiled, hint)


class OpenVinoTowers:
    """An `Embedder`'s image tower, and its text tower where it has one, converted from the embedder's own
    torch functions (so before it hands them over) and compiled at its precision: `image(pixel_values)`
    and `text(input_ids)` return the raw features, as those functions do. SigLIP 2 NaFlex is refused."""

    def __init__(self, embedder):
        if embedder.preprocessor.kind != "fixed":
            raise ScinSearchError(
                f"--backend openvino cannot run {embedder.model_name}: a SigLIP 2 NaFlex model's patch count "
                f"changes from image to image; use --backend torch, or a fixed-resolution SigLIP 2"
            )
        openvino = import_openvino()
        core, started = shared_core(), time.perf_counter()
        self.hint = "bf16" if embedder.dtype == torch.bfloat16 else "f32"
        side = embedder.preprocessor.image_size
        pixels = torch.zeros((1, 3, side, side))
        self.image = compile_tower(openvino, core, embedder.model, embedder.image_tower, pixels, self.hint, "image")
        self.text = None
        if embedder.has_text_tower:
            ids = embedder.tokenize([QUERY_TEXT])
            self.text = compile_tower(openvino, core, embedder.model, embedder.text_tower, ids, self.hint, "text")
        self.note = f"OpenVINO {self.hint}: towers converted and compiled in {time.perf_counter() - started:.1f} s"
        log.info("%s", self.note)
