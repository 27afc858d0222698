"""Condition suggestions from labelled neighbours: a similarity-weighted vote that knows when to abstain.

Pure functions (no model, no store), so search, the service and the evaluation share one rule and the
evaluation can sweep its thresholds.

The rule, for the neighbours of one query, each a (cosine similarity, dermatologist weighted labels) pair:

0. The neighbours are the `NEIGHBOURS` most similar labelled cases (or the calibrated number), one per
   case, whatever number of cases a search lists (`Searcher.suggestion_pool`).
1. Each neighbour votes with weight `max(similarity, 0)`. Its label weights are normalised to sum to 1
   (SCIN's already do), so one case cannot outvote another by having more labels.
2. score(condition) = sum over neighbours of weight * label share / sum of the weights of *all*
   neighbours. Unlabelled neighbours (empty dict) add to the denominator but to no condition: they
   are similar cases without evidence, so they dilute the vote. Scores therefore sum to at most 1.
3. support(condition) = how many neighbours have the condition among their labels.
4. Confident only when all of these hold, checked in this order (the first failure is the reason):
   - at least one neighbour is labelled;
   - the most similar labelled neighbour has similarity >= `min_similarity`
     ("the closest cases are not similar enough");
   - the top condition's score >= `min_agreement` and its support >= `min_support`
     ("the similar cases disagree").

The ranking (`items`) is computed either way, so an evaluation can score it at any threshold; what is
shown to a health worker must respect `confident` (see `Suggestions.to_dict`), because ranking noise
as if it were evidence is what a decision-support tool must not do.

Default thresholds are for image-to-image cosine similarity of SigLIP embeddings and were set by hand;
`scinsearch calibrate` derives a collection's own from its train split for a stated precision
(`scinsearch.calibration.thresholds`), and search uses those when present. Text-to-image cosines are far
lower (see `TEXT_MIN_SIMILARITY`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

MIN_SIMILARITY = 0.60  # image-image cosine below which a neighbour is not "a similar case"
TEXT_MIN_SIMILARITY = 0.10  # text-image cosine: about where a trained SigLIP's sigmoid(logit) crosses 0.5
MIN_AGREEMENT = 0.35  # share of the similarity-weighted vote the top condition needs
MIN_SUPPORT = 2  # one neighbour alone is an anecdote, not agreement
MAX_SUGGESTIONS = 5
# The one rule for how many cases a suggestion is drawn from: the NEIGHBOURS most similar labelled cases
# (one per case, matching the query's filters), whatever number of cases is listed. A calibrated collection
# records its own (`calibrate --k`, `calibration.record.suggestion_neighbours`); this is the default
# otherwise. Five: what a health worker can check case by case, and what the default thresholds were set for.
NEIGHBOURS = 5

NO_NEIGHBOURS = "no confident suggestion: no similar cases were found"
NO_LABELS = "no confident suggestion: none of the similar cases has a dermatologist label"
NOT_SIMILAR = "no confident suggestion: the closest cases are not similar enough"
DISAGREE = "no confident suggestion: the similar cases disagree"
# Set by the search on every answer when `calibrate` found no thresholds reaching its target precision.
SUGGESTIONS_OFF = (
    "no confident suggestion: suggestions are off for this collection, because calibration found that they "
    "would not be right often enough"
)
# Set by the search when the best match is below the collection's "nothing alike" cut (`quality`).
NOTHING_ALIKE = "no confident suggestion: no sufficiently similar case exists, the closest cases are not similar enough"


@dataclasses.dataclass(frozen=True)
class ConditionSuggestion:
    """One condition: its share of the weighted vote, how many neighbours carry it, and the closest one's similarity."""

    condition: str
    score: float
    support: int
    best_similarity: float = 0.0

    def to_dict(self) -> dict:
        return {
            "condition": self.condition,
            "score": round(self.score, 4),
            "support": self.support,
            "best_similarity": round(self.best_similarity, 4),
        }


@dataclasses.dataclass
class Suggestions:
    """The ranked conditions, whether they may be shown as a suggestion, and why (or why not)."""

    items: list[ConditionSuggestion]
    confident: bool
    reason: str
    neighbours: int = 0
    labelled_neighbours: int = 0
    thresholds: dict = dataclasses.field(default_factory=dict)
    thresholds_source: str = "default"  # "default", "calibrated" (the collection's) or "given" (by the caller)

    def abstain(self, reason: str) -> None:
        """No suggestion after all (the ranking stays computed, for evaluation), for `reason`."""
        self.confident, self.reason = False, reason

    @property
    def top(self) -> ConditionSuggestion | None:
        return self.items[0] if self.items else None

    def to_dict(self, include_unconfident: bool = False) -> dict:
        """JSON form. `conditions` is empty when not confident (abstention is the answer), unless
        `include_unconfident` asks for the weak ranking too (for evaluation and debugging)."""
        shown = self.items if self.confident or include_unconfident else []
        return {
            "confident": self.confident,
            "reason": self.reason,
            "conditions": [item.to_dict() for item in shown],
            "neighbours": self.neighbours,
            "labelled_neighbours": self.labelled_neighbours,
            "thresholds": dict(self.thresholds),
            "thresholds_source": self.thresholds_source,
            "method": "similarity-weighted vote of the neighbours' dermatologist label weights",
        }


def normalised_labels(labels: Mapping[str, float] | None) -> dict[str, float]:
    """Label weights scaled to sum to 1; non-numeric, negative or non-finite weights are dropped."""
    clean = {}
    for name, weight in (labels or {}).items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            continue
        if isinstance(name, str) and name.strip() and math.isfinite(weight) and weight > 0:
            clean[name.strip()] = clean.get(name.strip(), 0.0) + float(weight)
    total = sum(clean.values())
    return {name: weight / total for name, weight in clean.items()} if total > 0 else {}


def vote(neighbours: Sequence[tuple[float, Mapping[str, float]]]) -> list[ConditionSuggestion]:
    """Every condition among the neighbours' labels, ranked by similarity-weighted share (rule steps 1-3)."""
    scores: dict[str, float] = {}
    support: dict[str, int] = {}
    closest: dict[str, float] = {}
    total = 0.0
    for similarity, labels in neighbours:
        weight = max(float(similarity), 0.0) if math.isfinite(float(similarity)) else 0.0
        total += weight
        for name, share in normalised_labels(labels).items():
            scores[name] = scores.get(name, 0.0) + weight * share
            support[name] = support.get(name, 0) + 1
            closest[name] = max(closest.get(name, -1.0), float(similarity))
    items = [
        ConditionSuggestion(name, score / total if total > 0 else 0.0, support[name], closest[name])
        for name, score in scores.items()
    ]
    return sorted(items, key=lambda item: (-item.score, -item.support, item.condition))


def suggest_conditions(
    neighbours: Sequence[tuple[float, Mapping[str, float]]],
    *,
    min_similarity: float = MIN_SIMILARITY,
    min_agreement: float = MIN_AGREEMENT,
    min_support: int = MIN_SUPPORT,
    max_suggestions: int = MAX_SUGGESTIONS,
) -> Suggestions:
    """Rank conditions by the neighbours' label weights and decide whether the ranking is evidence.

    `neighbours`: (cosine similarity, weighted labels) per neighbouring case, e.g. one per case of a
    search. See the module docstring for the rule; the thresholds are parameters so they can be swept."""
    thresholds = {"min_similarity": min_similarity, "min_agreement": min_agreement, "min_support": min_support}
    ranked = vote(neighbours)
    labelled = [similarity for similarity, labels in neighbours if normalised_labels(labels)]
    confident, reason = judge(ranked, labelled, len(neighbours), min_similarity, min_agreement, min_support)
    return Suggestions(ranked[: max(max_suggestions, 0)], confident, reason, len(neighbours), len(labelled), thresholds)


def judge(
    ranked: list[ConditionSuggestion],
    labelled_similarities: list[float],
    count: int,
    min_similarity: float,
    min_agreement: float,
    min_support: int,
) -> tuple[bool, str]:
    """Rule step 4: (confident, reason); the first failing check names the reason."""
    if count == 0:
        return False, NO_NEIGHBOURS
    if not labelled_similarities or not ranked:
        return False, NO_LABELS
    best = max(labelled_similarities)
    if best < min_similarity:
        return False, f"{NOT_SIMILAR} (best similarity {best:.2f} < {min_similarity:.2f})"
    top = ranked[0]
    if top.score < min_agreement or top.support < min_support:
        return False, (
            f"{DISAGREE} (top condition {top.condition!r}: {top.score:.0%} of the weighted vote, "
            f"{top.support} of {count} cases)"
        )
    return True, (
        f"{top.support} of {count} similar cases carry {top.condition!r} "
        f"({top.score:.0%} of the similarity-weighted vote)"
    )
