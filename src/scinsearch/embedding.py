"""SigLIP / SigLIP 2 through Hugging Face transformers: images and text to L2-normalised vectors.

The model and processor are loaded once (hub id or local folder; `HF_HUB_OFFLINE` works) and the
same `Embedder` serves indexing, photo queries and text queries, so both sides of a search are
preprocessed identically. Image preprocessing is split out (`Preprocessor`) because it runs in
decode worker processes, away from the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from scinsearch.compiling import (
    compile_function,
    compile_query_towers,
    compiler_available,
    resolve_compile,
)
from scinsearch.errors import ScinSearchError
from scinsearch.helpers import first_line
from scinsearch.preprocessing import Preprocessor, collate
from scinsearch.settings import Settings, check_backend

if TYPE_CHECKING:
    from scinsearch.store import CollectionInfo

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MIN_IMAGES = 1000  # "auto" compiles on the CPU from this many images: compiling costs ~10-20 s once
PREPROCESSING_MODES = ("fast", "exact")  # recorded with each collection (`CollectionInfo.preprocessing`)
log = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; an explicit device that is not there is an error."""
    if requested in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ScinSearchError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ScinSearchError(
                f"device {requested!r} was asked for, but CUDA is not available on this machine "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ScinSearchError(f"device {requested!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ScinSearchError(f"device {requested!r} was asked for, but MPS is not available")
    elif device.type != "cpu":
        raise ScinSearchError(f"unsupported device {requested!r}: use auto, cpu, cuda or cuda:N")
    return device


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16, AMX), where bf16 is 2-3x fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(requested: str, device: torch.device) -> torch.dtype:
    """'auto' -> half precision on GPU (bf16 where supported); on CPU bf16 where the CPU has it natively."""
    if requested not in ("auto", *PRECISIONS):
        raise ScinSearchError(f"unknown precision {requested!r}: use auto, fp32, bf16 or fp16")
    if requested != "auto":
        if device.type == "cpu" and requested == "fp16":
            raise ScinSearchError("fp16 is not supported on the CPU: use fp32 or bf16")
        return PRECISIONS[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else torch.float32


def load_pretrained(model_name: str, dtype: torch.dtype):
    """Model and processor from a hub id or a local folder, with a one-line error when neither works."""
    from transformers import AutoModel, AutoProcessor

    source = str(Path(model_name).expanduser()) if Path(model_name).expanduser().exists() else model_name
    try:
        model = AutoModel.from_pretrained(source, dtype=dtype)
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        from scinsearch.models import closest_models

        close = closest_models(model_name)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ScinSearchError(
            f"cannot load model {model_name!r}: not a local SigLIP folder, and not available "
            f"from the Hugging Face hub or its offline cache ({first_line(exc)}); "
            f"{hint}`scinsearch models` lists the known ones"
        ) from None
    if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
        raise ScinSearchError(f"model {model_name!r} is a {type(model).__name__}, not a SigLIP image-text model")
    return model, processor, source


def build_preprocessor(model, processor, source: str, fast: bool = False) -> Preprocessor:
    image_processor = processor.image_processor
    mean = tuple(float(v) for v in (image_processor.image_mean or (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in (image_processor.image_std or (0.5, 0.5, 0.5)))
    rescale = float(getattr(image_processor, "rescale_factor", 1 / 255) or 1 / 255)
    if model.config.model_type == "siglip2":
        return Preprocessor("naflex", 0, int(image_processor.resample), rescale, mean, std, source)
    size = image_processor.size
    side = int(size["height"]) if "height" in size else int(size.get("shortest_edge"))
    resample = getattr(image_processor, "resample", Image.Resampling.BICUBIC)
    return Preprocessor("fixed", side, int(resample), rescale, mean, std, source, fast=fast)


class Embedder:
    """A loaded SigLIP model: `embed_batch` for preprocessed image batches, `embed_images`,
    `embed_texts`. All outputs are float32, L2-normalised, shape (n, dim).

    `compile`: "auto" compiles the image tower with torch.compile (inductor, weights frozen) when
    `prepare()` is told a CPU run is long enough to repay the compile time; "on" / "off" force it.
    `fast_preprocessing`: decode/resize shortcuts within a tested tolerance of the processor."""

    def __init__(
        self,
        model_name: str,
        device: str = "auto",
        precision: str = "auto",
        compile: str | bool = "auto",
        fast_preprocessing: bool = True,
        files: str | None = None,
        backend: str = "torch",
    ):
        """`files`: load the weights from this folder, still naming the model `model_name` (a bundle's copy).
        `backend="openvino"`: both towers through OpenVINO on the CPU (`openvino_tower`), converted from fp32."""
        if check_backend(backend) == "openvino":  # what needs no model is refused before it loads
            from scinsearch.openvino_tower import OpenVinoTowers, check_request

            device, precision = check_request(device, precision)
        device_ = resolve_device(device)
        dtype = resolve_precision(precision, device_)
        model, processor, source = load_pretrained(files or model_name, dtype if backend == "torch" else torch.float32)
        self._setup(
            model,
            processor,
            build_preprocessor(model, processor, source, fast=fast_preprocessing),
            model_name,
            device_,
            dtype,
            compile if backend == "torch" else "off",
        )
        if backend == "openvino":
            self.towers, self.backend = OpenVinoTowers(self), backend

    @classmethod
    def from_settings(cls, settings: Settings, collection: CollectionInfo | None = None) -> Embedder:
        """The one way scinsearch loads `settings.model` (embed, search, serve, evaluate), on `settings.backend`.

        Embedding (no `collection`): preprocessing as `settings.exact_preprocessing` says. Querying a
        collection: the preprocessing its images were embedded with, whatever the settings say, so a query
        photo is prepared exactly as the stored photos were."""
        if collection is None:
            fast = not settings.exact_preprocessing
        elif collection.preprocessing in PREPROCESSING_MODES:
            fast = collection.preprocessing == "fast"
        else:
            raise ScinSearchError(
                f"the collection records an unknown preprocessing {collection.preprocessing!r} "
                f"(known: {', '.join(PREPROCESSING_MODES)}): embed it again with --recreate"
            )
        return cls(
            settings.model,
            device=settings.device,
            precision=settings.precision,
            compile=settings.compile,
            fast_preprocessing=fast,
            files=str(settings.model_files) if settings.model_files else None,
            backend=settings.backend,
        )

    @classmethod
    def from_model(
        cls,
        model,
        preprocessor: Preprocessor,
        model_name: str,
        device: str = "auto",
        precision: str = "auto",
        compile: str | bool = "auto",
        processor=None,
    ) -> Embedder:
        """Wrap a model built in memory (e.g. `models.random_vision_model`, for benchmarks). A vision-only
        model (SiglipVisionModel) embeds images; texts need a full SiglipModel and its processor."""
        embedder = cls.__new__(cls)
        device_ = resolve_device(device)
        dtype = resolve_precision(precision, device_)
        embedder._setup(model.to(dtype), processor, preprocessor, model_name, device_, dtype, compile)
        return embedder

    def _setup(
        self,
        model,
        processor,
        preprocessor: Preprocessor,
        model_name: str,
        device: torch.device,
        dtype: torch.dtype,
        compile: str | bool,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.model_name = model_name
        self.processor = processor
        self.model = model.to(self.device).eval()
        self.preprocessor = preprocessor
        config = model.config
        vision_config = getattr(config, "vision_config", config)
        self.dim = int(getattr(config, "projection_size", None) or vision_config.hidden_size)
        text_config = getattr(config, "text_config", None)
        self.text_length = int(getattr(text_config, "max_position_embeddings", 64) or 64)
        self.compile_choice = resolve_compile(compile)
        self._compiled = None  # the compiled image tower, once `prepare` or `prepare_queries` built it
        self._compiled_batch = 0
        self._compiled_text = None  # the compiled text tower for one text at a time (`prepare_queries`)
        self.compile_note = ""
        self.towers, self.backend = None, "torch"  # "openvino": `openvino_tower.OpenVinoTowers` runs both towers
        mean = torch.tensor(self.preprocessor.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocessor.std, device=self.device).view(1, 3, 1, 1)
        # (x * rescale - mean) / std  ==  x * scale + shift, one fused pass over the batch
        self._scale = (self.preprocessor.rescale / std).float()
        self._shift = (-mean / std).float()

    @property
    def precision_name(self) -> str:
        return {v: k for k, v in PRECISIONS.items()}[self.dtype]

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    @property
    def compiled_text(self) -> bool:
        return self._compiled_text is not None

    @property
    def has_text_tower(self) -> bool:
        return self.processor is not None and hasattr(self.model, "get_text_features")

    def describe(self) -> str:
        compiled = ", compiled" if self.compiled else ""
        backend = ", OpenVINO" if self.towers is not None else ""
        return f"{self.model_name} ({self.dim}-d) on {self.device} in {self.precision_name}{compiled}{backend}"

    def should_compile(self, images: int) -> bool:
        """The automatic choice: compile on the CPU for runs long enough to repay it (measured: bf16 +
        compile + frozen weights is 1.5x eager bf16 on a 2-core Zen 5), never for NaFlex inputs."""
        if self.compile_choice == "off" or self.preprocessor.kind != "fixed":
            return False
        if self.compile_choice == "on":
            return True
        return self.device.type == "cpu" and images >= COMPILE_MIN_IMAGES and compiler_available()

    def prepare(self, batch_size: int, images: int) -> str:
        """Get ready for a run of `images` images in batches of `batch_size`: compile when worth it
        (and warm it up, so its cost is paid here, once). Returns a line for the log, or ''."""
        if not self.should_compile(images) or (self.compiled and self._compiled_batch == batch_size):
            return ""
        started = time.perf_counter()
        try:
            compiled = self._compiled_image_tower(batch_size)
        except Exception as exc:  # no compiler, unsupported op, ...: eager is correct, only slower
            self.compile_choice = "off"
            self.compile_note = f"torch.compile failed, running eager ({type(exc).__name__}: {first_line(exc)})"
            log.warning(self.compile_note)
            return self.compile_note
        self._compiled, self._compiled_batch = compiled, batch_size
        seconds = time.perf_counter() - started
        self.compile_note = f"compiled the image tower for batches of {batch_size} in {seconds:.0f} s"
        return self.compile_note

    def _compiled_image_tower(self, batch_size: int):
        """The image tower compiled for one batch size, warmed up (the compile happens on the first call)."""
        compiled = compile_function(self.image_tower)
        side = self.preprocessor.image_size
        warm = torch.zeros((batch_size, side, side, 3), dtype=torch.uint8)
        with torch.inference_mode():
            compiled(self.model_inputs({"pixels": warm})["pixel_values"])
        return compiled

    def prepare_queries(self, choice: str = "on") -> str:
        """Compile the image and text towers for one query at a time (the kiosk's batch of 1) and warm
        them up, so the service pays the compile before it reports ready, not on the first patient.
        `choice` as `compiling.compile_query_towers`; returns a line for the log ('' for "off")."""
        image, text, note = compile_query_towers(self, choice)
        if image is not None:
            self._compiled, self._compiled_batch = image, 1
        self._compiled_text = text
        self.compile_note = note
        return note

    def model_inputs(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Move a collated batch to the device; uint8 pixels are normalised there (cheap on GPU,
        and 4x less to copy than floats). Pinned CPU tensors are copied without blocking."""
        non_blocking = self.device.type == "cuda"
        if "pixels" in batch:
            pixels = batch["pixels"]
            tensor = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.asarray(pixels))
            tensor = tensor.to(self.device, non_blocking=non_blocking).permute(0, 3, 1, 2).float()
            tensor = torch.addcmul(self._shift, tensor, self._scale)
            # contiguous: a compiled tower guards on strides, and a padded batch (torch.cat) is contiguous
            return {"pixel_values": tensor.to(self.dtype, memory_format=torch.contiguous_format)}
        inputs = {}
        for key, value in batch.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
            tensor = tensor.to(self.device, non_blocking=non_blocking)
            inputs[key] = tensor.to(self.dtype) if tensor.is_floating_point() else tensor
        return inputs

    def image_tower(self, pixel_values: torch.Tensor, **extra) -> torch.Tensor:
        """Raw image features: `get_image_features` of a SiglipModel, or a vision-only model's pooler output
        (or OpenVINO's conversion of this function)."""
        if self.towers is not None:
            return self.towers.image(pixel_values)
        if hasattr(self.model, "get_image_features"):
            output = self.model.get_image_features(pixel_values=pixel_values, **extra)
        else:
            output = self.model(pixel_values=pixel_values, **extra)
        return getattr(output, "pooler_output", output)

    @torch.inference_mode()
    def embed_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Embed one preprocessed batch (the output of `collate`)."""
        inputs = self.model_inputs(batch)
        if self._compiled is None or set(inputs) != {"pixel_values"}:
            return normalise(self.image_tower(**inputs))
        return normalise(self._run_compiled(inputs["pixel_values"]))

    def _run_compiled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The compiled tower has one static batch shape: pad a short (last) batch, split a long one."""
        size, outputs = self._compiled_batch, []
        for start in range(0, len(pixel_values), size):
            chunk = pixel_values[start : start + size]
            short = size - len(chunk)
            if short:
                chunk = torch.cat([chunk, chunk.new_zeros((short, *chunk.shape[1:]))])
            outputs.append(self._compiled(chunk)[: size - short])
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

    def embed_images(self, images: Sequence[Image.Image | bytes | Path]) -> np.ndarray:
        """Decode (EXIF-aware, any mode), preprocess and embed a few images, e.g. a query photo."""
        return self.embed_batch(collate([self.preprocessor.load(image) for image in images]))

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """SigLIP text as trained: lower-cased, padded to the full length (64), no attention mask."""
        if self.processor is None:
            raise ScinSearchError(f"{self.model_name} has no tokenizer: it embeds images only")
        tokens = self.processor.tokenizer(
            [t.lower() for t in texts],
            padding="max_length",
            max_length=self.text_length,
            truncation=True,
            return_tensors="pt",
        )
        return tokens["input_ids"]

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts or any(not t or not t.strip() for t in texts):
            raise ScinSearchError("empty text query")
        if not hasattr(self.model, "get_text_features"):
            raise ScinSearchError(f"{self.model_name} is an image-only model: it cannot embed text")
        input_ids = self.tokenize(texts).to(self.device)
        if self._compiled_text is not None and len(texts) == 1:  # compiled for one text (a query)
            return normalise(self._compiled_text(input_ids))
        return normalise(self.text_tower(input_ids))

    def text_tower(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Raw text features: `get_text_features(...).pooler_output` (no attention mask, as trained), or OpenVINO's."""
        if self.towers is not None:
            return self.towers.text(input_ids)
        output = self.model.get_text_features(input_ids=input_ids)
        return getattr(output, "pooler_output", output)

    def zero_shot_logits(self, image_vectors: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
        """SigLIP's pairwise logits, cos * exp(logit_scale) + logit_bias; sigmoid gives probabilities."""
        scale = float(self.model.logit_scale.detach().float().exp()) if hasattr(self.model, "logit_scale") else 1.0
        bias = float(self.model.logit_bias.detach().float()) if hasattr(self.model, "logit_bias") else 0.0
        return image_vectors @ text_vectors.T * scale + bias


def normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32)
