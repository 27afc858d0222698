"""The validation numbers a fine-tuning run records: the evaluation's own metrics, with the validation
cases as queries and the fit cases as the reference (never the test split), for frozen and tuned vectors."""

from __future__ import annotations

import numpy as np

from scinsearch.errors import ScinSearchError
from scinsearch.finetune.data import TrainingSet, relabelled_for_evaluation

RECORDED = {
    "suggestions": ("top1_accuracy", "top3_accuracy", "hit_at_1", "macro_auc"),
    "knn_majority": ("top1_accuracy", "top3_accuracy", "hit_at_1", "macro_auc"),
}
VALIDATION_K = 10


def validation_metrics(training: TrainingSet, vectors: np.ndarray, k: int = VALIDATION_K) -> dict:
    """Metric values of `vectors` (rows: fit then validation) on the validation cases; {} when undefined."""
    from scinsearch.evaluation import evaluate_table

    table = relabelled_for_evaluation(training, np.asarray(vectors, dtype=np.float32))
    try:
        result = evaluate_table(table, model="", collection="", k=k, bootstrap=0)
    except ScinSearchError:  # e.g. no gradable validation image: nothing to record, not a failed run
        return {}
    metrics = result.metrics["metrics"]
    out = {
        system: {name: metrics[system][name]["value"] for name in names if name in metrics[system]}
        for system, names in RECORDED.items()
    }
    out["retrieval"] = {name: entry["value"] for name, entry in metrics["retrieval"].items()}
    out["queries"] = result.metrics["counts"]["queries"]
    return out
