"""The metrics dictionary's numbers: each metric's value with its case-bootstrap interval, overall and per
skin-type group (small groups get Wilson intervals and say so), and the top-1 confusion counts.

Split from `evaluate` (which picks queries, finds neighbours and predicts) so each file has one job.
"""

from __future__ import annotations

import numpy as np

from scinsearch.vectors import metrics as m
from scinsearch.vectors.neighbours import UNKNOWN

# `systems` and `baselines` map a predictor's name to its `evaluate.Outcome` (per-query values), `queries`
# is an `evaluate.QueryView`; not imported here, since evaluate imports this module.


def summarise(
    systems: dict,
    baselines: dict,
    subset: np.ndarray,
    clusters: np.ndarray,
    resamples: int,
    seed: int,
) -> dict:
    """Every metric of every system on the queries in `subset`: value, 95% case-bootstrap interval, and the
    baselines' values on the same queries."""
    weights = m.cluster_weights(clusters[subset], resamples, seed)
    out: dict = {"metrics": {}, "per_class_auc": {}}
    for name, outcome in systems.items():
        block = {}
        for metric, values in outcome.values.items():
            value, ci = m.mean_with_interval(values[subset], weights)
            block[metric] = {
                "value": value,
                "ci95": ci,
                "baselines": {
                    b: m.defined_mean(o.values[metric][subset]) for b, o in baselines.items() if metric in o.values
                },
            }
        if outcome.auc is not None:
            scores, positives = outcome.auc[0][subset], outcome.auc[1][subset]
            value, ci, per_class = m.macro_auc_with_interval(scores, positives, weights)
            block["macro_auc"] = {
                "value": value,
                "ci95": ci,
                "baselines": {
                    b: none_if_nan(m.macro_auc(o.auc[0][subset], o.auc[1][subset])[0]) for b, o in baselines.items()
                },
            }
            out["per_class_auc"][name] = per_class
        out["metrics"][name] = block
    return out


def none_if_nan(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def breakdowns(queries, systems, baselines, clusters: np.ndarray, resamples: int, seed: int) -> dict:
    """The same summary per skin-type group, with query and case counts (small groups: wide intervals)."""
    result = {}
    for field_number, (name, groups) in enumerate(queries.groups.items()):
        values = np.array(groups, dtype=object)
        result[name] = {}
        for group_number, group in enumerate(sorted(set(groups), key=group_order)):
            subset = values == group
            summary = summarise(
                systems, baselines, subset, clusters, resamples, seed + 1000 * (field_number + 1) + group_number
            )
            cases = int(len(np.unique(clusters[subset])))
            if cases < m.MIN_BOOTSTRAP_CASES:
                small_group_intervals(summary["metrics"], systems, subset, clusters)
            result[name][group] = {"queries": int(subset.sum()), "cases": cases, "metrics": summary["metrics"]}
    return result


def small_group_intervals(summary: dict, systems: dict, subset: np.ndarray, clusters) -> None:
    """A group of a handful of cases: a case bootstrap of 2 cases, both right, says [1, 1]. Its proportions
    get Wilson intervals over its cases instead (views of one case are not independent trials), its AUC
    none, and every entry says why."""
    for name, outcome in systems.items():
        for metric, entry in summary[name].items():
            entry["note"] = m.TOO_FEW_CASES
            if metric not in outcome.values or entry["value"] is None:
                entry["ci95"] = None
                continue
            defined = subset & ~np.isnan(outcome.values[metric])
            trials = len(np.unique(clusters[defined]))
            entry["ci95"] = m.wilson_interval(entry["value"] * trials, trials)


def group_order(group: str) -> tuple:
    """Groups in their natural order (FST1..FST6, I-II..V-VI, 1-3..7-10), other values next, unknown last."""
    digits = "".join(ch if ch.isdigit() else " " for ch in group).split()
    return (group == UNKNOWN, int(digits[0]) if digits else 99, group)


def confusion(truths: list, rankings_by_predictor: dict[str, list[list[str]]], n: int) -> dict:
    """Row-normalisable counts of top-1 predictions for the n most frequent true conditions; predictions
    outside them are 'other'."""
    labels = m.frequency_ranking(truths)[:n]
    columns = labels + ["other"]
    matrices = {}
    for name, rankings in rankings_by_predictor.items():
        counts = np.zeros((len(labels), len(columns)), dtype=int)
        for truth, ranking in zip(truths, rankings):
            if truth in labels:
                predicted = ranking[0] if ranking and ranking[0] in labels else "other"
                counts[labels.index(truth), columns.index(predicted)] += 1
        matrices[name] = counts.tolist()
    return {"conditions": labels, "columns": columns, "matrices": matrices}
