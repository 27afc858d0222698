"""The fine-tuning loss, shared by the adapter and LoRA: soft-target cross-entropy over cosine similarities
to learnable condition prototypes.

Why this loss, and not a (soft) supervised-contrastive one:
- SCIN's labels are soft (a weighted vote of dermatologists; the top weight has a median of about 0.55).
  Cross-entropy against the weighted label as a target distribution uses every weight as it is: an image
  labelled 0.67 Eczema / 0.33 Contact dermatitis is pulled towards both prototypes in that proportion.
- SCIN has a long tail of conditions. A contrastive loss needs positives of the same condition in the same
  batch, which rare conditions seldom have; a prototype per condition is present in every step, so rare
  conditions still get a gradient. The cost is O(batch x conditions), not O(batch^2).
- Cosine logits with a temperature keep the geometry the search uses (cosine on unit vectors): pulling an
  image towards its condition's direction and away from the others is what makes the nearest neighbours
  share its condition. Prototypes start at the class means of the frozen vectors, so step 0 is already a
  sensible nearest-class-mean classifier and the first validation loss measures the frozen model.
- The temperature is learnt, starting from the value that fits the frozen vectors best (a grid search on
  the fit part). With a fixed, badly calibrated temperature the loss can fall merely by squeezing every
  vector towards the others (a calibration gain, not a better space); a planted test without any condition
  signal found validation "improvements" for 45 epochs that way. Calibrated, the frozen model is judged
  at its best and only a better space lowers the validation loss.
- Each case counts once (weights 1 / its number of photos), as in the evaluation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

TEMPERATURE_GRID = np.geomspace(0.005, 1.0, 61)  # where the frozen vectors' best temperature is looked for
LOSS_NAME = "soft-target cross-entropy over cosine similarity to learnable condition prototypes"


class PrototypeHead(torch.nn.Module):
    """One learnable direction per condition; logits are cosine similarities divided by a temperature,
    itself learnt (as the log of its inverse) unless `learn_temperature` is False."""

    def __init__(self, prototypes: torch.Tensor, temperature: float, learn_temperature: bool = True):
        super().__init__()
        self.prototypes = torch.nn.Parameter(prototypes.detach().clone().float())
        self.log_scale = torch.nn.Parameter(torch.tensor(-math.log(temperature)), requires_grad=learn_temperature)

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.log_scale.detach()))

    def forward(self, unit_vectors: torch.Tensor) -> torch.Tensor:
        return unit_vectors @ F.normalize(self.prototypes, dim=-1).T * self.log_scale.exp()


def class_means(unit_vectors: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The target- and case-weighted mean vector of each condition: where its prototype starts."""
    sums = targets.T @ (unit_vectors * weights[:, None])
    return F.normalize(sums, dim=-1)


@torch.no_grad()
def calibrated_temperature(
    unit_vectors: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, prototypes: torch.Tensor
) -> float:
    """The temperature (from TEMPERATURE_GRID) with the lowest loss of these vectors against these prototypes."""
    cosines = unit_vectors @ F.normalize(prototypes, dim=-1).T
    losses = [float(soft_cross_entropy(cosines / t, targets, weights)) for t in TEMPERATURE_GRID]
    return float(TEMPERATURE_GRID[int(np.argmin(losses))])


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over rows of -sum_c target_c log softmax(logits)_c; rows without target mass count 0."""
    weights = weights * (targets.sum(dim=-1) > 0)
    per_row = -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    return (per_row * weights).sum() / weights.sum().clamp_min(1e-12)


def describe(head: PrototypeHead, start: float, learnt: bool) -> dict:
    return {
        "name": LOSS_NAME,
        "temperature": {
            "start": start,
            "end": head.temperature,
            "learnt": learnt,
            "start_from": "best fit to the frozen vectors" if learnt else "fixed by --temperature",
        },
        "targets": "weighted dermatologist labels, renormalised over the conditions of the fit part",
        "case_weighting": "1 / photos of the case",
        "prototype_init": "class means of the frozen vectors",
    }
