"""Synthetic embeddings with the structure real ones have, for store benchmarks and recall tests.

Isotropic random unit vectors are the worst case for an approximate index and nothing like image
embeddings: all their pairwise cosines are ~0, so the nearest neighbour is barely nearer than the rest.
`ClusteredSpace` builds each vector from unit directions of decreasing reach, so that the cosine of two
vectors depends on what they share (the squared weights in `SHARES`):

- one direction shared by every vector (embeddings of one model are anisotropic): 0.25 for any pair;
- a super-cluster (SUPER_CLUSTERS, think body site or lighting): +0.15;
- a cluster (a condition's look; a few hundred, long-tailed in size): +0.25;
- a case (1-3 photos of one patient's skin, as in SCIN: ~2.1 per case): +0.20;
- the image's own part: 0.15.

So unrelated images sit near cosine 0.25, the same condition near 0.65 and photos of one case near
0.85: the spread of SigLIP image similarities, and a case's photos crowd the top of a result list, which
is what one-result-per-case grouping has to handle. Queries are new cases of existing clusters (a new
patient with a known condition). Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

SHARES = {"common": 0.25, "super": 0.15, "cluster": 0.25, "case": 0.20, "image": 0.15}
SUPER_CLUSTERS = 20
IMAGES_PER_CASE = (1, 2, 3)
IMAGES_PER_CASE_P = (0.30, 0.33, 0.37)  # mean ~2.07 images per case, as in SCIN (10,379 / 5,033)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)


class ClusteredSpace:
    """`clusters` clusters of cases of images in `dim` dimensions (see the module's docstring)."""

    def __init__(self, dim: int = 768, clusters: int = 300, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim, self.clusters, self.seed = dim, clusters, seed
        self.common = unit_rows(rng.standard_normal(dim, dtype=np.float32))
        self.supers = unit_rows(rng.standard_normal((SUPER_CLUSTERS, dim), dtype=np.float32))
        self.centres = unit_rows(rng.standard_normal((clusters, dim), dtype=np.float32))
        self.super_of_cluster = rng.integers(SUPER_CLUSTERS, size=clusters)
        popularity = 1.0 / np.arange(1, clusters + 1) ** 0.7  # a long tail of rare conditions
        self.cluster_p = popularity / popularity.sum()

    def points(self, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(count x dim unit vectors, the case number of each), cases of 1-3 consecutive images."""
        rng = np.random.default_rng([self.seed, seed])
        sizes = rng.choice(IMAGES_PER_CASE, size=count, p=IMAGES_PER_CASE_P)
        case_of_point = np.repeat(np.arange(count), sizes)[:count]
        cases = int(case_of_point[-1]) + 1 if count else 0
        clusters = rng.choice(self.clusters, size=cases, p=self.cluster_p)
        return self._vectors(rng, clusters, case_of_point), case_of_point

    def queries(self, count: int, seed: int = 2) -> np.ndarray:
        """`count` photos of new cases of existing clusters."""
        rng = np.random.default_rng([self.seed, seed])
        clusters = rng.choice(self.clusters, size=count, p=self.cluster_p)
        return self._vectors(rng, clusters, np.arange(count))

    def _vectors(self, rng, cluster_of_case: np.ndarray, case_of_point: np.ndarray) -> np.ndarray:
        weights = {name: np.float32(np.sqrt(share)) for name, share in SHARES.items()}
        case_directions = unit_rows(rng.standard_normal((len(cluster_of_case), self.dim), dtype=np.float32))
        cluster = cluster_of_case[case_of_point]
        vectors = unit_rows(rng.standard_normal((len(case_of_point), self.dim), dtype=np.float32))
        vectors *= weights["image"]
        vectors += weights["common"] * self.common
        vectors += weights["super"] * self.supers[self.super_of_cluster[cluster]]
        vectors += weights["cluster"] * self.centres[cluster]
        vectors += weights["case"] * case_directions[case_of_point]
        return unit_rows(vectors)


def cosine_spread(vectors: np.ndarray, case_of_point: np.ndarray, pairs: int = 20_000, seed: int = 3) -> dict:
    """Pairwise cosines of random pairs (mean and percentiles), and each sampled point's nearest other
    point: what the generated collection looks like, printed beside every result."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(len(vectors), size=(2, pairs))
    keep = a != b
    cosines = np.einsum("ij,ij->i", vectors[a[keep]], vectors[b[keep]])
    sample = rng.choice(len(vectors), size=min(200, len(vectors)), replace=False)
    similarities = vectors[sample] @ vectors.T
    similarities[np.arange(len(sample)), sample] = -np.inf
    same_case = case_of_point[sample][:, None] == case_of_point[None, :]
    similarities[same_case] = -np.inf
    nearest_other_case = similarities.max(axis=1)
    percentiles = np.percentile(cosines, [5, 50, 95])
    return {
        "mean": float(cosines.mean()),
        "p5": float(percentiles[0]),
        "p50": float(percentiles[1]),
        "p95": float(percentiles[2]),
        "nearest_other_case_p50": float(np.median(nearest_other_case)),
    }
