"""Metric arithmetic: pure functions on rankings, labels and scores, small enough to check by hand.

Every per-query metric is an array of 0/1 values (NaN where it is undefined for that query), so one
mean and one bootstrap serve them all. AUC is rank-based (Mann-Whitney, ties count one half) and
takes sample weights, which is how the bootstrap reweights it without re-sorting.

Bootstrap intervals resample *cases*, not images (a cluster bootstrap): the 1-3 views of one case are
not independent evidence, and resampling images would make the intervals too narrow.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from statistics import NormalDist

import numpy as np

MIN_BOOTSTRAP_CASES = 10  # below this a case bootstrap has too little to resample: Wilson intervals, no verdicts
TOO_FEW_CASES = "too few cases"


def top_k_correct(rankings: Sequence[Sequence[str]], truths: Sequence[str | None], k: int) -> np.ndarray:
    """1 when the true condition is among the first k predictions."""
    return np.array([float(t is not None and t in list(r)[:k]) for r, t in zip(rankings, truths)])


def hit_at_k(rankings: Sequence[Sequence[str]], label_sets: Sequence[Iterable[str]], k: int) -> np.ndarray:
    """1 when any of the first k predictions is among *any* dermatologist label of the query (soft labels:
    SCIN's top weight has a median of 0.55, so the argmax alone understates agreement)."""
    return np.array([float(bool(set(list(r)[:k]) & set(labels))) for r, labels in zip(rankings, label_sets)])


def neighbour_recall(
    neighbour_conditions: Sequence[Sequence[str | None]], truths: Sequence[str | None], k: int
) -> np.ndarray:
    """recall@k: 1 when at least one of the first k neighbours has the query's primary condition."""
    return np.array([float(t is not None and t in list(n)[:k]) for n, t in zip(neighbour_conditions, truths)])


def majority_vote(conditions: Sequence[str | None], similarities: Sequence[float]) -> list[str]:
    """Plain kNN: conditions ranked by number of votes; ties go to the larger summed similarity, then name."""
    votes: Counter = Counter()
    weight: dict[str, float] = {}
    for condition, similarity in zip(conditions, similarities):
        if condition is None:
            continue
        votes[condition] += 1
        similarity = float(similarity)
        weight[condition] = weight.get(condition, 0.0) + (similarity if math.isfinite(similarity) else 0.0)
    return sorted(votes, key=lambda c: (-votes[c], -weight[c], c))


def vote_shares(conditions: Sequence[str | None]) -> dict[str, float]:
    """Fraction of the neighbours voting for each condition (the plain kNN score used for its AUC)."""
    present = [c for c in conditions if c is not None]
    return {c: n / len(present) for c, n in Counter(present).items()} if present else {}


def frequency_ranking(labels: Iterable[str | None]) -> list[str]:
    """Conditions from most to least frequent (ties by name): the majority-class predictor."""
    counts = Counter(label for label in labels if label is not None)
    return sorted(counts, key=lambda c: (-counts[c], c))


def most_common_conditions(label_sets: Sequence[Iterable[str]], n: int) -> list[str]:
    """The n conditions present in the most label sets (ties by name): the AUC classes."""
    counts = Counter(c for labels in label_sets for c in set(labels))
    return sorted(counts, key=lambda c: (-counts[c], c))[:n]


def score_matrix(scores: Sequence[dict[str, float]], conditions: Sequence[str]) -> np.ndarray:
    """(queries, conditions) of per-condition scores; a condition a query did not score is 0."""
    return np.array([[s.get(c, 0.0) for c in conditions] for s in scores], dtype=np.float64).reshape(
        len(scores), len(conditions)
    )


def positive_matrix(label_sets: Sequence[Iterable[str]], conditions: Sequence[str]) -> np.ndarray:
    """(queries, conditions) booleans: the condition is among the query's dermatologist labels."""
    return np.array([[c in set(labels) for c in conditions] for labels in label_sets], dtype=bool).reshape(
        len(label_sets), len(conditions)
    )


def weighted_auc(scores: np.ndarray, positives: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | float:
    """ROC AUC = P(score of a positive > score of a negative) + 1/2 P(tie), with per-sample weights.

    `weights` may be (n,) or (resamples, n); the result is a float or one AUC per resample, NaN where
    the weighted positives or negatives are empty."""
    scores, positives = np.asarray(scores, dtype=np.float64), np.asarray(positives, dtype=bool)
    w = np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(scores) == 0:  # no samples (an empty subgroup): undefined, like one class
        empty = np.full(w.shape[:-1], np.nan)
        return float(empty) if empty.ndim == 0 else empty
    order = np.argsort(scores, kind="mergesort")
    sorted_scores, pos, w = scores[order], positives[order], w[..., order]
    new_group = np.r_[True, np.diff(sorted_scores) != 0]
    group = np.cumsum(new_group) - 1  # tie group of each sorted sample
    group_end = np.r_[np.flatnonzero(new_group)[1:], len(sorted_scores)] - 1
    neg_through = np.cumsum(w * ~pos, axis=-1)[..., group_end]  # negative weight up to each group's end
    neg_before = np.concatenate([np.zeros(neg_through.shape[:-1] + (1,)), neg_through[..., :-1]], axis=-1)
    positive_items = np.flatnonzero(pos)
    g, w_pos = group[positive_items], w[..., positive_items]
    below_or_tied = neg_before[..., g] + 0.5 * (neg_through[..., g] - neg_before[..., g])
    numerator = (w_pos * below_or_tied).sum(axis=-1)
    total_pos = w_pos.sum(axis=-1)
    denominator = total_pos * (w.sum(axis=-1) - total_pos)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)
    return float(auc) if np.ndim(auc) == 0 else auc


def macro_auc(
    scores: np.ndarray, positives: np.ndarray, weights: np.ndarray | None = None, classes: Sequence[bool] | None = None
) -> tuple[np.ndarray | float, list]:
    """Mean one-vs-rest AUC over the classes (columns) that have both positives and negatives, and the
    per-class AUCs (NaN when undefined). `classes` fixes which columns count (for resamples: those defined
    in the full sample, so a resample that lacks a class does not change what is averaged)."""
    per_class = [weighted_auc(scores[:, j], positives[:, j], weights) for j in range(scores.shape[1])]
    if classes is None:
        classes = [bool(np.isfinite(a).any()) for a in per_class]
    chosen = [np.asarray(a, dtype=np.float64) for a, keep in zip(per_class, classes) if keep]
    if not chosen:
        empty = np.full(() if weights is None or np.ndim(weights) == 1 else (len(weights),), np.nan)
        return (float(empty) if empty.ndim == 0 else empty), per_class
    with warnings.catch_warnings():  # a resample without positives for a class: NaN, skipped, expected
        warnings.simplefilter("ignore", RuntimeWarning)
        macro = np.nanmean(np.stack(chosen), axis=0)
    return (float(macro) if np.ndim(macro) == 0 else macro), per_class


def cluster_weights(clusters: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) multiplicities: draw as many clusters (cases) as there are, with replacement;
    each sample's weight is how often its cluster was drawn."""
    _, dense = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(dense.max()) + 1 if len(dense) else 0
    if n_clusters == 0 or resamples <= 0:
        return np.zeros((max(resamples, 0), len(dense)), dtype=np.float32)
    drawn = np.random.default_rng(seed).integers(0, n_clusters, size=(resamples, n_clusters))
    flat = (drawn + np.arange(resamples)[:, None] * n_clusters).ravel()
    counts = np.bincount(flat, minlength=resamples * n_clusters).reshape(resamples, n_clusters)
    return counts[:, dense].astype(np.float32)


def interval(samples: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Percentile interval of bootstrap statistics; None when there are none."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))]


def defined_mean(values: np.ndarray) -> float | None:
    """Mean over the queries where the metric is defined (not NaN); None when it is nowhere defined."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else None


def resampled_mean(values: np.ndarray, weights: np.ndarray) -> tuple[float | None, np.ndarray]:
    """Mean of the defined (non-NaN) values, and that mean under each resample of `weights`, each with its
    own denominator (the defined values the resample drew; NaN for a resample that drew none)."""
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    if not defined.any():
        return None, np.full(len(weights), np.nan)
    w = weights[:, defined].astype(np.float64)
    totals = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        resampled = (w @ values[defined]) / np.where(totals > 0, totals, np.nan)
    return float(values[defined].mean()), resampled


def mean_with_interval(values: np.ndarray, weights: np.ndarray) -> tuple[float | None, list[float] | None]:
    """Mean of the defined (non-NaN) values and its bootstrap interval under resample `weights`."""
    value, resampled = resampled_mean(values, weights)
    return value, (None if value is None else interval(resampled))


def wilson_interval(successes: float, trials: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval of a proportion: never zero-width, sensible for a handful of trials (where a
    bootstrap of 2 cases all right gives [1, 1])."""
    if trials <= 0:
        return None
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap_p_value(value: float, resampled: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from the bootstrap standard error (normal approximation).

    Not the share of resamples beyond 0: with 1000 resamples that cannot fall below 1/1000, far above the
    Holm threshold of a family of a few hundred comparisons (0.05 / 300), so nothing in it could ever pass."""
    samples = np.asarray(resampled, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    spread = float(samples.std(ddof=1)) if samples.size > 1 else 0.0
    if spread <= 0:
        return 1.0 if value == 0 else 0.0
    return math.erfc(abs(value) / spread / math.sqrt(2))


def holm_levels(p_values: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down procedure: (adjusted p-values, the level each comparison is tested at).

    Sorted by p, the r-th of m is tested at alpha / (m - r + 1) until the first that fails; it and every
    later one are held to the level of that first failure, so "its interval at its level excludes 0" is
    exactly "Holm rejects it" (adjusted p < alpha)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adjusted, levels = np.empty(m), np.empty(m)
    running, failed_level = 0.0, None
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
        level = alpha / (m - rank)
        if failed_level is None and p[i] >= level:
            failed_level = level
        levels[i] = failed_level if failed_level is not None else level
    return adjusted, levels


def normal_interval(value: float, resampled: np.ndarray, level: float) -> list[float] | None:
    """value +- z(level) x bootstrap standard error: the interval whose exclusion of 0 is `bootstrap_p_value`
    < 1 - level."""
    samples = np.asarray(resampled, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        return None
    half = NormalDist().inv_cdf(1 - (1 - level) / 2) * float(samples.std(ddof=1))
    return [value - half, value + half]


def macro_auc_with_interval(
    scores: np.ndarray, positives: np.ndarray, weights: np.ndarray
) -> tuple[float | None, list[float] | None, list[float]]:
    """Macro AUC, its bootstrap interval, and the per-class AUCs of the full sample."""
    macro, per_class = macro_auc(scores, positives)
    if np.isnan(macro):
        return None, None, per_class
    classes = [not np.isnan(a) for a in per_class]
    resampled = macro_auc(scores, positives, weights, classes=classes)[0] if len(weights) else np.zeros(0)
    return float(macro), interval(resampled), per_class
