"""`scinsearch calibrate`: derive a collection's suggestion thresholds, "nothing alike" cut and gradability
probe from its own train split, and record them with the collection.

Everything is learnt from the train split only, so the test split stays an honest check for
`scinsearch evaluate`:

- thresholds: a leave-case-out search on the train split (each labelled image of a gradable case asks the
  other train cases, its own case masked, the k neighbouring cases every suggestion is then drawn from),
  then `thresholds.choose` for the target precision. When no thresholds reach it, suggestions are recorded
  as off (with the best precision reached and its coverage) and the rest is still calibrated, so the kiosk
  is never left on provisional thresholds, probe and cut; `strict` fails instead;
- nothing alike: each train image's most similar image of another train case; the cut is a low percentile
  of those similarities, so about that share of the collection's own photos would be flagged;
- the gradability probe (`probe.train_probe`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

from scinsearch import rules, suggest
from scinsearch.calibration import thresholds as th
from scinsearch.calibration.probe import train_probe
from scinsearch.calibration.record import OFF, Calibration, save_calibration
from scinsearch.errors import ScinSearchError
from scinsearch.schema import TRAIN_SPLIT
from scinsearch.settings import Settings
from scinsearch.vectors import metrics as m
from scinsearch.vectors.neighbours import (
    PointTable,
    Selection,
    case_clusters,
    exclusions,
    nearest,
    nearest_other_case,
    read_collection,
)

DEFAULT_TARGET_PRECISION = 0.80
DEFAULT_PERCENTILE = 5.0  # of the train images' nearest-other-case similarities: the "nothing alike" cut


@dataclasses.dataclass
class CalibrationResult:
    calibration: Calibration
    written: bool

    @property
    def warning(self) -> str | None:
        """One line when suggestions were recorded as off, else None."""
        t = self.calibration.thresholds
        if not self.calibration.suggestions_off:
            return None
        return (
            f"Warning: suggestions are off for this collection: no thresholds reach {t['target_precision']:.0%} "
            f"precision on the train split ({reached(t.get('best'))}); every answer will abstain. Re-run with a "
            f"lower --target-precision to turn them on, or --strict to fail instead."
        )

    def summary_lines(self, collection: str) -> list[str]:
        c = self.calibration
        lines = [f"calibrated {collection} ({c.model}, {c.points} points) from its train split:"]
        lines += off_lines(c.thresholds) if c.suggestions_off else threshold_lines(c.thresholds)
        lines.append(
            f"  nothing alike: best similarity below {c.cut:.4f} (percentile {c.nothing_alike['percentile']:g} of "
            f"{c.nothing_alike['images']} train images' most similar other case)"
        )
        if c.probe is not None:
            training = c.probe.training
            lines.append(
                f"  gradability probe: held-out AUC {training['held_out_auc']:.3f} on "
                f"{training['held_out_images']} images (trained on {training['images']}, "
                f"{training['not_gradable']} not gradable)"
            )
        else:
            lines.append(f"  gradability probe: not trained: {c.probe_note}")
        lines.append("written to the collection's record" if self.written else "dry run: nothing written")
        return lines


def threshold_lines(t: dict) -> list[str]:
    train, frozen = t["train"], t["frozen_on_train"]
    return [
        f"  suggestion thresholds for >= {t['target_precision']:.0%} precision (the top condition is among "
        f"the case's labels), {t['k']} neighbouring cases:",
        f"    min_similarity {t['min_similarity']:.4f} (default {th.FROZEN['min_similarity']}), "
        f"min_agreement {t['min_agreement']:.2f} (default {th.FROZEN['min_agreement']}), "
        f"min_support {t['min_support']} (default {th.FROZEN['min_support']})",
        f"    train leave-case-out: a suggestion for {percent(train['coverage'])} {ci(train['coverage_ci95'])} "
        f"of {train['queries']} queries, {percent(train['precision'])} {ci(train['precision_ci95'])} of them right",
        f"    the default thresholds there: {percent(frozen['coverage'])} coverage, "
        f"{percent(frozen['precision'])} right",
    ]


def off_lines(t: dict) -> list[str]:
    return [
        f"  suggestions: OFF: no thresholds reach {t['target_precision']:.0%} precision with {t['k']} neighbouring "
        f"cases ({reached(t.get('best'))})",
    ]


def reached(best: dict | None) -> str:
    if not best:
        return "no thresholds give enough suggestions to measure"
    return f"best {percent(best['precision'])} right, at {percent(best['coverage'])} coverage"


def percent(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def ci(interval) -> str:
    return "" if not interval else f"[{interval[0]:.1%}, {interval[1]:.1%}]"


def calibrate_collection(
    settings: Settings,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    k: int = suggest.NEIGHBOURS,
    percentile: float = DEFAULT_PERCENTILE,
    write: bool = True,
    bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = False,
    store=None,
    strict: bool = False,
) -> CalibrationResult:
    """Calibrate the collection `settings` names (or the open `store` given, which is left open) and,
    unless `write` is False, record the result in it. Nothing is written when any part fails (with
    `strict`, also when no suggestion thresholds reach the target)."""
    from scinsearch.store import open_store

    owned = store is None
    store = open_store(settings) if owned else store
    try:
        info, table = read_collection(settings, progress=progress, store=store)
        calibration = calibrate_table(
            table, info.model, info.dim, target_precision, k, percentile, bootstrap, seed, strict=strict
        )
        calibration.adapter = info.adapter_id
        if write:
            save_calibration(store, calibration)
    finally:
        if owned:
            store.close()
    return CalibrationResult(calibration, write)


def calibrate_table(
    table: PointTable,
    model: str,
    dim: int,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    k: int = suggest.NEIGHBOURS,
    percentile: float = DEFAULT_PERCENTILE,
    bootstrap: int = 1000,
    seed: int = 0,
    strict: bool = False,
) -> Calibration:
    """The calibration of points already in memory (see `calibrate_collection`)."""
    if not 1 <= k <= rules.MAX_TOP_K:
        raise ScinSearchError(f"--k must be from 1 to {rules.MAX_TOP_K}")
    if not 0 < percentile < 100:
        raise ScinSearchError(f"the nothing-alike percentile must be between 0 and 100, not {percentile}")
    if table.vectors.shape[1] != dim:
        raise ScinSearchError(f"the collection records {dim}-d vectors but holds {table.vectors.shape[1]}-d ones")
    train = np.array([s == TRAIN_SPLIT for s in table.splits], dtype=bool)
    if not train.any():
        raise ScinSearchError("the collection has no train split to calibrate on (the `split` payload field)")
    probe, note = None, None
    try:
        probe = probe_of(table, train, model)
    except ScinSearchError as exc:
        note = str(exc)
    from scinsearch import __version__

    return Calibration(
        model,
        dim,
        suggestion_thresholds(table, train, target_precision, k, bootstrap, seed, strict),
        nothing_alike(table, train, percentile),
        probe,
        note,
        len(table),
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        __version__,
    )


def train_stats(table: PointTable, train: np.ndarray, k: int) -> tuple[th.QueryStats, Selection]:
    """Leave-case-out suggestion statistics of the train split: labelled images of gradable cases ask the
    labelled train images of the other cases (the evaluation's protocol, restricted to train)."""
    labelled = table.labelled
    gradable = np.array([g is not False for g in table.gradable], dtype=bool)
    queries, reference = np.flatnonzero(train & labelled & gradable), np.flatnonzero(train & labelled)
    if len(queries) == 0 or len(reference) == 0:
        raise ScinSearchError("the train split has no labelled images of gradable cases to calibrate the suggestions")
    selection = Selection("train-leave-case-out", queries, reference)
    found = nearest(table, selection, exclusions(table, selection), k, per_case=True)
    return th.stats_of(found, table, selection), selection


def suggestion_thresholds(
    table: PointTable, train: np.ndarray, target_precision: float, k: int, bootstrap: int, seed: int, strict=False
) -> dict:
    stats, selection = train_stats(table, train, k)
    try:
        chosen = th.choose(stats, target_precision, max_support=k)
    except th.TargetNotReached as exc:
        if strict:
            raise ScinSearchError(f"{exc}: lower --target-precision") from None
        best = exc.best.to_dict() if exc.best is not None else None
        return {"suggestions": OFF, "target_precision": target_precision, "k": k, "best": best}
    mask = th.confident_mask(stats, chosen.min_similarity, chosen.min_agreement, chosen.min_support)
    weights = m.cluster_weights(case_clusters([table.case_ids[r] for r in selection.queries]), bootstrap, seed)
    coverage_ci = m.mean_with_interval(mask.astype(float), weights)[1]
    precision_ci = m.mean_with_interval(np.where(mask, stats.hit, np.nan), weights)[1]
    return {
        **chosen.thresholds(),
        "target_precision": target_precision,
        "k": k,
        "train": {
            "queries": len(stats),
            "coverage": chosen.coverage,
            "precision": chosen.precision,
            "coverage_ci95": coverage_ci,
            "precision_ci95": precision_ci,
        },
        "frozen_on_train": th.point_at(stats, **th.FROZEN).to_dict(),
    }


def nothing_alike(table: PointTable, train: np.ndarray, percentile: float) -> dict:
    rows = np.flatnonzero(train)
    similarities = nearest_other_case(table, rows, rows)
    similarities = similarities[np.isfinite(similarities)]
    if len(similarities) < 2:
        raise ScinSearchError("the train split needs images of at least two cases to derive the nothing-alike cut")
    return {
        "cut": float(np.percentile(similarities, percentile)),
        "percentile": percentile,
        "images": len(similarities),
    }


def probe_of(table: PointTable, train: np.ndarray, model: str):
    rows = np.flatnonzero(train & np.array([g is not None for g in table.gradable], dtype=bool))
    clusters = case_clusters([table.case_ids[r] for r in rows])
    representative: dict[int, str] = {}
    for row, cluster in zip(rows, clusters):
        first = min(table.case_ids[row])
        representative[int(cluster)] = min(representative.get(int(cluster), first), first)
    keys = [representative[int(c)] for c in clusters]
    gradable = np.array([table.gradable[r] for r in rows], dtype=bool)
    return train_probe(table.vectors[rows], gradable, keys, model)
