"""`scinsearch compare`: collections of the same images (other models, or frozen and `finetune apply`-ed)
evaluated on the same test queries, each against the first with paired, multiplicity-adjusted differences.

Each collection gets the ordinary evaluation (`evaluate_table`, split protocol, its own calibration when it
has one). The collections' points are put in image-id order, so the same images line up; the differences
are `evaluation.compare`'s (the engine of `evaluate --adapter`): the same resampled cases score both
collections, and the verdicts are Holm-adjusted over every comparison made. Collections whose test
queries differ (other images, labels or splits) are refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from scinsearch.calibration import calibration_of
from scinsearch.errors import ScinSearchError
from scinsearch.evaluation.compare import SCHEMA_VERSION, compare_results
from scinsearch.evaluation.evaluate import EvaluationResult, evaluate_table, package_version
from scinsearch.settings import Settings
from scinsearch.vectors.neighbours import PointTable, in_image_order, read_collection


@dataclasses.dataclass
class Run:
    """One collection to compare: its vectors (any order) and what names it."""

    table: PointTable
    model: str
    calibration: object | None = None


@dataclasses.dataclass
class CollectionComparison:
    metrics: dict
    results: dict[str, EvaluationResult]
    files: list[Path] = dataclasses.field(default_factory=list)

    def table_lines(self) -> list[str]:
        from scinsearch.evaluation.collections_report import summary_lines

        return summary_lines(self.metrics)


def compare_collections(
    settings: Settings,
    collections: list[str],
    *,
    k: int = 10,
    bootstrap: int = 1000,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = False,
) -> CollectionComparison:
    """Read each collection once, evaluate all on the same test queries, write the report to `out_dir`."""
    check_names(collections)
    runs = {}
    for name in collections:
        info, table = read_collection(settings.replace(collection=name), progress=progress)
        runs[name] = Run(table, info.model, calibration_of(info))
    comparison = compare_runs(runs, k=k, bootstrap=bootstrap, seed=seed)
    if out_dir is not None:
        from scinsearch.evaluation.collections_report import write_collection_comparison

        comparison.files = write_collection_comparison(comparison, Path(out_dir))
    return comparison


def check_names(collections: list[str]) -> None:
    if len(collections) < 2:
        raise ScinSearchError("compare needs at least two --collection")
    if len(set(collections)) != len(collections):
        raise ScinSearchError("each --collection may be named once")


def compare_runs(runs: dict[str, Run], *, k: int = 10, bootstrap: int = 1000, seed: int = 0) -> CollectionComparison:
    """The evaluations (split protocol: test queries against the train split) and the paired differences of
    every run against the first."""
    check_names(list(runs))
    results = {
        name: evaluate_table(
            in_image_order(run.table),
            model=run.model,
            collection=name,
            k=k,
            bootstrap=bootstrap,
            seed=seed,
            calibration=run.calibration,
        )
        for name, run in runs.items()
    }
    differences, families = compare_results(results, bootstrap, seed)
    first = next(iter(results.values()))
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "kind": "collection-comparison",
        "scinsearch_version": package_version(),
        "created": first.metrics["created"],
        "protocol": "split",
        "k": k,
        "collections": [
            {"collection": name, "model": r.metrics["model"], "dim": r.metrics["dim"]} for name, r in results.items()
        ],
        "reference_collection": next(iter(results)),
        "bootstrap": first.metrics["bootstrap"] | {"paired": True},
        "families": families,
        "runs": {name: r.metrics for name, r in results.items()},
        "differences": differences,
    }
    return CollectionComparison(metrics, results)
