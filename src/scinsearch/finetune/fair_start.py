"""No signal, no change: the trained map replaces the identity (the frozen model) only when it beats it on
the validation cases by more than the validation's own noise, both scored the same fair way.

Early stopping picks the candidate epoch with the training head (learnt prototypes and temperature). That
is not a fair contest with epoch 0: its head was fitted on the fit rows (class means and a temperature
chosen on those same rows, each row sitting inside its own class mean), so with labels that carry no signal
the identity scores worse than a uniform guess and any later epoch "improves" by calibrating the head
(measured: best epoch 1 in 5 of 5 random-label runs). Here both maps get the same head, fitted only on the
fit rows and without that self-inclusion: prototypes are the class means of the mapped fit rows, and the
temperature is chosen on the fit rows scored against the class means of the *other* half of the fit cases
(two folds by case). The per-image difference of validation losses (identity - candidate) is averaged with
the case weights of the loss, and the candidate is kept only when that mean exceeds NOISE_MARGIN standard
errors (a case-clustered standard error: views of one case are not independent).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from scinsearch.finetune import loss as L
from scinsearch.vectors.neighbours import case_clusters

NOISE_MARGIN = 2.0  # standard errors the validation improvement must exceed (one-sided, about 2.3% by chance)
RULE = (
    "the tuned map is kept only if its validation loss beats the identity's by more than "
    f"{NOISE_MARGIN:g} case-clustered standard errors, both scored with class means of the fit rows and a "
    "temperature cross-fitted on two folds of fit cases"
)


def per_row_loss(cosines: torch.Tensor, temperature: float, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(cosines / temperature, dim=-1)).sum(dim=-1)


@torch.no_grad()
def fair_validation_losses(fit: tuple, held: tuple, folds: np.ndarray) -> np.ndarray:
    """Per-image validation losses of vectors already mapped: `fit` and `held` are (vectors, targets, weights)."""
    vectors, targets, weights = fit
    crossed = torch.zeros(len(vectors), targets.shape[1])
    for fold in (0, 1):
        scored, source = torch.from_numpy(folds == fold), torch.from_numpy(folds != fold)
        prototypes = L.class_means(vectors[source], targets[source], weights[source])
        crossed[scored] = vectors[scored] @ prototypes.T
    used = weights * (targets.sum(dim=-1) > 0)
    mass = used.sum().clamp_min(1e-12)
    fit_losses = [float((per_row_loss(crossed, t, targets) * used).sum() / mass) for t in L.TEMPERATURE_GRID]
    temperature = float(L.TEMPERATURE_GRID[int(np.argmin(fit_losses))])
    prototypes = L.class_means(vectors, targets, weights)
    return per_row_loss(held[0] @ prototypes.T, temperature, held[1]).numpy()


def choose_start(module, training, fit: tuple, held: tuple) -> dict:
    """Compare the trained `module` with the identity on the validation rows: {"kept": "tuned" or
    "identity", the two losses, the improvement and its standard error, the rule}."""
    fit_clusters = case_clusters([training.table.case_ids[r] for r in training.fit])
    folds = fit_clusters % 2
    with torch.no_grad():
        identity = fair_validation_losses(fit, held, folds)
        mapped = lambda data: (module(data[0]), *data[1:])  # noqa: E731
        tuned = fair_validation_losses(mapped(fit), mapped(held), folds)
    weights = (held[2] * (held[1].sum(dim=-1) > 0)).numpy().astype(np.float64)
    clusters = case_clusters([training.table.case_ids[r] for r in training.validation])
    improvement, error = clustered_mean(identity - tuned, weights, clusters)
    return {
        "kept": "tuned" if improvement > NOISE_MARGIN * error else "identity",
        "identity_loss": float(np.average(identity, weights=weights)),
        "tuned_loss": float(np.average(tuned, weights=weights)),
        "improvement": improvement,
        "standard_error": error,
        "rule": RULE,
    }


def clustered_mean(values: np.ndarray, weights: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """Weighted mean and its standard error with clusters (cases) as the independent units (a ratio
    estimator, linearised)."""
    totals = np.bincount(clusters, weights=weights * values)
    mass = np.bincount(clusters, weights=weights)
    mean = float(totals.sum() / mass.sum())
    n = int((mass > 0).sum())
    if n < 2:
        return mean, float("inf")
    residual = totals - mean * mass
    return mean, float(np.sqrt(n / (n - 1) * (residual**2).sum()) / mass.sum())
