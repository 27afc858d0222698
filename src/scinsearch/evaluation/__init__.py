"""Honest retrieval-quality measurement of a scinsearch collection (`scinsearch evaluate`).

Works on the stored vectors (no re-embedding): exact cosine kNN with each query's own case masked,
predictions by the search API's suggestion rule and by plain kNN majority, baselines, case-level
bootstrap intervals, and breakdowns by skin type. The neighbour table and the metric arithmetic it
shares with calibration and fine-tuning are in `scinsearch.vectors`. Modules, one job each:

- `predictors`: neighbours or text prompts -> ranked conditions with scores;
- `evaluate`: the pipeline and the metrics dictionary;
- `report`: metrics.json, report.md, PNG plots, the CLI table (`report_calibration`: the calibration part);
- `calibrated`: the collection's calibration (`scinsearch calibrate`) measured on held-out data;
- `compare`: paired differences of runs on the same queries, Holm-adjusted in two families (the engine of
  `evaluate --adapter` and `scinsearch compare`); `collections` (+ `collections_report`): `scinsearch compare`.

metrics.json (schema_version 1), one file per run; merge runs by reading several:

    schema_version, scinsearch_version, created (UTC ISO 8601)
    model, dim, collection, protocol ("split" | "leave-case-out"), k,
    neighbours_per_case (true: one neighbour per case), exclude_own_case (false only in a leaky run)
    bootstrap: {resamples, seed, unit: "case", level: 0.95}
    counts: {points, labelled_points, ungradable_labelled_points, queries, query_cases,
             reference_points, reference_cases, reference_conditions, queries_by_split}
    auc_conditions: the ten conditions most often among the queries' labels (AUC classes)
    suggestion_thresholds: the thresholds of the suggestion rule used, and their source ("calibrated" | "default")
    zero_shot: null, or {model, template, conditions}
    metrics: {system: {metric: {value, ci95: [low, high] | null, baselines: {majority, random}}}}
        systems: "suggestions", "knn_majority", optional "zero_shot" with top1_accuracy,
        top3_accuracy, hit_at_1, hit_at_3, macro_auc ("suggestions" adds coverage and
        top1_accuracy_when_confident, without baselines); "retrieval" with recall@1, recall@5, recall@k
    per_class_auc: {system: [AUC per auc_conditions entry, null when undefined]}
    breakdowns: {self_reported_fitzpatrick | dermatologist_skin_type_group | monk_tone_group_us:
                 {group: {queries, cases, metrics: (as above; under 10 cases: Wilson ci95 and
                 "note": "too few cases")}}}
    confusion: {conditions, columns (conditions + "other"), matrices: {predictor: counts[row][column]}}
    calibration: {calibrated, created, suggestion_thresholds: {k, queries, frozen, calibrated, frontier},
                  gradability_probe, nothing_alike}: the collection's calibration checked on held-out data
                  (`calibrated`; docs/evaluation.md)

Values are fractions in [0, 1]; null means undefined (e.g. no query of a group has a condition of the
AUC list).
"""

from scinsearch.evaluation.evaluate import EvaluationResult, evaluate_collection, evaluate_table
from scinsearch.vectors.neighbours import PROTOCOLS

__all__ = ["EvaluationResult", "evaluate_collection", "evaluate_table", "PROTOCOLS"]
