"""Soundness checks of a collection's vectors, each a count and a list a person can open point by point.

- near duplicates: two images of different cases (no case in common) whose cosine similarity is at least
  NEAR_DUPLICATE_COSINE: the same photo uploaded twice, or a re-encoded copy;
- label-noise candidates: a labelled image whose LABEL_NOISE_K nearest labelled cases (leave-case-out:
  never its own case, one vote per case) carry one other condition at least LABEL_NOISE_SHARE of the
  time. Only images whose condition has at least LABEL_NOISE_K other cases are judged (a rarer condition
  cannot fill its own neighbourhood, so its neighbours always carry other labels);
- far-apart cases: a case with two or more images, two of which are less alike than the median pair of
  images from different cases (its photos look no more alike than two strangers' photos);
- vector norms: every stored vector should be unit length (within NORM_TOLERANCE); the search's cosine
  assumes it.

Neighbours are exact (a cosine matrix product in numpy, in chunks, `vectors.neighbours`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

from scinsearch.vectors.neighbours import (
    PointTable,
    Selection,
    exclusions,
    masked_top_k,
    nearest,
)

NEAR_DUPLICATE_COSINE = 0.98
LABEL_NOISE_K = 10
LABEL_NOISE_SHARE = 0.8
NORM_TOLERANCE = 1e-3
NEIGHBOURS_SHOWN = 8  # nearest images of other cases kept per point (the page's click panel)
LIST_LIMIT = 500  # rows kept per check (the count is always the full one)
RANDOM_PAIRS = 20_000  # pairs of images of different cases drawn to find the median stranger similarity


@dataclasses.dataclass
class Neighbourhood:
    """Each point's nearest images of other cases (leave-case-out), most similar first; -1 pads."""

    indices: np.ndarray  # (n, k) int
    similarities: np.ndarray  # (n, k) float32


def other_case_neighbours(table: PointTable, k: int = NEIGHBOURS_SHOWN) -> Neighbourhood:
    """Every point against every point, its own case(s) and its own image masked."""
    everyone = np.arange(len(table))
    selection = Selection("explore", everyone, everyone)
    hidden = exclusions(table, selection)
    vectors = table.vectors
    idx, sims = masked_top_k(lambda rows: vectors[rows] @ vectors.T, len(table), hidden, k)
    return Neighbourhood(idx, np.where(idx >= 0, sims, np.nan).astype(np.float32))


def check(check_id: str, title: str, rule: str, columns: list[str], rows: list[list], points: list[list[int]]) -> dict:
    return {
        "id": check_id,
        "title": title,
        "rule": rule,
        "count": len(rows),
        "columns": columns,
        "rows": rows[:LIST_LIMIT],
        "points": points[:LIST_LIMIT],
    }


def near_duplicates(table: PointTable, neighbourhood: Neighbourhood) -> dict:
    """Pairs of images from different cases at or above NEAR_DUPLICATE_COSINE, most similar first."""
    pairs: dict[tuple[int, int], float] = {}
    for i, (row, sims) in enumerate(zip(neighbourhood.indices, neighbourhood.similarities)):
        for j, sim in zip(row, sims):
            if j >= 0 and sim >= NEAR_DUPLICATE_COSINE:
                pairs[min(i, int(j)), max(i, int(j))] = float(sim)
    ranked = sorted(pairs.items(), key=lambda item: -item[1])
    rows = [
        [table.image_ids[a], table.case_ids[a][0], table.image_ids[b], table.case_ids[b][0], round(s, 4)]
        for (a, b), s in ranked
    ]
    return check(
        "near_duplicates",
        "Near-duplicate images in different cases",
        f"cosine similarity at least {NEAR_DUPLICATE_COSINE} between images that share no case",
        ["image", "case", "other image", "other case", "cosine"],
        rows,
        [[a, b] for (a, b), _ in ranked],
    )


def label_noise(table: PointTable) -> dict:
    """Labelled images whose nearest labelled cases overwhelmingly carry one other condition."""
    labelled = np.array([p is not None for p in table.primary], dtype=bool)
    cases_per_condition: dict[str, set[str]] = collections.defaultdict(set)
    for label, cases in zip(table.primary, table.case_ids):
        if label is not None:
            cases_per_condition[label].update(cases)
    judged = np.array(
        [
            label is not None and len(cases_per_condition[label] - set(cases)) >= LABEL_NOISE_K
            for label, cases in zip(table.primary, table.case_ids)
        ],
        dtype=bool,
    )
    rows, points = [], []
    if judged.any():
        selection = Selection("label-noise", np.flatnonzero(judged), np.flatnonzero(labelled))
        found = nearest(table, selection, exclusions(table, selection), LABEL_NOISE_K, per_case=True)
        for query, row in zip(selection.queries, found.indices):
            labels = [table.primary[selection.reference[pos]] for pos in row if pos >= 0]
            if not labels:
                continue
            other, votes = collections.Counter(labels).most_common(1)[0]
            own = table.primary[query]
            if other != own and votes / len(labels) >= LABEL_NOISE_SHARE:
                rows.append([table.image_ids[query], table.case_ids[query][0], own, other, f"{votes}/{len(labels)}"])
                points.append([int(query)])
    result = check(
        "label_noise",
        "Label-noise candidates",
        f"at least {LABEL_NOISE_SHARE:.0%} of the {LABEL_NOISE_K} nearest labelled cases (never its own) carry one "
        f"other condition; judged only where the condition has {LABEL_NOISE_K}+ other cases",
        ["image", "case", "its condition", "its neighbours' condition", "votes"],
        rows,
        points,
    )
    result["judged"] = int(judged.sum())
    return result


def stranger_similarity(table: PointTable, seed: int = 0) -> float:
    """The median cosine similarity of two images of different cases (random pairs, fixed seed)."""
    n = len(table)
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, RANDOM_PAIRS), rng.integers(0, n, RANDOM_PAIRS)
    keep = [i for i in range(RANDOM_PAIRS) if not set(table.case_ids[a[i]]) & set(table.case_ids[b[i]])]
    if not keep:
        return float("nan")
    sims = np.einsum("ij,ij->i", table.vectors[a[keep]], table.vectors[b[keep]])
    return float(np.median(sims))


def far_apart_cases(table: PointTable) -> dict:
    """Cases with two images less alike than the median pair of strangers."""
    bar = stranger_similarity(table)
    members: dict[str, list[int]] = collections.defaultdict(list)
    for i, cases in enumerate(table.case_ids):
        for case in cases:
            members[case].append(i)
    found = []
    for case, rows in members.items():
        if len(rows) < 2:
            continue
        sims = table.vectors[rows] @ table.vectors[rows].T
        lowest = float(sims[np.triu_indices(len(rows), 1)].min())
        if lowest < bar:
            found.append((lowest, case, rows))
    found.sort(key=lambda item: item[0])
    return check(
        "far_apart_cases",
        "Cases whose images are far from each other",
        f"two images of the case are less alike than the median pair of images of different cases "
        f"(cosine {bar:.3f} here)",
        ["case", "images", "lowest cosine", "condition"],
        [[case, len(rows), round(low, 4), table.primary[rows[0]] or ""] for low, case, rows in found],
        [rows for _, _, rows in found],
    )


def vector_norms(image_ids: Sequence[str], norms: np.ndarray) -> dict:
    """Stored vectors that are not unit length (the norms as stored, before any normalisation)."""
    bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    bad = bad[np.argsort(-np.abs(norms[bad] - 1.0), kind="stable")]
    return check(
        "vector_norms",
        "Vectors that are not unit length",
        f"|norm - 1| above {NORM_TOLERANCE}",
        ["image", "norm"],
        [[image_ids[i], round(float(norms[i]), 6)] for i in bad],
        [[int(i)] for i in bad],
    )


def soundness(table: PointTable, norms: np.ndarray, neighbourhood: Neighbourhood) -> list[dict]:
    """Every check, in the order the page shows them."""
    return [
        near_duplicates(table, neighbourhood),
        label_noise(table),
        far_apart_cases(table),
        vector_norms(table.image_ids, norms),
    ]
