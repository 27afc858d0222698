"""Frozen vs fine-tuned on the same queries: `scinsearch evaluate --adapter DIR`.

Both runs are the ordinary evaluation (`evaluate_table`) on the TEST split queries against the train split,
once on the stored vectors and once on the same vectors transformed in memory by the adapter (nothing is
written to the store). Since the queries are the same, each metric's difference gets a *paired* case
bootstrap: the same resampled cases score both runs, so the interval of the difference is much tighter
than two overlapping intervals would suggest. A difference whose 95% interval contains 0 is reported as
within the interval (no clear difference).

The adapter is the runtime one (`vectors.adapter.Adapter`: no training code). Before anything is
measured, the adapter's recorded training and validation cases are checked against the test split: a
leak is refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scinsearch.errors import ScinSearchError
from scinsearch.evaluation.evaluate import (
    EvaluationResult,
    evaluate_table,
    open_for_evaluation,
    package_version,
    run_identity,
)
from scinsearch.schema import TEST_SPLIT
from scinsearch.settings import Settings
from scinsearch.vectors import metrics as m
from scinsearch.vectors.neighbours import PointTable

if TYPE_CHECKING:  # the runtime adapter loads torch: imported only where one is loaded
    from scinsearch.vectors.adapter import Adapter

SCHEMA_VERSION = 1
MIN_CASES_FOR_VERDICT = 10  # below this a case bootstrap has too little to resample: no better/worse verdict


@dataclasses.dataclass
class Comparison:
    metrics: dict
    frozen: EvaluationResult
    adapted: EvaluationResult
    files: list[Path] = dataclasses.field(default_factory=list)

    def table_lines(self) -> list[str]:
        from scinsearch.evaluation.compare_report import summary_lines

        return summary_lines(self.metrics)


class AdaptedText:
    """The text embedder seen through the adapter (for the zero-shot rows of the adapted run)."""

    def __init__(self, embedder, adapter):
        self.embedder, self.adapter = embedder, adapter
        self.model_name = getattr(embedder, "model_name", None)
        self.dim = getattr(embedder, "dim", None)

    def embed_texts(self, texts):
        return self.adapter.transform_text(self.embedder.embed_texts(texts))


def evaluate_adapter(
    settings: Settings,
    adapter: Adapter,
    k: int = 10,
    out_dir: Path | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    zero_shot: bool = False,
    embedder=None,
    progress: bool = False,
    zero_shot_model: str | None = None,
) -> Comparison:
    """Read the collection once, measure frozen and adapted vectors on the test split, write the report."""
    check = lambda info: adapter.check_frozen_collection(info, settings.collection)  # noqa: E731
    text = zero_shot and (embedder or zero_shot_model or True)
    info, table, text = open_for_evaluation(settings, progress, text, check)
    comparison = compare_tables(
        table, adapter, **run_identity(info, settings), k=k, bootstrap=bootstrap, seed=seed, text_embedder=text
    )
    if out_dir is not None:
        from scinsearch.evaluation.compare_report import write_comparison

        comparison.files = write_comparison(comparison, Path(out_dir))
    return comparison


def compare_tables(
    table: PointTable,
    adapter: Adapter,
    *,
    model: str,
    collection: str,
    k: int = 10,
    bootstrap: int = 1000,
    seed: int = 0,
    text_embedder=None,
) -> Comparison:
    """The two evaluations (split protocol only) and their paired differences."""
    check_no_test_case_in_training(table, adapter.record)
    common = dict(model=model, collection=collection, protocol="split", k=k, bootstrap=bootstrap, seed=seed)
    frozen = evaluate_table(table, text_embedder=text_embedder, **common)
    adapted_table = dataclasses.replace(table, vectors=adapter.transform(table.vectors))
    adapted = evaluate_table(
        adapted_table,
        text_embedder=AdaptedText(text_embedder, adapter) if text_embedder is not None else None,
        **common,
    )
    if frozen.per_query.image_ids != adapted.per_query.image_ids:  # same table, same rule: cannot differ
        raise ScinSearchError("internal error: the frozen and adapted runs chose different queries")
    record = adapter.record
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "kind": "adapter-comparison",
        "scinsearch_version": package_version(),
        "created": adapted.metrics["created"],
        "model": model,
        "collection": collection,
        "protocol": "split",
        "adapter": {
            key: record.get(key)
            for key in (
                "adapter_id",
                "method",
                "base_model",
                "dim",
                "collection",
                "created",
                "seed",
                "hyperparameters",
                "text_queries",
            )
        }
        | {
            "folder": str(getattr(adapter, "folder", "")),
            "train_cases": len(record.get("train_case_ids", [])),
            "validation_cases": len(record.get("validation_case_ids", [])),
        },
        "bootstrap": frozen.metrics["bootstrap"] | {"paired": True},
        "runs": {"frozen": frozen.metrics, "adapted": adapted.metrics},
        "difference": paired_differences(frozen, adapted, bootstrap, seed),
    }
    return Comparison(metrics, frozen, adapted)


def check_no_test_case_in_training(table: PointTable, record: dict) -> None:
    """Refuse an adapter that saw any test-split case of this collection (the numbers would be leaked)."""
    seen = set(record.get("train_case_ids") or []) | set(record.get("validation_case_ids") or [])
    test_cases = {c for ids, split in zip(table.case_ids, table.splits) if split == TEST_SPLIT for c in ids}
    leaked = seen & test_cases
    if leaked:
        raise ScinSearchError(
            f"the adapter was trained or validated on {len(leaked)} test-split case(s) of this "
            f"collection (e.g. {sorted(leaked)[0]}): its numbers here would be leaked"
        )


def paired_differences(frozen: EvaluationResult, adapted: EvaluationResult, resamples: int, seed: int) -> dict:
    """adapted - frozen per metric, overall and per skin-type group, with paired case-bootstrap intervals."""
    clusters = frozen.per_query.clusters
    everyone = np.ones(len(clusters), dtype=bool)
    out = {"overall": differences(frozen, adapted, everyone, resamples, seed), "breakdowns": {}}
    for field_number, (name, groups) in enumerate(frozen.per_query.groups.items()):
        values = np.array(groups, dtype=object)
        out["breakdowns"][name] = {}
        for group_number, group in enumerate(frozen.metrics["breakdowns"][name]):
            subset = values == group
            out["breakdowns"][name][group] = differences(
                frozen, adapted, subset, resamples, seed + 1000 * (field_number + 1) + group_number
            )
    return out


def differences(
    frozen: EvaluationResult, adapted: EvaluationResult, subset: np.ndarray, resamples: int, seed: int
) -> dict:
    weights = m.cluster_weights(frozen.per_query.clusters[subset], resamples, seed)
    cases = len(np.unique(frozen.per_query.clusters[subset]))
    out: dict = {}
    for system, before in frozen.per_query.systems.items():
        after = adapted.per_query.systems.get(system)
        if after is None:
            continue
        block = {}
        for metric, values in before.values.items():
            if metric in after.values:
                difference = after.values[metric][subset] - values[subset]
                block[metric] = verdict(*m.mean_with_interval(difference, weights), cases=cases)
        if before.auc is not None and after.auc is not None:
            block["macro_auc"] = verdict(*auc_difference(before.auc, after.auc, subset, weights), cases=cases)
        out[system] = block
    return out


def auc_difference(before, after, subset: np.ndarray, weights: np.ndarray) -> tuple[float | None, list | None]:
    """Macro AUC of adapted minus frozen over the classes defined in both, resampled with the same cases."""
    positives = before[1][subset]
    first, per_before = m.macro_auc(before[0][subset], positives)
    second, per_after = m.macro_auc(after[0][subset], positives)
    classes = [bool(np.isfinite(a) and np.isfinite(b)) for a, b in zip(per_before, per_after)]
    if not any(classes):
        return None, None
    value = (
        m.macro_auc(after[0][subset], positives, classes=classes)[0]
        - m.macro_auc(before[0][subset], positives, classes=classes)[0]
    )
    if not len(weights):
        return float(value), None
    resampled = (
        m.macro_auc(after[0][subset], positives, weights, classes=classes)[0]
        - m.macro_auc(before[0][subset], positives, weights, classes=classes)[0]
    )
    return float(value), m.interval(resampled)


def verdict(value: float | None, ci: list[float] | None, cases: int = MIN_CASES_FOR_VERDICT) -> dict:
    """The difference, its interval, and what it says: better / worse / within the interval (or too few
    cases: a bootstrap of a handful of cases gives intervals that look certain and are not)."""
    if value is None:
        return {"value": None, "ci95": None, "verdict": "undefined"}
    if cases < MIN_CASES_FOR_VERDICT:
        return {"value": value, "ci95": ci, "verdict": "too few cases"}
    if ci is None:
        return {"value": value, "ci95": None, "verdict": "no interval"}
    if ci[0] > 0:
        word = "better"
    elif ci[1] < 0:
        word = "worse"
    else:
        word = "within the interval"
    return {"value": value, "ci95": ci, "verdict": word}
