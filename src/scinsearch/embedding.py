"""SigLIP / SigLIP 2 through Hugging Face transformers: images and text to L2-normalised vectors.

The model and processor are loaded once (hub id or local folder; `HF_HUB_OFFLINE` works) and the
same `Embedder` serves indexing, photo queries and text queries, so both sides of a search are
preprocessed identically. Image preprocessing is split out (`Preprocessor`) because it runs in
decode worker processes, away from the model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from scinsearch.errors import ScinSearchError
from scinsearch.images import open_rgb, resize_square

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """Picklable image preprocessing matching the checkpoint's processor.

    Fixed-resolution SigLIP: squash-resize to a square with the processor's resample filter, kept as
    uint8 (4x less to pass between processes) and normalised on the model side. SigLIP 2 NaFlex:
    the checkpoint's own image processor (patches + mask + shapes), loaded lazily in each worker."""

    kind: str  # "fixed" or "naflex"
    image_size: int
    resample: int
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str = ""  # model id or folder, for the NaFlex processor

    def __call__(self, image: Image.Image) -> dict[str, np.ndarray]:
        if self.kind == "fixed":
            return {"pixels": resize_square(image, self.image_size, self.resample)}
        outputs = naflex_processor(self.source)(images=[image], return_tensors="np")
        return {key: np.asarray(value[0]) for key, value in outputs.items()}


_NAFLEX_CACHE: dict[str, object] = {}


def naflex_processor(source: str):
    if source not in _NAFLEX_CACHE:
        from transformers import AutoImageProcessor
        _NAFLEX_CACHE[source] = AutoImageProcessor.from_pretrained(source)
    return _NAFLEX_CACHE[source]


def collate(items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-image preprocessing outputs into one batch."""
    return {key: np.stack([item[key] for item in items]) for key in items[0]}


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
            raise ScinSearchError(f"device {requested!r} was asked for, but CUDA is not available on this machine "
                                  f"(torch {torch.__version__}); use --device cpu")
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
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScinSearchError(f"cannot load model {model_name!r}: not a local SigLIP folder, and not available "
                              f"from the Hugging Face hub or its offline cache ({first_line})") from None
    if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
        raise ScinSearchError(f"model {model_name!r} is a {type(model).__name__}, not a SigLIP image-text model")
    return model, processor, source


def build_preprocessor(model, processor, source: str) -> Preprocessor:
    image_processor = processor.image_processor
    mean = tuple(float(v) for v in (image_processor.image_mean or (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in (image_processor.image_std or (0.5, 0.5, 0.5)))
    rescale = float(getattr(image_processor, "rescale_factor", 1 / 255) or 1 / 255)
    if model.config.model_type == "siglip2":
        return Preprocessor("naflex", 0, int(image_processor.resample), rescale, mean, std, source)
    size = image_processor.size
    side = int(size["height"]) if "height" in size else int(size.get("shortest_edge"))
    resample = getattr(image_processor, "resample", Image.Resampling.BICUBIC)
    return Preprocessor("fixed", side, int(resample), rescale, mean, std, source)


class Embedder:
    """A loaded SigLIP model: `embed_batch` for preprocessed image batches, `embed_images`,
    `embed_texts`. All outputs are float32, L2-normalised, shape (n, dim)."""

    def __init__(self, model_name: str, device: str = "auto", precision: str = "auto"):
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.model_name = model_name
        model, self.processor, source = load_pretrained(model_name, self.dtype)
        self.model = model.to(self.device).eval()
        self.preprocessor = build_preprocessor(model, self.processor, source)
        self.dim = int(getattr(model.config, "projection_size", None) or model.config.vision_config.hidden_size)
        text_config = model.config.text_config
        self.text_length = int(getattr(text_config, "max_position_embeddings", 64) or 64)
        self._mean = torch.tensor(self.preprocessor.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.preprocessor.std, device=self.device).view(1, 3, 1, 1)

    @property
    def precision_name(self) -> str:
        return {v: k for k, v in PRECISIONS.items()}[self.dtype]

    def describe(self) -> str:
        return f"{self.model_name} ({self.dim}-d) on {self.device} in {self.precision_name}"

    def model_inputs(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Move a collated batch to the device; uint8 pixels are normalised there (cheap on GPU)."""
        non_blocking = self.device.type == "cuda"
        if "pixels" in batch:
            pixels = batch["pixels"]
            tensor = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(pixels)
            tensor = tensor.to(self.device, non_blocking=non_blocking).permute(0, 3, 1, 2).float()
            tensor = (tensor * self.preprocessor.rescale - self._mean) / self._std
            return {"pixel_values": tensor.to(self.dtype)}
        inputs = {}
        for key, value in batch.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
            tensor = tensor.to(self.device, non_blocking=non_blocking)
            inputs[key] = tensor.to(self.dtype) if tensor.is_floating_point() else tensor
        return inputs

    @torch.inference_mode()
    def embed_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Embed one preprocessed batch (the output of `collate`)."""
        output = self.model.get_image_features(**self.model_inputs(batch))
        return normalise(getattr(output, "pooler_output", output))

    def embed_images(self, images: Sequence[Image.Image | bytes | Path]) -> np.ndarray:
        """Decode (EXIF-aware, any mode), preprocess and embed a few images, e.g. a query photo."""
        return self.embed_batch(collate([self.preprocessor(open_rgb(image)) for image in images]))

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """SigLIP text as trained: lower-cased, padded to the full length (64), no attention mask."""
        tokens = self.processor.tokenizer([t.lower() for t in texts], padding="max_length",
                                          max_length=self.text_length, truncation=True, return_tensors="pt")
        return tokens["input_ids"]

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts or any(not t or not t.strip() for t in texts):
            raise ScinSearchError("empty text query")
        output = self.model.get_text_features(input_ids=self.tokenize(texts).to(self.device))
        return normalise(getattr(output, "pooler_output", output))

    def zero_shot_logits(self, image_vectors: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
        """SigLIP's pairwise logits, cos * exp(logit_scale) + logit_bias; sigmoid gives probabilities."""
        scale = float(self.model.logit_scale.float().exp()) if hasattr(self.model, "logit_scale") else 1.0
        bias = float(self.model.logit_bias.float()) if hasattr(self.model, "logit_bias") else 0.0
        return image_vectors @ text_vectors.T * scale + bias


def normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32)
