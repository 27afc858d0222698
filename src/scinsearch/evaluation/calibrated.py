"""What a collection's calibration (`scinsearch calibrate`, learnt on the train split) does on held-out data.

- suggestion thresholds: coverage and precision (the top condition is among the query's labels) of the
  frozen defaults and of the calibrated thresholds on the evaluation's queries, with case-bootstrap
  intervals, and the trade-off curve (`calibration.thresholds.frontier`);
- the gradability probe: ROC AUC on the test split's images (case-bootstrap interval), Brier score, and
  how often its warning fires and is right;
- the nothing-alike cut: the share of test images whose most similar train image of another case is
  below it (about its percentile when the test split looks like the train split).

Without a calibration, the trade-off curve and the frozen thresholds are still measured.
"""

from __future__ import annotations

import numpy as np

from scinsearch.calibration import thresholds as th
from scinsearch.calibration.record import Calibration, suggestion_neighbours
from scinsearch.quality import MIN_GRADABLE_PROBABILITY
from scinsearch.vectors import metrics as m
from scinsearch.vectors.neighbours import Neighbours, PointTable, Selection, case_clusters, nearest_other_case

TEST = "test"


def calibration_metrics(
    table: PointTable,
    selection: Selection,
    found: Neighbours,
    calibration: Calibration | None,
    bootstrap: int,
    seed: int,
) -> dict:
    """The `calibration` block of metrics.json (see docs/evaluation.md)."""
    return {
        "calibrated": calibration is not None,
        "created": calibration.created if calibration is not None else None,
        "suggestion_thresholds": threshold_comparison(table, selection, found, calibration, bootstrap, seed),
        "gradability_probe": probe_metrics(table, calibration, bootstrap, seed + 1),
        "nothing_alike": nothing_alike_metrics(table, calibration, bootstrap, seed + 2),
    }


def threshold_comparison(
    table: PointTable, selection: Selection, found: Neighbours, calibration: Calibration | None, bootstrap, seed
) -> dict:
    """Frozen vs calibrated thresholds on the evaluation's queries, with the k neighbouring cases the
    calibration used (the search's top-k), and the trade-off curve there."""
    k = min(suggestion_neighbours(calibration), found.indices.shape[1])
    stats = th.stats_of(found.first(k), table, selection)
    weights = m.cluster_weights(case_clusters([table.case_ids[r] for r in selection.queries]), bootstrap, seed)

    def measured(thresholds: dict) -> dict:
        mask = th.confident_mask(stats, **thresholds)
        coverage = m.mean_with_interval(mask.astype(float), weights)
        precision = m.mean_with_interval(np.where(mask, stats.hit, np.nan), weights)
        return {
            "thresholds": dict(thresholds),
            "coverage": {"value": coverage[0], "ci95": coverage[1]},
            "precision": {"value": precision[0], "ci95": precision[1]},
            "suggestions": int(mask.sum()),
        }

    calibrated = None
    if calibration is not None:
        calibrated = {
            **measured(calibration.suggestion_options()),
            "target_precision": calibration.thresholds.get("target_precision"),
            "suggestions_off": calibration.suggestions_off,
            "train": calibration.thresholds.get("train"),
        }
    return {
        "k": k,
        "queries": len(stats),
        "frozen": measured(th.FROZEN),
        "calibrated": calibrated,
        "frontier": th.frontier(stats, max_support=k),
    }


def split_rows(table: PointTable, extra: np.ndarray | None = None) -> np.ndarray:
    test = np.array([s == TEST for s in table.splits], dtype=bool)
    return np.flatnonzero(test if extra is None else test & extra)


def probe_metrics(table: PointTable, calibration: Calibration | None, bootstrap: int, seed: int) -> dict | None:
    """The probe on the test split's images with a `gradable` value (views of a case share its label)."""
    if calibration is None or calibration.probe is None:
        return None if calibration is None else {"trained": False, "note": calibration.probe_note}
    rows = split_rows(table, np.array([g is not None for g in table.gradable], dtype=bool))
    labels = np.array([table.gradable[r] for r in rows], dtype=bool)
    base = {"trained": True, "training": calibration.probe.training, "images": len(rows)}
    if len(rows) == 0 or labels.all() or not labels.any():
        return {**base, "note": "the test split lacks gradable or not-gradable images: no AUC", "auc": None}
    probability = calibration.probe.probability(table.vectors[rows])
    weights = m.cluster_weights(case_clusters([table.case_ids[r] for r in rows]), bootstrap, seed)
    resampled = m.weighted_auc(probability, labels, weights) if len(weights) else np.zeros(0)
    warned = probability < MIN_GRADABLE_PROBABILITY
    return {
        **base,
        "not_gradable": int((~labels).sum()),
        "cases": int(len(np.unique(case_clusters([table.case_ids[r] for r in rows])))),
        "auc": {"value": m.weighted_auc(probability, labels), "ci95": m.interval(resampled)},
        "brier": float(np.mean((probability - labels) ** 2)),
        "mean_probability": float(probability.mean()),
        "gradable_share": float(labels.mean()),
        "warning_threshold": MIN_GRADABLE_PROBABILITY,
        "warned_share": float(warned.mean()),
        "warned_not_gradable_share": float((~labels[warned]).mean()) if warned.any() else None,
        "not_gradable_warned_share": float(warned[~labels].mean()),
    }


def nothing_alike_metrics(table: PointTable, calibration: Calibration | None, bootstrap: int, seed: int) -> dict | None:
    if calibration is None:
        return None
    rows = split_rows(table)
    reference = np.flatnonzero(np.array([s == "train" for s in table.splits], dtype=bool))
    base = {**calibration.nothing_alike, "test_images": len(rows)}
    if len(rows) == 0 or len(reference) == 0:
        return {**base, "flagged": None}
    similarities = nearest_other_case(table, rows, reference)
    flagged = np.where(np.isfinite(similarities), similarities < calibration.cut, np.nan)
    weights = m.cluster_weights(case_clusters([table.case_ids[r] for r in rows]), bootstrap, seed)
    value, interval = m.mean_with_interval(flagged, weights)
    return {**base, "flagged": {"value": value, "ci95": interval}}
