"""The adapter: a small map learnt on the stored (frozen) image vectors, no images and no re-embedding.

    y = normalise(x + U V^T x)        V^T: dim -> rank (starts at zero), U: rank -> dim

A low-rank residual: it starts as the identity (the frozen model exactly), can only move away from it as
far as the validation loss rewards, and has few parameters (2 x 768 x 64 = 98k for SigLIP base), so a
few thousand labelled SCIN cases do not overfit it easily. Its output is a unit vector, so cosine search,
Qdrant and every evaluation work on adapted vectors unchanged. `rank >= dim` gives a full-rank residual.

Training (`train_adapter`): the train split only (`finetune.data`), the prototype loss (`finetune.loss`),
AdamW on mini-batches in a seeded order, the validation loss after every epoch, and the weights of the
best epoch kept (epoch 0 is the identity: an adapter that does not help stays the frozen model). Every
random draw comes from one seeded generator, so the same seed on the same data gives the same weights.

Written as a folder: `adapter.safetensors` (tensors `down`, `up`, `prototypes`) and `adapter.json`
(`finetune.record`). `Adapter.load` reads it back and refuses another model's or size's vectors.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scinsearch.errors import ScinSearchError
from scinsearch.evaluation.neighbours import PointTable
from scinsearch.finetune import loss as L
from scinsearch.finetune import record as R
from scinsearch.finetune.data import TrainingSet, choose_examples
from scinsearch.finetune.validation import validation_metrics
from scinsearch.helpers import atomic_path

WEIGHTS_FILE = "adapter.safetensors"
RECORD_FILE = "adapter.json"
FORMAT = "scinsearch-adapter"
# Text queries go through the adapter too. Measured on planted data (tests/test_finetune_adapter.py,
# docs/finetuning.md): condition texts in a cone of their own, pointing along their condition's image
# direction; text->image precision@20 against the adapted collection was 0.96 with the text through the
# adapter, 0.76 for the frozen model and 0.65 with the raw text (mean of 4 seeds). On real SigLIP it is
# measured by `scinsearch evaluate --adapter DIR --zero-shot`.
TEXT_THROUGH_ADAPTER = True


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    rank: int = 64
    temperature: float | None = None  # None: learnt, from the best fit to the frozen vectors
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 10
    validation_fraction: float = 0.15
    seed: int = 0

    def check(self) -> None:
        for name in ("rank", "batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ScinSearchError(f"--{name.replace('_', '-')} must be at least 1")
        if (
            (self.temperature is not None and not self.temperature > 0)
            or not self.learning_rate > 0
            or self.weight_decay < 0
        ):
            raise ScinSearchError("temperature and learning rate must be positive, weight decay not negative")


class ResidualMap(torch.nn.Module):
    """x -> normalise(x + up(down(x))). `down` starts at zero, so the map starts as the identity, and its
    gradient (up^T g x^T) lies in the span of the training image vectors: the map learns to read only
    directions images have. That is why text vectors can go through it (measured; see TEXT_THROUGH_ADAPTER):
    with `up` at zero instead, the untrained random reading of the text-only directions scrambled text
    queries (planted text->image precision fell below the frozen model's)."""

    def __init__(self, dim: int, rank: int, generator: torch.Generator | None = None):
        super().__init__()
        rank = min(rank, dim)
        self.down = torch.nn.Parameter(torch.zeros(rank, dim))
        self.up = torch.nn.Parameter(torch.randn(dim, rank, generator=generator) / math.sqrt(rank))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors + (vectors @ self.down.T) @ self.up.T, dim=-1)


@dataclasses.dataclass
class TrainedAdapter:
    module: ResidualMap
    head: L.PrototypeHead
    record: dict


def train_adapter(
    table: PointTable,
    *,
    model: str,
    collection: str,
    config: AdapterConfig = AdapterConfig(),
    store: str = "",
    log: Callable[[str], None] = lambda line: None,
) -> TrainedAdapter:
    """Learn the adapter from the stored vectors in `table` (train split only) and describe the run."""
    config.check()
    started = time.perf_counter()
    training = choose_examples(table, seed=config.seed, validation_fraction=config.validation_fraction)
    log(
        f"training on {len(training.fit)} images of {len(training.case_ids(training.fit))} train cases, "
        f"validating on {len(training.validation)} images of {len(training.case_ids(training.validation))} "
        f"cases, {len(training.conditions)} conditions"
    )
    generator = torch.Generator().manual_seed(config.seed)
    fit = tensors(training, training.fit)
    held = tensors(training, training.validation)
    if not (held[1].sum(dim=1) > 0).any():
        raise ScinSearchError("no validation case carries a condition seen in training: too few labelled cases")
    module = ResidualMap(table.vectors.shape[1], config.rank, generator)
    prototypes = L.class_means(*fit)
    temperature = config.temperature or L.calibrated_temperature(fit[0], fit[1], fit[2], prototypes)
    head = L.PrototypeHead(prototypes, temperature, learn_temperature=config.temperature is None)
    optimiser = torch.optim.AdamW(
        [
            {"params": module.parameters(), "weight_decay": config.weight_decay},
            {"params": head.parameters(), "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    best = (
        validation_loss(module, head, held),
        0,
        copy.deepcopy(module.state_dict()),
        copy.deepcopy(head.state_dict()),
    )
    history = [{"epoch": 0, "train_loss": None, "validation_loss": best[0]}]
    for epoch in range(1, config.max_epochs + 1):
        train_loss = run_epoch(module, head, optimiser, fit, config.batch_size, generator)
        held_loss = validation_loss(module, head, held)
        history.append({"epoch": epoch, "train_loss": train_loss, "validation_loss": held_loss})
        if held_loss < best[0] - 1e-6:
            best = (held_loss, epoch, copy.deepcopy(module.state_dict()), copy.deepcopy(head.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    module.load_state_dict(best[2])
    head.load_state_dict(best[3])
    log(f"best validation loss {best[0]:.4f} at epoch {best[1]} of {len(history) - 1}")
    frozen_vectors = table.vectors[np.concatenate([training.fit, training.validation])]
    metrics = {
        "frozen": validation_metrics(training, frozen_vectors),
        "adapted": validation_metrics(training, transform(module, frozen_vectors)),
    }
    record = {
        "format": FORMAT,
        "record_version": R.RECORD_VERSION,
        "method": "adapter",
        "created": R.now(),
        "base_model": model,
        "dim": int(table.vectors.shape[1]),
        "collection": collection,
        "store": store,
        "architecture": {
            "kind": "low-rank residual",
            "formula": "normalise(x + up @ down @ x)",
            "rank": int(module.down.shape[0]),
            "parameters": int(module.down.numel() + module.up.numel()),
        },
        "text_queries": "through the adapter" if TEXT_THROUGH_ADAPTER else "not transformed",
        "loss": L.describe(head, temperature, learnt=config.temperature is None),
        "hyperparameters": dataclasses.asdict(config),
        "seed": config.seed,
        "data": training.summary(),
        "conditions": training.conditions,
        "train_case_ids": training.case_ids(training.fit),
        "validation_case_ids": training.case_ids(training.validation),
        "training": {
            "epochs_run": len(history) - 1,
            "best_epoch": best[1],
            "best_validation_loss": best[0],
            "stopped": "early stopping" if len(history) - 1 < config.max_epochs else "max epochs",
            "seconds": round(time.perf_counter() - started, 2),
            "history": history,
        },
        "validation": metrics,
        "versions": R.library_versions(),
    }
    return TrainedAdapter(module, head, record)


def tensors(training: TrainingSet, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(vectors, soft targets, case weights) of some rows, as float32 tensors."""
    return (
        torch.from_numpy(np.ascontiguousarray(training.table.vectors[rows], dtype=np.float32)),
        torch.from_numpy(training.targets(rows)),
        torch.from_numpy(training.case_weights(rows)),
    )


def run_epoch(
    module: ResidualMap, head: L.PrototypeHead, optimiser, data, batch_size: int, generator: torch.Generator
) -> float:
    vectors, targets, weights = data
    order = torch.randperm(len(vectors), generator=generator)
    total, seen = 0.0, 0.0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        loss = L.soft_cross_entropy(head(module(vectors[rows])), targets[rows], weights[rows])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        mass = float(weights[rows].sum())
        total, seen = total + loss.item() * mass, seen + mass
    return total / max(seen, 1e-12)


@torch.no_grad()
def validation_loss(module: ResidualMap, head: L.PrototypeHead, data) -> float:
    vectors, targets, weights = data
    return float(L.soft_cross_entropy(head(module(vectors)), targets, weights))


@torch.no_grad()
def transform(module: ResidualMap, vectors: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Adapted unit vectors, float32, in chunks (bounded memory for any collection size)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) == 0:
        return vectors.reshape(0, module.up.shape[0])
    parts = [
        module(torch.from_numpy(np.ascontiguousarray(vectors[i : i + chunk]))).numpy()
        for i in range(0, len(vectors), chunk)
    ]
    return np.concatenate(parts).astype(np.float32)


def save_adapter(trained: TrainedAdapter, folder: Path) -> Path:
    """Write the weights (safetensors) and the record with the weights' SHA-256 (the adapter's id)."""
    from safetensors.torch import save_file

    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScinSearchError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    weights = folder / WEIGHTS_FILE
    with atomic_path(weights) as temporary:
        save_file(
            {
                "down": trained.module.down.detach().contiguous(),
                "up": trained.module.up.detach().contiguous(),
                "prototypes": trained.head.prototypes.detach().contiguous(),
            },
            str(temporary),
            metadata={"format": FORMAT},
        )
    trained.record["weights"] = {"file": WEIGHTS_FILE, "sha256": R.file_sha256(weights)}
    trained.record["adapter_id"] = trained.record["weights"]["sha256"]
    R.write_json(folder / RECORD_FILE, trained.record)
    return folder


class Adapter:
    """A trained adapter read back from its folder: `transform` maps vectors of its base model."""

    def __init__(self, folder: Path, record: dict, module: ResidualMap):
        self.folder = folder
        self.record = record
        self.module = module.eval()

    @classmethod
    def load(cls, folder: Path | str) -> Adapter:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ScinSearchError(f"adapter folder not found: {folder}")
        record = R.read_json(folder / RECORD_FILE, "adapter")
        if record.get("format") != FORMAT:
            raise ScinSearchError(f"{folder / RECORD_FILE} is not a scinsearch adapter record")
        R.require_fields(record, {"base_model": str, "dim": int, "adapter_id": str, "collection": str}, folder)
        weights = folder / WEIGHTS_FILE
        if not weights.is_file() or R.file_sha256(weights) != record["adapter_id"]:
            raise ScinSearchError(f"the weights in {folder} do not match its {RECORD_FILE} (missing or changed)")
        try:
            tensors_ = load_file(str(weights))
        except (SafetensorError, OSError) as exc:
            raise ScinSearchError(f"unreadable adapter weights {weights}: {exc}") from None
        down, up, dim = tensors_.get("down"), tensors_.get("up"), record["dim"]
        if (
            down is None
            or up is None
            or down.ndim != 2
            or down.shape[1] != dim
            or tuple(up.shape) != (dim, down.shape[0])
        ):
            raise ScinSearchError(f"adapter weights {weights} do not have the shapes of a {dim}-d adapter")
        module = ResidualMap(dim, down.shape[0])
        module.load_state_dict({"down": down.float(), "up": up.float()})
        return cls(folder, record, module)

    @property
    def id(self) -> str:
        return self.record["adapter_id"]

    @property
    def base_model(self) -> str:
        return self.record["base_model"]

    @property
    def dim(self) -> int:
        return int(self.record["dim"])

    def describe(self) -> str:
        return f"adapter {self.folder} ({self.id[:12]}, rank {self.module.down.shape[0]}, for {self.base_model})"

    def check_frozen_collection(self, info, collection: str) -> None:
        """Refuse a collection of another model or size, or one that already holds adapted vectors."""
        R.check_frozen_collection(self.record, info.model, info.dim, collection, info.extra, self.folder)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Image vectors (one, or a batch) of the base model -> adapted unit vectors."""
        vectors = np.asarray(vectors, dtype=np.float32)
        single = vectors.ndim == 1
        out = transform(self.module, vectors[None, :] if single else vectors)
        return out[0] if single else out

    def transform_text(self, vectors: np.ndarray) -> np.ndarray:
        """Text vectors of the base model, as text queries are searched with this adapter."""
        return self.transform(vectors) if TEXT_THROUGH_ADAPTER else np.asarray(vectors, dtype=np.float32)
