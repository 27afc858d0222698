"""Choose the suggestion thresholds from the collection's own evidence, and trace the trade-off.

`suggest.suggest_conditions` shows a suggestion only when the most similar labelled case has
similarity >= min_similarity, and the top condition has >= min_agreement of the weighted vote and
>= min_support supporting cases. Its ranking does not depend on the thresholds, so per query four
numbers decide everything: the best labelled similarity, the top condition's share and support, and
whether the top condition is among the query's dermatologist labels (a *hit*). From those, every
threshold combination's coverage (share of queries given a suggestion) and precision (share of
suggestions that are hits) is a count, computed exactly here for every similarity that occurs and an
agreement grid, and `choose` takes the combination with the best coverage whose precision meets the
target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from scinsearch.errors import ScinSearchError
from scinsearch.suggest import MIN_AGREEMENT, MIN_SIMILARITY, MIN_SUPPORT, normalised_labels, vote

AGREEMENT_GRID = tuple(round(0.05 * i, 2) for i in range(20))  # 0.00 ... 0.95
MIN_CONFIDENT_QUERIES = 20  # a precision measured on fewer suggestions than this is not evidence
FROZEN = {"min_similarity": MIN_SIMILARITY, "min_agreement": MIN_AGREEMENT, "min_support": MIN_SUPPORT}
CURVE_LEVELS = tuple(round(1 - 0.025 * i, 3) for i in range(40))  # 1.0, 0.975, ... 0.025: the plotted curve
TABLE_LEVELS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)  # the rows of its table


class TargetNotReached(ScinSearchError):
    """No thresholds reach the target precision; `best` is the most precise point measured (with at least
    the minimum number of suggestions), or None when none gives enough suggestions to measure."""

    def __init__(self, message: str, best: OperatingPoint | None):
        super().__init__(message)
        self.best = best


@dataclasses.dataclass
class QueryStats:
    """Per query: what the suggestion rule looks at, and whether its top condition is right."""

    best: np.ndarray  # best similarity among labelled neighbours; -inf when none is labelled
    agreement: np.ndarray  # the top condition's share of the weighted vote (0 when none)
    support: np.ndarray  # neighbours carrying the top condition (0 when none)
    hit: np.ndarray  # the top condition is among the query's dermatologist labels

    def __len__(self) -> int:
        return len(self.hit)


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    min_similarity: float
    min_agreement: float
    min_support: int
    confident: int  # queries given a suggestion
    hits: int  # of those, suggestions whose top condition is among the query's labels
    queries: int

    @property
    def coverage(self) -> float:
        return self.confident / self.queries if self.queries else 0.0

    @property
    def precision(self) -> float | None:
        return self.hits / self.confident if self.confident else None

    def thresholds(self) -> dict:
        return {
            "min_similarity": self.min_similarity,
            "min_agreement": self.min_agreement,
            "min_support": self.min_support,
        }

    def to_dict(self) -> dict:
        return {
            **self.thresholds(),
            "coverage": self.coverage,
            "precision": self.precision,
            "confident": self.confident,
        }


def query_stats(
    neighbours: Sequence[Sequence[tuple[float, Mapping[str, float]]]], label_sets: Sequence[frozenset[str]]
) -> QueryStats:
    """The four numbers per query, from its (similarity, weighted labels) neighbours, by `suggest.vote`."""
    n = len(neighbours)
    best, agreement = np.full(n, -np.inf), np.zeros(n)
    support, hit = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    for q, (pairs, labels) in enumerate(zip(neighbours, label_sets)):
        labelled = [float(s) for s, weights in pairs if normalised_labels(weights)]
        ranked = vote(pairs)
        if labelled and ranked:
            best[q] = max(labelled)
            agreement[q], support[q] = ranked[0].score, ranked[0].support
            hit[q] = ranked[0].condition in labels
    return QueryStats(best, agreement, support, hit)


def stats_of(found, table, selection) -> QueryStats:
    """`query_stats` of neighbours found by `vectors.neighbours.nearest` (a `Neighbours`, its
    `PointTable` and `Selection`)."""
    pairs = [
        [(float(s), table.weighted[selection.reference[pos]]) for pos, s in zip(row, sims) if pos >= 0]
        for row, sims in zip(found.indices, found.similarities)
    ]
    return query_stats(pairs, [table.label_sets[r] for r in selection.queries])


def confident_mask(stats: QueryStats, min_similarity: float, min_agreement: float, min_support: int) -> np.ndarray:
    """Which queries `suggest.judge` would show a suggestion for, at these thresholds."""
    return (
        np.isfinite(stats.best)
        & (stats.best >= min_similarity)
        & (stats.agreement >= min_agreement)
        & (stats.support >= min_support)
    )


def point_at(stats: QueryStats, min_similarity: float, min_agreement: float, min_support: int) -> OperatingPoint:
    mask = confident_mask(stats, min_similarity, min_agreement, min_support)
    return OperatingPoint(
        float(min_similarity),
        float(min_agreement),
        int(min_support),
        int(mask.sum()),
        int((mask & stats.hit).sum()),
        len(stats),
    )


def sweep(stats: QueryStats, max_support: int) -> dict[str, np.ndarray]:
    """Every (min_similarity, min_agreement, min_support) worth trying, with its confident and hit counts.

    min_similarity takes each similarity that occurs (a confident set changes only there), so nothing
    between grid points is missed; min_agreement the AGREEMENT_GRID; min_support 1..max_support."""
    order = np.argsort(-stats.best, kind="stable")
    ordered = stats.best[order]
    finite = np.isfinite(ordered)
    ends = np.flatnonzero(finite & np.r_[ordered[1:] != ordered[:-1], True])  # last row of each tie group
    columns: dict[str, list] = {name: [] for name in ("min_similarity", "min_agreement", "min_support")}
    confident, hits = [], []
    for agreement in AGREEMENT_GRID:
        for support in range(1, max(max_support, 1) + 1):
            eligible = ((stats.agreement >= agreement) & (stats.support >= support))[order] & finite
            confident.append(np.cumsum(eligible)[ends])
            hits.append(np.cumsum(eligible & stats.hit[order])[ends])
            columns["min_similarity"].append(ordered[ends])
            columns["min_agreement"].append(np.full(len(ends), agreement))
            columns["min_support"].append(np.full(len(ends), support))
    out = {name: np.concatenate(values) if values else np.zeros(0) for name, values in columns.items()}
    out["confident"] = np.concatenate(confident) if confident else np.zeros(0, dtype=np.int64)
    out["hits"] = np.concatenate(hits) if hits else np.zeros(0, dtype=np.int64)
    return out


def choose(
    stats: QueryStats, target_precision: float, max_support: int, min_confident: int = MIN_CONFIDENT_QUERIES
) -> OperatingPoint:
    """The thresholds with the most suggestions whose precision is at least the target (ties: higher
    precision, then the stricter thresholds). A one-line error when no combination reaches it."""
    if not 0 < target_precision <= 1:
        raise ScinSearchError(f"the target precision must be above 0 and at most 1, not {target_precision}")
    table = sweep(stats, max_support)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(table["confident"] > 0, table["hits"] / np.maximum(table["confident"], 1), 0.0)
    feasible = (table["confident"] >= min_confident) & (precision >= target_precision - 1e-12)
    if not feasible.any():
        best = most_precise(table, precision, min_confident, len(stats))
        reached = f"at most {best.precision:.1%}" if best else "no threshold gives enough suggestions to measure"
        raise TargetNotReached(
            f"no suggestion thresholds reach {target_precision:.0%} precision on the train split "
            f"({reached}, with at least {min_confident} suggestions among {len(stats)} queries)",
            best,
        )
    rows = np.flatnonzero(feasible)
    keys = (
        table["min_similarity"][rows],
        table["min_support"][rows],
        table["min_agreement"][rows],
        precision[rows],
        table["confident"][rows],
    )
    return point_of(table, rows[np.lexsort(keys)[-1]], len(stats))  # lexsort: the last key is the primary one


def most_precise(table: dict, precision: np.ndarray, min_confident: int, queries: int) -> OperatingPoint | None:
    """The swept thresholds with the highest precision among those giving at least `min_confident`
    suggestions (ties: more suggestions), or None."""
    rows = np.flatnonzero(table["confident"] >= min_confident)
    if not len(rows):
        return None
    return point_of(table, rows[np.lexsort((table["confident"][rows], precision[rows]))[-1]], queries)


def point_of(table: dict, row: int, queries: int) -> OperatingPoint:
    """Row `row` of a `sweep` table."""
    return OperatingPoint(
        float(table["min_similarity"][row]),
        float(table["min_agreement"][row]),
        int(table["min_support"][row]),
        int(table["confident"][row]),
        int(table["hits"][row]),
        queries,
    )


def frontier(stats: QueryStats, max_support: int, levels: Sequence[float] = CURVE_LEVELS) -> list[dict]:
    """The trade-off curve: for each coverage level, the best precision any thresholds reach while still
    giving a suggestion to at least that share of the queries (and those thresholds)."""
    table = sweep(stats, max_support)
    n = len(stats)
    rows = []
    for level in levels:
        enough = np.flatnonzero((table["confident"] >= max(np.ceil(level * n - 1e-9), 1)) & (table["confident"] > 0))
        if not len(enough):
            rows.append({"coverage_at_least": level, "precision": None, "coverage": None})
            continue
        precision = table["hits"][enough] / table["confident"][enough]
        i = enough[int(np.argmax(precision))]
        rows.append(
            {
                "coverage_at_least": level,
                "precision": float(table["hits"][i] / table["confident"][i]),
                "coverage": float(table["confident"][i] / n),
                "min_similarity": float(table["min_similarity"][i]),
                "min_agreement": float(table["min_agreement"][i]),
                "min_support": int(table["min_support"][i]),
            }
        )
    return rows
