"""One config for both fine-tuning methods (`FinetuneConfig`), their defaults, and the early-stopping rule.

The adapter and LoRA share the hyper-parameters of the prototype loss and the training loop (rank,
epochs, patience, batch size, learning rate, temperature, weight decay, validation share, seed); each
method's subclass sets its own defaults and adds what only it has. The CLI reads its defaults from here
(`commands/finetune_cmds.py`; tests/test_finetune_adapter.py ties them), so a default is written once.
"""

from __future__ import annotations

import dataclasses

from scinsearch.errors import ScinSearchError

MIN_IMPROVEMENT = 1e-6  # a validation loss must beat the best by more than this to count as better


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    rank: int = 64
    epochs: int = 200  # the most epochs; early stopping usually ends the run sooner
    patience: int = 10  # epochs without a better validation loss before stopping
    batch_size: int = 256
    learning_rate: float = 1e-3
    temperature: float | None = None  # None: learnt, from the best fit to the frozen vectors
    weight_decay: float = 1e-4
    validation_fraction: float = 0.15
    seed: int = 0

    def check(self) -> None:
        for name in ("rank", "batch_size", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ScinSearchError(f"--{name.replace('_', '-')} must be at least 1")
        if (
            (self.temperature is not None and not self.temperature > 0)
            or not self.learning_rate > 0
            or self.weight_decay < 0
        ):
            raise ScinSearchError("temperature and learning rate must be positive, weight decay not negative")


@dataclasses.dataclass(frozen=True)
class AdapterConfig(FinetuneConfig):
    """The adapter on the stored vectors: cheap epochs, so many of them and a patient stop."""


@dataclasses.dataclass(frozen=True)
class LoraConfig(FinetuneConfig):
    """LoRA of the vision tower: expensive epochs on images, a smaller rank and learning rate."""

    rank: int = 16
    epochs: int = 5
    patience: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-4
    alpha: int = 32
    dropout: float = 0.0
    prototype_learning_rate: float = 1e-3

    def check(self) -> None:
        super().check()
        if self.alpha < 1:
            raise ScinSearchError("--alpha must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ScinSearchError("dropout must be in [0, 1)")


CONFIGS = {"adapter": AdapterConfig, "lora": LoraConfig}


def improves(loss: float, best_loss: float) -> bool:
    """Early stopping, part one: is this epoch's validation loss a new best?"""
    return loss < best_loss - MIN_IMPROVEMENT


def patience_spent(epoch: int, best_epoch: int, patience: int) -> bool:
    """Early stopping, part two: `patience` epochs have passed since the best one."""
    return epoch - best_epoch >= patience
