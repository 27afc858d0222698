"""Frozen vs fine-tuned on the same queries: `scinsearch evaluate --adapter DIR`.

Both runs are the ordinary evaluation (`evaluate_table`) on the TEST split queries against the train split,
once on the stored vectors and once on the same vectors transformed in memory by the adapter (nothing is
written to the store). Since the queries are the same, each metric's difference gets a *paired* case
bootstrap: the same resampled cases score both runs, so the interval of the difference is much tighter
than two overlapping intervals would suggest. A difference whose 95% interval contains 0 is reported as
within the interval (no clear difference). Verdicts are adjusted for the number of comparisons made
(Holm within two families: the overall metrics, and the rows by group; see `adjust_families`).

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
ALPHA = 0.05  # family-wise error rate of the verdicts (Holm, within each family)
NOT_A_QUALITY = {"coverage"}  # its change is reported as higher / lower, never better / worse


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
    differences_by_run, families = compare_results({"frozen": frozen, "adapted": adapted}, bootstrap, seed)
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
        "families": families,
        "difference": differences_by_run["adapted"],
    }
    return Comparison(metrics, frozen, adapted)


def compare_results(results: dict[str, EvaluationResult], resamples: int, seed: int) -> tuple[dict, dict]:
    """Every run after the first against the first, on the same queries: ({run: differences}, the families'
    sizes), with the verdicts adjusted for every comparison made (Holm within each family)."""
    names = list(results)
    first = results[names[0]]
    for name in names[1:]:
        if results[name].per_query.image_ids != first.per_query.image_ids:
            raise ScinSearchError(
                f"{name!r} and {names[0]!r} have different test queries (not the same images, labels or "
                "splits): only collections of the same images can be compared"
            )
    differences_by_run = {name: paired_differences(first, results[name], resamples, seed) for name in names[1:]}
    return differences_by_run, adjust_families(differences_by_run)


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


def paired_differences(first: EvaluationResult, other: EvaluationResult, resamples: int, seed: int) -> dict:
    """other - first per metric, overall and per skin-type group, on the same resampled cases (unadjusted:
    `adjust_families` turns them into verdicts)."""
    clusters = first.per_query.clusters
    everyone = np.ones(len(clusters), dtype=bool)
    out = {"overall": differences(first, other, everyone, resamples, seed), "breakdowns": {}}
    for field_number, (name, groups) in enumerate(first.per_query.groups.items()):
        values = np.array(groups, dtype=object)
        out["breakdowns"][name] = {}
        for group_number, group in enumerate(first.metrics["breakdowns"][name]):
            subset = values == group
            out["breakdowns"][name][group] = differences(
                first, other, subset, resamples, seed + 1000 * (field_number + 1) + group_number
            )
    return out


def differences(
    frozen: EvaluationResult, adapted: EvaluationResult, subset: np.ndarray, resamples: int, seed: int
) -> dict:
    """Each metric of the second run minus the same metric of the first, both on the same resample of cases,
    each with its own denominator (a query confident in one run only counts in that run's "when confident"
    metric), so the point estimate is the difference of the two columns."""
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
                first, first_resampled = m.resampled_mean(values[subset], weights)
                second, second_resampled = m.resampled_mean(after.values[metric][subset], weights)
                if first is None or second is None:
                    block[metric] = unadjusted(None, None, cases)
                else:
                    block[metric] = unadjusted(second - first, second_resampled - first_resampled, cases)
        if before.auc is not None and after.auc is not None:
            block["macro_auc"] = unadjusted(*auc_difference(before.auc, after.auc, subset, weights), cases)
        out[system] = block
    return out


def unadjusted(value: float | None, resampled: np.ndarray | None, cases: int) -> dict:
    """A difference before the family's adjustment; `_resampled` (dropped on adjustment) feeds it."""
    has_samples = resampled is not None and len(resampled) > 0
    return {
        "value": None if value is None else float(value),
        "ci95": m.interval(resampled) if has_samples else None,
        "cases": cases,
        "_resampled": resampled if has_samples else None,
    }


def auc_difference(before, after, subset: np.ndarray, weights: np.ndarray) -> tuple[float | None, np.ndarray | None]:
    """Macro AUC of the second run minus the first over the classes defined in both, resampled with the same
    cases (the query labels are the same in both runs, so these are the classes of both columns)."""
    positives = before[1][subset]
    _, per_before = m.macro_auc(before[0][subset], positives)
    _, per_after = m.macro_auc(after[0][subset], positives)
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
    return float(value), np.asarray(resampled)


def family_entries(differences_by_run: dict[str, dict]) -> dict[str, list[tuple[str, dict]]]:
    """Every difference, by family: `primary` the overall rows, `secondary` every breakdown row."""
    families: dict[str, list[tuple[str, dict]]] = {"primary": [], "secondary": []}
    for blocks in differences_by_run.values():
        for system in blocks["overall"].values():
            families["primary"] += list(system.items())
        for groups in blocks["breakdowns"].values():
            for block in groups.values():
                for system in block.values():
                    families["secondary"] += list(system.items())
    return families


def adjust_families(differences_by_run: dict[str, dict], alpha: float = ALPHA) -> dict:
    """Holm within each family, in place: every tested difference gets its p-value, Holm's adjusted p-value,
    the interval at its Holm level (`ci`, `level`) and a verdict read from it; returns the family sizes."""
    summary = {}
    for family, entries in family_entries(differences_by_run).items():
        tested = [(metric, e) for metric, e in entries if testable(e)]
        p_values = [m.bootstrap_p_value(e["value"], e["_resampled"]) for _, e in tested]
        adjusted, levels = m.holm_levels(p_values, alpha) if tested else ([], [])
        for (_, entry), p, q, level in zip(tested, p_values, adjusted, levels):
            entry.update(
                p_value=float(p),
                p_adjusted=float(q),
                level=float(1 - level),
                ci=clipped(m.normal_interval(entry["value"], entry["_resampled"], 1 - level)),
                family=family,
            )
        for metric, entry in entries:
            entry["verdict"] = verdict_of(metric, entry, alpha)
            entry.pop("_resampled", None)
        summary[family] = {
            "comparisons": len(tested),
            "method": "holm",
            "alpha": alpha,
            "rows": "overall metrics" if family == "primary" else "metrics by group (skin type and other groups)",
        }
    return summary


def clipped(ci: list[float] | None) -> list[float] | None:
    """Every metric is a share or an AUC in [0, 1], so a difference lies in [-1, 1]."""
    return None if ci is None else [max(-1.0, ci[0]), min(1.0, ci[1])]


def testable(entry: dict) -> bool:
    has_samples = entry.get("_resampled") is not None
    return entry["value"] is not None and has_samples and entry["cases"] >= m.MIN_BOOTSTRAP_CASES


def verdict_of(metric: str, entry: dict, alpha: float = ALPHA) -> str:
    """better / worse (higher / lower for coverage, which is not a quality) when Holm rejects "no
    difference" in the difference's family; else within the interval, or why there is no verdict."""
    if entry["value"] is None:
        return "undefined"
    if entry["cases"] < m.MIN_BOOTSTRAP_CASES:
        return m.TOO_FEW_CASES
    if "p_adjusted" not in entry:
        return "no interval"
    if entry["p_adjusted"] >= alpha:
        return "within the interval"
    up = entry["value"] > 0
    if metric in NOT_A_QUALITY:
        return "higher" if up else "lower"
    return "better" if up else "worse"
