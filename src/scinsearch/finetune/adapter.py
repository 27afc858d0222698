"""The adapter: a small map learnt on the stored (frozen) image vectors, no images and no re-embedding.

    y = normalise(x + U V^T x)        V^T: dim -> rank (starts at zero), U: rank -> dim

A low-rank residual: it starts as the identity (the frozen model exactly), can only move away from it as
far as the validation loss rewards, and has few parameters (2 x 768 x 64 = 98k for SigLIP base), so a
few thousand labelled SCIN cases do not overfit it easily. Its output is a unit vector, so cosine search,
Qdrant and every evaluation work on adapted vectors unchanged. `rank >= dim` gives a full-rank residual.

Training (`train_adapter`): the train split only (`finetune.data`), the prototype loss (`finetune.loss`),
AdamW on mini-batches in a seeded order, the validation loss after every epoch, and the weights of the
best epoch kept as a candidate; it replaces epoch 0 (the identity) only when it beats it on validation
beyond validation's own noise, both scored fairly (`finetune.fair_start`): an adapter that does not help
stays the frozen model, exactly. Every
random draw comes from one seeded generator, so the same seed on the same data gives the same weights.

Written as a folder: `adapter.safetensors` (tensors `down`, `up`, `prototypes`) and `adapter.json`
(`finetune.record`). Reading it back and using it (`Adapter`, the map itself) is `vectors.adapter`:
search loads that without any training code.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from scinsearch.errors import ScinSearchError
from scinsearch.finetune import loss as L
from scinsearch.finetune import record as R
from scinsearch.finetune.config import AdapterConfig, improves, patience_spent
from scinsearch.finetune.data import TrainingSet, choose_examples
from scinsearch.finetune.fair_start import choose_start
from scinsearch.finetune.validation import validation_metrics
from scinsearch.helpers import atomic_path, file_sha256
from scinsearch.vectors.adapter import (
    FORMAT,
    RECORD_FILE,
    TEXT_THROUGH_ADAPTER,
    WEIGHTS_FILE,
    ResidualMap,
    record_identity,
    transform,
)
from scinsearch.vectors.neighbours import PointTable


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
    identity = best
    history = [{"epoch": 0, "train_loss": None, "validation_loss": best[0]}]
    for epoch in range(1, config.epochs + 1):
        train_loss = run_epoch(module, head, optimiser, fit, config.batch_size, generator)
        held_loss = validation_loss(module, head, held)
        history.append({"epoch": epoch, "train_loss": train_loss, "validation_loss": held_loss})
        if improves(held_loss, best[0]):
            best = (held_loss, epoch, copy.deepcopy(module.state_dict()), copy.deepcopy(head.state_dict()))
        elif patience_spent(epoch, best[1], config.patience):
            break
    candidate_epoch = best[1]
    module.load_state_dict(best[2])
    selection = choose_start(module, training, fit, held) if best[1] > 0 else None
    if selection is not None and selection["kept"] == "identity":
        best = identity  # no signal, no change: the frozen model, exactly
        module.load_state_dict(best[2])
    head.load_state_dict(best[3])
    log(f"best validation loss {best[0]:.4f} at epoch {best[1]} of {len(history) - 1}")
    if selection is not None:
        log(
            f"against the identity, scored fairly: improvement {selection['improvement']:+.4f} "
            f"(standard error {selection['standard_error']:.4f}): {selection['kept']} kept"
        )
    frozen_vectors = table.vectors[np.concatenate([training.fit, training.validation])]
    metrics = {
        "frozen": validation_metrics(training, frozen_vectors),
        "adapted": validation_metrics(training, transform(module, frozen_vectors)),
    }
    record = R.run_record(
        format=FORMAT,
        method="adapter",
        base_model=model,
        dim=table.vectors.shape[1],
        config=config,
        training=training,
        loss=L.describe(head, temperature, learnt=config.temperature is None),
        run={
            "epochs_run": len(history) - 1,
            "best_epoch": best[1],
            "best_validation_loss": best[0],
            "candidate_epoch": candidate_epoch,
            "selection": selection,
            "stopped": "early stopping" if len(history) - 1 < config.epochs else "max epochs",
            "seconds": round(time.perf_counter() - started, 2),
            "history": history,
        },
        validation=metrics,
        collection=collection,
        store=store,
        architecture={
            "kind": "low-rank residual",
            "formula": "normalise(x + up @ down @ x)",
            "rank": int(module.down.shape[0]),
            "parameters": int(module.down.numel() + module.up.numel()),
        },
        text_queries="through the adapter" if TEXT_THROUGH_ADAPTER else "not transformed",
        data=training.summary(),
    )
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


def save_adapter(trained: TrainedAdapter, folder: Path) -> Path:
    """Write the weights (safetensors) and the record, with the weights' SHA-256 and the adapter's id (a hash of
    the whole record, `record_identity`)."""
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
    trained.record["weights"] = {"file": WEIGHTS_FILE, "sha256": file_sha256(weights)}
    trained.record.pop("adapter_id", None)
    trained.record = json.loads(json.dumps(trained.record))  # as it reads back: the id hashes that
    trained.record["adapter_id"] = record_identity(trained.record)
    R.write_json(folder / RECORD_FILE, trained.record)
    return folder
