"""A LoRA run's resumable state: what `<out>/checkpoint/state.pt` holds, and the check that a checkpoint
belongs to the run asked for (same base model, hyper-parameters, seed and training cases)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from scinsearch.errors import ScinSearchError
from scinsearch.helpers import atomic_path

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
FORMAT = "scinsearch-lora-checkpoint"


@dataclasses.dataclass
class Checkpoint:
    marks: str  # fingerprint of model, settings and training cases
    step: int = 0  # optimiser steps taken
    epoch: int = 1  # the epoch in progress (1-based)
    batch: int = 0  # batches of that epoch already taken
    running: list = dataclasses.field(default_factory=list)  # this epoch's training losses
    history: list = dataclasses.field(default_factory=list)  # per finished epoch: losses
    best: dict = dataclasses.field(default_factory=dict)  # loss, epoch, lora, head of the best epoch
    stopped: str | None = None  # "early stopping", "epochs" (or "max steps", never saved)
    frozen_metrics: dict = dataclasses.field(default_factory=dict)
    start_temperature: float = 1.0  # where the learnt temperature started (the frozen vectors' best fit)
    failed: list = dataclasses.field(default_factory=list)  # (file, reason) of images that did not decode
    lora: dict = dataclasses.field(default_factory=dict)
    head: dict = dataclasses.field(default_factory=dict)
    optimiser: dict = dataclasses.field(default_factory=dict)
    rng: torch.Tensor | None = None


def fingerprint(model: str, config, training) -> str:
    """What must match for a checkpoint to be continued: anything else would silently mix two runs."""
    text = json.dumps(
        {
            "model": model,
            "config": dataclasses.asdict(config),
            "fit": training.case_ids(training.fit),
            "validation": training.case_ids(training.validation),
            "conditions": training.conditions,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def save_checkpoint(out_dir: Path, state: Checkpoint) -> Path:
    """Atomically (temporary file + rename): a run killed while saving keeps the previous checkpoint."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    with atomic_path(path) as temporary:
        torch.save({"format": FORMAT, **dataclasses.asdict(state)}, temporary)
    return path


def load_checkpoint(out_dir: Path, marks: str) -> Checkpoint:
    """The checkpoint to resume, or a one-line error (missing, unreadable, or another run's)."""
    path = Path(out_dir) / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        raise ScinSearchError(f"--resume: no checkpoint at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        raise ScinSearchError(f"--resume: unreadable checkpoint {path} ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
        raise ScinSearchError(f"--resume: {path} is not a scinsearch LoRA checkpoint")
    if data.get("marks") != marks:
        raise ScinSearchError(
            f"--resume: the checkpoint in {out_dir} was made with another model, other settings "
            f"or other training cases: use the same options, or another --out"
        )
    return Checkpoint(
        **{field.name: data[field.name] for field in dataclasses.fields(Checkpoint) if field.name in data}
    )
