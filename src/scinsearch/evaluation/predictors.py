"""Turn neighbours (or a text tower) into ranked condition predictions with per-condition scores.

Predictors compared:
- `suggestions`: the search API's own rule (`scinsearch.suggest.suggest_conditions`), so the number
  measured is the number a user of the search gets; its score is the similarity-weighted label mass.
- `knn_majority`: plain kNN, one vote per neighbour for its highest-weighted label; score = vote share.
- `constant`: the same ranking for every query (the majority-class baseline); its scores are the
  class priors, identical for all queries, so its AUC is exactly 0.5.
- `zero_shot`: the condition names through the text tower (`rules.ZERO_SHOT_PROMPT`), no neighbours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from scinsearch.rules import ZERO_SHOT_PROMPT
from scinsearch.suggest import suggest_conditions
from scinsearch.vectors.metrics import majority_vote, vote_shares
from scinsearch.vectors.neighbours import Neighbours, PointTable, Selection

ALL_SUGGESTIONS = 1_000_000  # the ranking is what is scored; the API's shown list is cut to 5 later


@dataclasses.dataclass
class Predictions:
    """Per query: conditions best first, a score per condition (for AUC), and for predictors that can
    abstain, whether the prediction would be shown as confident."""

    rankings: list[list[str]]
    scores: list[dict[str, float]]
    confident: list[bool] | None = None
    thresholds: dict | None = None


def neighbour_conditions(neighbours: Neighbours, table: PointTable, selection: Selection) -> list[list[str | None]]:
    """The primary condition of each neighbour, most similar first (padding dropped)."""
    return [[table.primary[selection.reference[pos]] for pos in row if pos >= 0] for row in neighbours.indices]


def knn_majority(neighbours: Neighbours, table: PointTable, selection: Selection) -> Predictions:
    conditions = neighbour_conditions(neighbours, table, selection)
    similarities = [
        [s for pos, s in zip(row, sims) if pos >= 0] for row, sims in zip(neighbours.indices, neighbours.similarities)
    ]
    return Predictions(
        [majority_vote(c, s) for c, s in zip(conditions, similarities)], [vote_shares(c) for c in conditions]
    )


def suggestions(neighbours: Neighbours, table: PointTable, selection: Selection, **thresholds) -> Predictions:
    """Run the search API's suggestion rule on each query's neighbours."""
    rankings, scores, confident, used = [], [], [], {}
    for row, sims in zip(neighbours.indices, neighbours.similarities):
        pairs = [(float(s), table.weighted[selection.reference[pos]]) for pos, s in zip(row, sims) if pos >= 0]
        result = suggest_conditions(pairs, max_suggestions=ALL_SUGGESTIONS, **thresholds)
        rankings.append([item.condition for item in result.items])
        scores.append({item.condition: item.score for item in result.items})
        confident.append(bool(result.confident))
        used = result.thresholds
    return Predictions(rankings, scores, confident, dict(used))


def constant(ranking: Sequence[str], priors: dict[str, float], n_queries: int) -> Predictions:
    return Predictions([list(ranking)] * n_queries, [priors] * n_queries)


def zero_shot(query_vectors: np.ndarray, text_vectors: np.ndarray, conditions: Sequence[str]) -> Predictions:
    """Rank conditions by cosine between the image and each condition prompt (argmax = prediction).
    Cosine is a monotone stand-in for SigLIP's sigmoid(logit), so rankings and AUC are the same."""
    similarity = query_vectors @ text_vectors.T
    order = np.argsort(-similarity, axis=1, kind="stable")
    rankings = [[conditions[j] for j in row] for row in order]
    scores = [dict(zip(conditions, map(float, row))) for row in similarity]
    return Predictions(rankings, scores)


def prompt_vectors(
    embedder, conditions: Sequence[str], template: str = ZERO_SHOT_PROMPT, batch: int = 64
) -> np.ndarray:
    """Text-tower vectors of one prompt per condition, in batches."""
    prompts = [template.format(condition=c) for c in conditions]
    return np.concatenate([embedder.embed_texts(prompts[i : i + batch]) for i in range(0, len(prompts), batch)])
