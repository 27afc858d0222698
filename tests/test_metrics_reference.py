"""The evaluation metrics against scikit-learn (a test dependency only), on random and degenerate inputs.

`weighted_auc` / `macro_auc` against `sklearn.metrics.roc_auc_score` with `sample_weight` (the way the
cluster bootstrap reweights them: each sample weighted by how often its case was drawn), `top_k_correct`
against `top_k_accuracy_score`, and `neighbour_recall` against `recall_score` (per-sample recall of the
query's label among the conditions of its first k neighbours).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from scinsearch.vectors import metrics as m

sklearn_metrics = pytest.importorskip("sklearn.metrics")
roc_auc_score = sklearn_metrics.roc_auc_score


def sklearn_auc(scores, positives, weights=None) -> float:
    """sklearn's AUC; NaN where it is undefined (one class left once zero-weight samples are dropped)."""
    scores, positives = np.asarray(scores), np.asarray(positives, dtype=bool)
    keep = np.ones(len(scores), bool) if weights is None else np.asarray(weights) > 0
    if len(set(positives[keep].tolist())) < 2:
        return float("nan")
    weight = None if weights is None else np.asarray(weights, dtype=np.float64)[keep]
    return float(roc_auc_score(positives[keep], scores[keep], sample_weight=weight))


def sklearn_one_class_auc(positives, scores) -> float:
    """sklearn calls AUC undefined with one class: an error in older releases, NaN and a warning now."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(roc_auc_score(positives, scores))
        except ValueError:
            return float("nan")


def random_case(seed: int, n: int = 60, classes: int = 5, levels: int | None = None):
    """Scores (optionally on a few levels, so many ties), multi-label positives, case clusters."""
    rng = np.random.default_rng(seed)
    scores = rng.random((n, classes))
    if levels:
        scores = np.round(scores * (levels - 1)) / (levels - 1)
    positives = rng.random((n, classes)) < rng.uniform(0.1, 0.6, classes)
    clusters = rng.integers(0, n // 2, n)
    return scores, positives, clusters


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 4], ids=["continuous", "ties"])
def test_auc_equals_sklearn_with_and_without_sample_weights(seed, levels):
    scores, positives, clusters = random_case(seed, levels=levels)
    weights = np.random.default_rng(seed + 100).integers(0, 4, len(scores)).astype(float)
    for j in range(scores.shape[1]):
        assert m.weighted_auc(scores[:, j], positives[:, j]) == pytest.approx(
            sklearn_auc(scores[:, j], positives[:, j])
        )
        assert m.weighted_auc(scores[:, j], positives[:, j], weights) == pytest.approx(
            sklearn_auc(scores[:, j], positives[:, j], weights), nan_ok=True
        )


@pytest.mark.parametrize("seed", range(4))
def test_bootstrap_resample_weights_give_sklearns_auc_of_each_resample(seed):
    """The (resamples, n) weights of the cluster bootstrap: one AUC per resample, each sklearn's."""
    scores, positives, clusters = random_case(seed, levels=6)
    weights = m.cluster_weights(clusters, resamples=25, seed=seed)
    for j in range(scores.shape[1]):
        ours = m.weighted_auc(scores[:, j], positives[:, j], weights)
        theirs = [sklearn_auc(scores[:, j], positives[:, j], w) for w in weights]
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def test_a_weight_is_a_repeated_sample():
    """What the bootstrap relies on: weight 3 is the sample drawn three times (sklearn on repeated rows)."""
    scores, positives, clusters = random_case(7, levels=5)
    weights = m.cluster_weights(clusters, resamples=1, seed=3)[0].astype(int)
    repeated = np.repeat(np.arange(len(scores)), weights)
    for j in range(scores.shape[1]):
        assert m.weighted_auc(scores[:, j], positives[:, j], weights) == pytest.approx(
            roc_auc_score(positives[repeated, j], scores[repeated, j])
        )


@pytest.mark.parametrize("seed", range(4))
def test_macro_and_per_class_auc_equal_sklearn(seed):
    scores, positives, _ = random_case(seed, classes=6, levels=5)
    positives[:, 4] = False  # a class without positives: undefined, not averaged
    positives[:, 5] = True  # a class without negatives: the same
    macro, per_class = m.macro_auc(scores, positives)
    defined = [0, 1, 2, 3]
    theirs = roc_auc_score(positives[:, defined], scores[:, defined], average=None)
    np.testing.assert_allclose([per_class[j] for j in defined], theirs, rtol=1e-12)
    assert np.isnan(per_class[4]) and np.isnan(per_class[5])
    assert macro == pytest.approx(roc_auc_score(positives[:, defined], scores[:, defined], average="macro"))


@pytest.mark.parametrize("seed", range(3))
def test_bootstrapped_macro_auc_equals_sklearn_per_resample(seed):
    """A resample that lacks a class's positives skips that class (NaN), as the full sample's classes say."""
    scores, positives, clusters = random_case(seed, n=40, classes=4, levels=4)
    positives[:, 3] = False
    positives[[0, 1], 3] = True  # a rare class: missing from many resamples
    weights = m.cluster_weights(clusters, resamples=30, seed=seed)
    macro, _, per_class = m.macro_auc_with_interval(scores, positives, weights)
    classes = [j for j, a in enumerate(per_class) if not np.isnan(a)]
    resampled = m.macro_auc(scores, positives, weights, classes=[j in classes for j in range(4)])[0]
    for r, w in enumerate(weights):
        found = [sklearn_auc(scores[:, j], positives[:, j], w) for j in classes]
        assert resampled[r] == pytest.approx(np.nanmean(found)), r
    assert macro == pytest.approx(np.mean([sklearn_auc(scores[:, j], positives[:, j]) for j in classes]))


def test_degenerate_auc_inputs():
    positives = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    equal = np.full(6, 0.3)
    assert m.weighted_auc(equal, positives) == pytest.approx(roc_auc_score(positives, equal)) == 0.5
    ties = np.array([0.2, 0.2, 0.5, 0.5, 0.9, 0.9])
    assert m.weighted_auc(ties, positives) == pytest.approx(roc_auc_score(positives, ties))
    for one_class in (np.ones(6, bool), np.zeros(6, bool)):
        assert np.isnan(m.weighted_auc(ties, one_class))
        assert np.isnan(sklearn_one_class_auc(one_class, ties))
    # all weight on one class: undefined for both
    assert np.isnan(m.weighted_auc(ties, positives, np.array([1, 0, 1, 0, 0, 1.0])))
    assert np.isnan(m.weighted_auc(np.zeros(0), np.zeros(0, bool)))  # an empty subgroup: was an IndexError
    per_resample = m.weighted_auc(np.zeros(0), np.zeros(0, bool), np.zeros((3, 0)))
    assert per_resample.shape == (3,) and np.isnan(per_resample).all()
    macro, per_class = m.macro_auc(np.ones((4, 2)), np.ones((4, 2), bool))
    assert np.isnan(macro) and all(np.isnan(per_class))


# top-k accuracy and recall@k -------------------------------------------------------------------------------


def sklearn_ranking(score_row: np.ndarray, classes: list[str]) -> list[str]:
    """A ranking by score, ties broken as top_k_accuracy_score breaks them (reversed stable argsort)."""
    return [classes[i] for i in np.argsort(score_row, kind="mergesort")[::-1]]


@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to 'n_classes'")
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("levels", [None, 3], ids=["continuous", "ties"])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_equals_sklearn(seed, levels, k):
    rng = np.random.default_rng(seed)
    classes = ["A", "B", "C", "D", "E"]
    scores = rng.random((50, 5)) if levels is None else rng.integers(0, levels, (50, 5)).astype(float)
    truths = [classes[i] for i in rng.integers(0, 5, 50)]
    rankings = [sklearn_ranking(row, classes) for row in scores]
    weights = rng.integers(1, 4, 50)
    ours = m.top_k_correct(rankings, truths, k)
    theirs = sklearn_metrics.top_k_accuracy_score(truths, scores, k=k, labels=classes)
    assert ours.mean() == pytest.approx(theirs)
    assert np.average(ours, weights=weights) == pytest.approx(
        sklearn_metrics.top_k_accuracy_score(truths, scores, k=k, labels=classes, sample_weight=weights)
    )


@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to 'n_classes'")
def test_top_k_degenerate_inputs():
    classes = ["A", "B", "C"]
    equal = np.zeros((4, 3))  # all-equal scores: the tie rule decides, the same for both
    truths = ["A", "B", "C", "C"]
    rankings = [sklearn_ranking(row, classes) for row in equal]
    for k in (1, 2, 3):
        assert m.top_k_correct(rankings, truths, k).mean() == pytest.approx(
            sklearn_metrics.top_k_accuracy_score(truths, equal, k=k, labels=classes)
        )
    assert m.top_k_correct([["A"]] * 3, ["A"] * 3, 1).tolist() == [1, 1, 1]  # one class: always right
    assert m.top_k_correct([[], []], ["A", "B"], 3).tolist() == [0, 0]  # nothing predicted


def recall_inputs(neighbour_conditions, truths, k, classes):
    """Multi-label indicators: the true label, and the conditions among the first k neighbours."""
    y_true = np.array([[c == t for c in classes] for t in truths], dtype=int)
    y_pred = np.array([[c in list(n)[:k] for c in classes] for n in neighbour_conditions], dtype=int)
    return y_true, y_pred


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 3, 10])
def test_neighbour_recall_equals_sklearn_per_sample_recall(seed, k):
    rng = np.random.default_rng(seed)
    classes = ["A", "B", "C", "D"]
    neighbours = [[classes[i] for i in rng.integers(0, 4, rng.integers(0, 8))] for _ in range(40)]
    truths = [classes[i] if i < 4 else None for i in rng.integers(0, 5, 40)]  # some queries unlabelled
    y_true, y_pred = recall_inputs(neighbours, truths, k, classes)
    ours = m.neighbour_recall(neighbours, truths, k)
    theirs = sklearn_metrics.recall_score(y_true, y_pred, average="samples", zero_division=0)
    assert ours.mean() == pytest.approx(theirs)


def test_neighbour_recall_degenerate_inputs():
    classes = ["A", "never seen"]  # sklearn's multi-label form needs two columns; one class occurs
    neighbours = [["A", "A"], [], ["A"]]
    truths = ["A", "A", "A"]  # one class
    for k in (1, 2):
        y_true, y_pred = recall_inputs(neighbours, truths, k, classes)
        assert m.neighbour_recall(neighbours, truths, k).mean() == pytest.approx(
            sklearn_metrics.recall_score(y_true, y_pred, average="samples", zero_division=0)
        )
    assert m.neighbour_recall([["B", "B", "A"]], ["A"], 2).tolist() == [0]  # neighbours, not distinct conditions
