"""`evaluate_collection`: the whole measurement, from the stored vectors to the metrics dictionary.

Steps: load every point once -> pick queries and reference by protocol -> mask each query's own case ->
exact kNN (one neighbour per case) and, for the chance level, random neighbours -> predictions
(suggestions, plain kNN, optional zero-shot, majority class) -> per-query 0/1 outcomes -> means with
case-level bootstrap intervals, overall and per skin-type group.

The returned `metrics` dictionary is what `metrics.json` holds; its layout is documented in
`scinsearch.evaluation` (package docstring) and docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scinsearch.calibration import calibration_of, suggestion_neighbours
from scinsearch.errors import ScinSearchError
from scinsearch.evaluation import predictors as p
from scinsearch.evaluation.calibrated import calibration_metrics
from scinsearch.evaluation.summary import breakdowns, confusion, summarise
from scinsearch.rules import ZERO_SHOT_PROMPT
from scinsearch.settings import Settings
from scinsearch.vectors import metrics as m
from scinsearch.vectors.neighbours import (
    UNKNOWN,
    PointTable,
    Selection,
    case_clusters,
    exclusions,
    nearest,
    random_neighbours,
    read_collection,
    select,
)

SCHEMA_VERSION = 1
AUC_CLASSES = 10
CONFUSION_CLASSES = 10


@dataclasses.dataclass
class Outcome:
    """One system's per-query results: metric -> array over queries (NaN = undefined for that query),
    plus the (scores, positives) matrices its macro AUC is computed from."""

    values: dict[str, np.ndarray]
    auc: tuple[np.ndarray, np.ndarray] | None = None


@dataclasses.dataclass
class PerQuery:
    """The per-query outcomes behind the metrics, kept for paired comparisons (`evaluation.compare`)."""

    image_ids: list[str]
    clusters: np.ndarray
    groups: dict[str, list[str]]
    systems: dict[str, Outcome]


@dataclasses.dataclass
class EvaluationResult:
    metrics: dict
    files: list[Path] = dataclasses.field(default_factory=list)
    per_query: PerQuery | None = None

    def table_lines(self) -> list[str]:
        from scinsearch.evaluation.report import summary_table

        return summary_table(self.metrics)


def evaluate_collection(
    settings: Settings,
    protocol: str = "split",
    k: int = 10,
    out_dir: Path | None = None,
    zero_shot: bool = False,
    embedder=None,
    bootstrap: int = 1000,
    seed: int = 0,
    per_case: bool = True,
    exclude_own_case: bool = True,
    progress: bool = False,
    zero_shot_model: str | None = None,
) -> EvaluationResult:
    """Measure the collection named by `settings`; write metrics.json, report.md and plots to `out_dir`.

    `zero_shot` adds the text-tower baseline, with `embedder`, else `zero_shot_model`, else the
    collection's own model.
    `exclude_own_case=False` is the leaky protocol (only the query image itself is hidden); it exists to
    show what leakage does and is labelled as such in the output, never a default."""
    info, table, text = open_for_evaluation(settings, progress, zero_shot and (embedder or zero_shot_model or True))
    result = evaluate_table(
        table,
        **run_identity(info, settings),
        protocol=protocol,
        k=k,
        bootstrap=bootstrap,
        seed=seed,
        text_embedder=text,
        per_case=per_case,
        exclude_own_case=exclude_own_case,
        calibration=calibration_of(info),
    )
    if out_dir is not None:
        from scinsearch.evaluation.report import write_report

        result.files = write_report(result.metrics, Path(out_dir))
    return result


def open_for_evaluation(settings: Settings, progress: bool, text=None, check=None) -> tuple:
    """(the collection's record, its table, the zero-shot text embedder or None): how `evaluate` and
    `evaluate --adapter` start. `text`: falsy for no zero-shot; an embedder; a model name; or True for
    the collection's own model (a model name of another vector space is refused before the long read).
    `check` runs on the record before the long read."""

    def check_all(info):
        if isinstance(text, str) and not info.same_space(text):
            raise ScinSearchError(
                f"collection {settings.collection!r} holds vectors of {info.model!r}, not of {text!r}: "
                f"leave --model out (the collection's model is used) or give another --collection"
            )
        if check is not None:
            check(info)

    info, table = read_collection(settings, progress=progress, check=check_all)
    if text and (text is True or isinstance(text, str)):
        from scinsearch.embedding import Embedder

        text = Embedder.from_settings(settings.replace(model=info.model if text is True else text), info)
    return info, table, text or None


def run_identity(info, settings: Settings) -> dict:
    """What names a run in metrics.json: the collection's model and the collection."""
    return {"model": info.model, "collection": settings.collection}


def evaluate_table(
    table: PointTable,
    *,
    model: str,
    collection: str,
    protocol: str = "split",
    k: int = 10,
    bootstrap: int = 1000,
    seed: int = 0,
    text_embedder=None,
    per_case: bool = True,
    exclude_own_case: bool = True,
    calibration=None,
) -> EvaluationResult:
    """The measurement on points already in memory (see `evaluate_collection`). `calibration`: the
    collection's `calibration.Calibration`, whose suggestion thresholds the `suggestions` predictor then
    uses (else the defaults), and whose parts are measured on the test split."""
    if k < 1:
        raise ScinSearchError("--k must be at least 1")
    if bootstrap < 0:
        raise ScinSearchError("--bootstrap must be 0 or more")
    selection = select(table, protocol)
    hidden = exclusions(table, selection, exclude_own_case)
    drawn = suggestion_neighbours(calibration)  # the one suggestion rule, whatever k lists
    fetched = nearest(table, selection, hidden, max(k, drawn), per_case)
    found = fetched.first(k)
    chance = random_neighbours(table, selection, hidden, k, seed, per_case)
    queries = QueryView(table, selection)
    auc_conditions = m.most_common_conditions(queries.label_sets, AUC_CLASSES)
    thresholds = calibration.suggestion_options() if calibration is not None else {}
    systems, extras, top_rankings = predict_all(
        table, selection, found, queries, auc_conditions, text_embedder, thresholds, fetched.first(drawn)
    )
    extras["suggestion_thresholds"]["neighbours"] = drawn
    extras["suggestion_thresholds"]["source"] = "calibrated" if calibration is not None else "default"
    baselines = baseline_outcomes(table, selection, chance, queries, auc_conditions, k)
    systems["retrieval"] = retrieval_outcome(p.neighbour_conditions(found, table, selection), queries.truths, k)
    clusters = case_clusters(queries.case_ids)
    everyone = np.ones(len(queries.truths), dtype=bool)
    summary = summarise(systems, baselines, everyone, clusters, bootstrap, seed)
    return EvaluationResult(
        {
            "schema_version": SCHEMA_VERSION,
            "scinsearch_version": package_version(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model,
            "dim": int(table.vectors.shape[1]),
            "collection": collection,
            "protocol": protocol,
            "k": k,
            "neighbours_per_case": per_case,
            "exclude_own_case": exclude_own_case,
            "bootstrap": {"resamples": bootstrap, "seed": seed, "unit": "case", "level": 0.95},
            "counts": counts(table, selection, queries, clusters),
            "auc_conditions": auc_conditions,
            **extras,
            "metrics": summary["metrics"],
            "per_class_auc": summary["per_class_auc"],
            "breakdowns": breakdowns(queries, systems, baselines, clusters, bootstrap, seed),
            "confusion": confusion(queries.truths, top_rankings, CONFUSION_CLASSES),
            "calibration": calibration_metrics(table, selection, fetched, calibration, bootstrap, seed),
        },
        per_query=PerQuery([table.image_ids[r] for r in selection.queries], clusters, queries.groups, systems),
    )


class QueryView:
    """The query rows' fields, in query order."""

    def __init__(self, table: PointTable, selection: Selection):
        rows = selection.queries
        self.truths = [table.primary[r] for r in rows]
        self.label_sets = [table.label_sets[r] for r in rows]
        self.case_ids = [table.case_ids[r] for r in rows]
        self.vectors = table.vectors[rows]
        self.groups = {name: [values[r] for r in rows] for name, values in table.groups.items()}


def predict_all(
    table: PointTable,
    selection: Selection,
    found,
    queries: QueryView,
    auc_conditions: list[str],
    text_embedder,
    thresholds: dict | None = None,
    drawn=None,
) -> tuple[dict[str, Outcome], dict, dict[str, list[list[str]]]]:
    """The outcomes of every predictor, what the metrics file should record about them, and the
    rankings of the neighbour predictors (for the confusion matrices). `drawn`: the neighbours the
    suggestions are drawn from (the one suggestion rule's number; default `found`)."""
    suggested = p.suggestions(found if drawn is None else drawn, table, selection, **(thresholds or {}))
    knn = p.knn_majority(found, table, selection)
    systems = {
        "suggestions": prediction_outcome(suggested, queries, auc_conditions),
        "knn_majority": prediction_outcome(knn, queries, auc_conditions),
    }
    confident = np.array(suggested.confident, dtype=bool)
    top1 = systems["suggestions"].values["top1_accuracy"]
    systems["suggestions"].values["coverage"] = confident.astype(float)
    systems["suggestions"].values["top1_accuracy_when_confident"] = np.where(confident, top1, np.nan)
    extras = {"suggestion_thresholds": suggested.thresholds, "zero_shot": None}
    if text_embedder is not None:
        conditions = sorted({table.primary[r] for r in selection.reference if table.primary[r]} | set(auc_conditions))
        check_text_embedder(text_embedder, table)
        vectors = p.prompt_vectors(text_embedder, conditions)
        systems["zero_shot"] = prediction_outcome(
            p.zero_shot(queries.vectors, vectors, conditions), queries, auc_conditions
        )
        extras["zero_shot"] = {
            "model": getattr(text_embedder, "model_name", None),
            "template": ZERO_SHOT_PROMPT,
            "conditions": len(conditions),
        }
    return systems, extras, {"suggestions": suggested.rankings, "knn_majority": knn.rankings}


def check_text_embedder(embedder, table: PointTable) -> None:
    dim = getattr(embedder, "dim", None)
    if dim is not None and dim != table.vectors.shape[1]:
        raise ScinSearchError(
            f"zero-shot model {getattr(embedder, 'model_name', '?')!r} makes {dim}-d vectors, "
            f"the collection holds {table.vectors.shape[1]}-d: use the collection's model"
        )


def prediction_outcome(predictions: p.Predictions, queries: QueryView, auc_conditions: list[str]) -> Outcome:
    values = {
        "top1_accuracy": m.top_k_correct(predictions.rankings, queries.truths, 1),
        "top3_accuracy": m.top_k_correct(predictions.rankings, queries.truths, 3),
        "hit_at_1": m.hit_at_k(predictions.rankings, queries.label_sets, 1),
        "hit_at_3": m.hit_at_k(predictions.rankings, queries.label_sets, 3),
    }
    auc = (m.score_matrix(predictions.scores, auc_conditions), m.positive_matrix(queries.label_sets, auc_conditions))
    return Outcome(values, auc)


def recall_ks(k: int) -> list[int]:
    return sorted({j for j in (1, 5, 10) if j <= k} | {k})


def retrieval_outcome(neighbour_conditions: Sequence[Sequence[str | None]], truths: list, k: int) -> Outcome:
    return Outcome({f"recall@{j}": m.neighbour_recall(neighbour_conditions, truths, j) for j in recall_ks(k)})


def baseline_outcomes(
    table: PointTable, selection: Selection, chance, queries: QueryView, auc_conditions: list[str], k: int
) -> dict[str, Outcome]:
    """majority: always the reference pool's most frequent conditions (and, for recall@k, a search that
    only ever returns cases of the most frequent condition). random: k random admissible cases, voted."""
    pool = [table.primary[r] for r in selection.reference]
    ranking = m.frequency_ranking(pool)
    priors = {c: pool.count(c) / len(pool) for c in ranking}
    majority = prediction_outcome(p.constant(ranking, priors, len(queries.truths)), queries, auc_conditions)
    same = np.array([float(t == ranking[0]) for t in queries.truths])
    majority.values.update({f"recall@{j}": same for j in recall_ks(k)})
    random = prediction_outcome(p.knn_majority(chance, table, selection), queries, auc_conditions)
    random.values.update(retrieval_outcome(p.neighbour_conditions(chance, table, selection), queries.truths, k).values)
    return {"majority": majority, "random": random}


def counts(table: PointTable, selection: Selection, queries: QueryView, clusters: np.ndarray) -> dict:
    labelled = table.labelled
    return {
        "points": len(table),
        "labelled_points": int(labelled.sum()),
        "ungradable_labelled_points": int(
            sum(1 for gradable, is_labelled in zip(table.gradable, labelled) if is_labelled and gradable is False)
        ),
        "queries": len(selection.queries),
        "query_cases": int(len(np.unique(clusters))),
        "reference_points": len(selection.reference),
        "reference_cases": len({c for r in selection.reference for c in table.case_ids[r]}),
        "reference_conditions": len({table.primary[r] for r in selection.reference}),
        "queries_by_split": {
            s: sum(1 for r in selection.queries if (table.splits[r] or UNKNOWN) == s)
            for s in sorted({table.splits[r] or UNKNOWN for r in selection.queries})
        },
    }


def package_version() -> str:
    from scinsearch import __version__

    return __version__
