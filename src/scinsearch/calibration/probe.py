"""The gradability probe: does this photo look like the ones dermatologists could judge?

SCIN records, per case, whether the first dermatologist found the image quality sufficient to judge
the skin condition (the payload's `gradable`). A linear probe on the stored vectors learns that:
L2-regularised logistic regression, fitted by Newton's method in numpy on standardised features, on
the train split minus a held-out part of its cases; then Platt scaling (a logistic fit of the outcome
on the probe's logit) on that held-out part, so that "probability 0.3" means about 3 in 10. The test
split is left for `scinsearch evaluate`, which reports the probe's AUC there.

A probe only makes sense for vectors of the model it was trained on: it records that model and the
vector size, and `from_dict` refuses any other.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from scinsearch.errors import ScinSearchError

L2_GRID = (0.1, 1.0, 10.0, 100.0)  # penalties tried; the held-out part's log-loss picks one
HELD_OUT_SHARE = 0.2  # of the train split's cases, for choosing the penalty and Platt scaling
MIN_PER_CLASS = 10  # gradable and not-gradable images needed in the train split to train at all
NEWTON_STEPS = 50
NEWTON_TOLERANCE = 1e-8


@dataclasses.dataclass
class GradabilityProbe:
    """p(gradable | vector) = sigmoid(platt_scale * (vector . weights + bias) + platt_shift)."""

    model: str
    dim: int
    weights: np.ndarray  # (dim,) float64, for raw (unstandardised) vectors
    bias: float
    platt_scale: float
    platt_shift: float
    l2: float
    training: dict = dataclasses.field(default_factory=dict)  # counts and held-out scores, for reports

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        return vectors @ self.weights + self.bias

    def probability(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated probabilities that each vector's photo is gradable, shape (n,)."""
        return sigmoid(self.platt_scale * self.logits(vectors) + self.platt_shift)

    def to_dict(self) -> dict:
        return {
            "kind": "logistic-regression+platt",
            "model": self.model,
            "dim": self.dim,
            "weights": [float(f"{w:.7g}") for w in self.weights],
            "bias": float(self.bias),
            "platt_scale": float(self.platt_scale),
            "platt_shift": float(self.platt_shift),
            "l2": self.l2,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, document: dict, model: str, dim: int) -> GradabilityProbe:
        """The probe in `document`, refused (one line) unless it was trained on vectors of `model` and `dim`."""
        try:
            probe = cls(
                str(document["model"]),
                int(document["dim"]),
                np.asarray(document["weights"], dtype=np.float64),
                float(document["bias"]),
                float(document["platt_scale"]),
                float(document["platt_shift"]),
                float(document.get("l2", 0.0)),
                dict(document.get("training") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScinSearchError(f"unreadable gradability probe ({exc}): run `scinsearch calibrate` again") from None
        if probe.model != model or probe.dim != dim:
            raise ScinSearchError(
                f"the gradability probe was trained on {probe.dim}-d vectors of {probe.model!r}, "
                f"not {dim}-d vectors of {model!r}: run `scinsearch calibrate` on this collection"
            )
        if probe.weights.shape != (dim,) or not np.all(np.isfinite(probe.weights)):
            raise ScinSearchError("the gradability probe's weights are damaged: run `scinsearch calibrate` again")
        return probe


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # stable for any z


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-12, 1 - 1e-12)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float, penalise: np.ndarray | None = None, start: np.ndarray | None = None
) -> np.ndarray:
    """Minimise sum(log-loss) + l2/2 * |w|^2 by Newton's method with step halving; x carries its own
    intercept column, which `penalise` (a 0/1 mask over columns) leaves unpenalised. The same objective as
    scikit-learn's LogisticRegression(C=1/l2); the tests compare the two. `start`: initial weights (a
    neighbouring penalty's solution makes it a few steps)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mask = np.ones(x.shape[1]) if penalise is None else np.asarray(penalise, dtype=np.float64)

    def objective(w: np.ndarray) -> float:
        z = x @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * np.sum(mask * w * w))

    w = np.zeros(x.shape[1]) if start is None else np.array(start, dtype=np.float64)
    current = objective(w)
    for _ in range(NEWTON_STEPS):
        p = sigmoid(x @ w)
        gradient = x.T @ (p - y) + l2 * mask * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(l2 * mask + 1e-10)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-6 and objective(w - size * step) > current:
            size /= 2
        w = w - size * step
        previous, current = current, objective(w)
        if previous - current <= NEWTON_TOLERANCE * max(1.0, abs(current)):
            break
    return w


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(scale, shift) of sigmoid(scale * logit + shift) fitted to held-out outcomes (a tiny ridge keeps a
    perfectly separated held-out part finite)."""
    x = np.column_stack([np.asarray(logits, dtype=np.float64), np.ones(len(logits))])
    scale, shift = fit_logistic(x, y, 1e-3, penalise=np.array([1.0, 0.0]))
    return float(scale), float(shift)


def held_out(case_keys: list[str], share: float = HELD_OUT_SHARE) -> np.ndarray:
    """True for rows whose case falls in the held-out part (a hash of the case key: stable across runs)."""

    def fraction(key: str) -> float:
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64

    return np.array([fraction(key) < share for key in case_keys], dtype=bool)


def train_probe(
    vectors: np.ndarray, gradable: np.ndarray, case_keys: list[str], model: str, l2_grid=L2_GRID
) -> GradabilityProbe:
    """Fit on the cases outside the held-out part, pick the penalty and Platt-scale on the held-out part.

    `case_keys`: one key per row naming its case group (views of one case share it), so no case is on
    both sides. Raises `ScinSearchError` when there is too little of either class to learn from."""
    vectors, y = np.asarray(vectors, dtype=np.float64), np.asarray(gradable, dtype=bool)
    counts = {"gradable": int(y.sum()), "not_gradable": int((~y).sum())}
    if min(counts.values()) < MIN_PER_CLASS:
        raise ScinSearchError(
            f"too few images to learn gradability from: {counts['gradable']} gradable and "
            f"{counts['not_gradable']} not gradable in the train split (at least {MIN_PER_CLASS} of each needed)"
        )
    calibration = held_out(case_keys)
    fit = ~calibration
    if len(set(y[fit])) < 2 or len(set(y[calibration])) < 2:
        raise ScinSearchError("the train split's held-out part lacks gradable or not-gradable images: too few cases")
    mean, scale = vectors[fit].mean(axis=0), vectors[fit].std(axis=0)
    scale[scale < 1e-12] = 1.0
    standard = np.column_stack([(vectors - mean) / scale, np.ones(len(vectors))])
    penalise = np.r_[np.ones(vectors.shape[1]), 0.0]
    fits: dict[float, np.ndarray] = {}
    previous = None
    for l2 in sorted(l2_grid, reverse=True):  # strongest penalty first; each warm-starts the next
        previous = fits[l2] = fit_logistic(standard[fit], y[fit], l2, penalise, start=previous)
    losses = {l2: log_loss(sigmoid(standard[calibration] @ w), y[calibration]) for l2, w in fits.items()}
    l2 = min(l2_grid, key=lambda value: (losses[value], -value))  # ties: the stronger penalty
    w = fits[l2]
    weights, bias = w[:-1] / scale, float(w[-1] - np.sum(w[:-1] * mean / scale))  # fold the standardisation in
    platt_scale, platt_shift = fit_platt(vectors[calibration] @ weights + bias, y[calibration])
    probe = GradabilityProbe(model, vectors.shape[1], weights, bias, platt_scale, platt_shift, l2)
    from scinsearch.vectors.metrics import weighted_auc

    held = probe.probability(vectors[calibration])
    probe.training = {
        "images": len(y),
        **counts,
        "held_out_images": int(calibration.sum()),
        "held_out_auc": weighted_auc(held, y[calibration]),
        "held_out_log_loss": log_loss(held, y[calibration]),
        "l2_log_loss": {str(k): v for k, v in losses.items()},
    }
    return probe
