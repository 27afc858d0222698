"""Unit vectors whose self-similarity is exactly 1.0 in every engine, on every CPU.

Why: a cosine score is computed in floating point, so a vector queried with itself can come out a hair
above 1 (1.0000000000000002 was seen in qdrant-client's local mode, which keeps a persisted collection
in float64; Qdrant's engine sums float32 products in SIMD lanes whose order depends on the CPU), and a
reader that checks `0 <= score <= 1` (the kiosk backend's result model) then rejects the hit.

How: each component is written as a multiple of 2**-12 (`GRID`), and the integers k_i = w_i * 4096 are
chosen so that sum(k_i**2) is exactly 4096**2. Then every product w_i * w_i (at most 24 significant
bits) and every partial sum (a multiple of 2**-24 no larger than 1) is exact in float32 and float64,
so the sum of squares is exactly 1.0 in any order, with or without fused multiply-add: the norm is
exactly 1, both engines keep the vector as given (no re-normalisation), and its score against itself
is exactly 1.0. The direction moves by rounding to the grid (cosine to the model's own vector above
0.99999 for 768-d vectors; smaller vectors move a little more) and by a few +-1 steps that make the
sum exact.

`self_score_problems` checks the same property on vectors read back from a store or a file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scinsearch.errors import ScinSearchError

GRID = 4096  # components are multiples of 1 / GRID; GRID**2 = 2**24 keeps every float32 square exact
TARGET = GRID * GRID
MAX_STEPS = 400
PAIR_CANDIDATES = 96  # components tried two at a time, when no single +-1 step makes the sum exact
TRIPLE_LIMIT = 64  # vectors up to this size also try three steps at a time


def exact_unit(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Integers k near `direction * GRID` with sum(k**2) == GRID**2, or None if none was found."""
    k = np.rint(direction * GRID).astype(np.int64)
    wandering = False  # after a random step, look for an exact finish before walking back downhill
    for _ in range(MAX_STEPS):
        missing = TARGET - int(k @ k)
        if missing == 0:
            return k
        steps = np.concatenate([2 * k + 1, 1 - 2 * k])  # what k_j + 1, then k_j - 1, adds to the sum
        exact = np.flatnonzero(steps == missing)
        if exact.size:
            apply_step(k, int(exact[0]))
            continue
        best = int(np.argmin(np.abs(missing - steps)))
        if not wandering and abs(missing - steps[best]) < abs(missing):
            apply_step(k, best)
            continue
        found = exact_pair(k, steps, missing, rng) or exact_triple(k, steps, missing)
        if found is not None:
            for step in found:
                apply_step(k, step)
            continue
        apply_step(k, int(rng.integers(len(steps))))  # stuck: a random step, then try again
        wandering = abs(TARGET - int(k @ k)) < 4 * GRID  # far off: walk back downhill first
    return None


def apply_step(k: np.ndarray, step: int) -> None:
    if step < len(k):
        k[step] += 1
    else:
        k[step - len(k)] -= 1


def exact_pair(k: np.ndarray, steps: np.ndarray, missing: int, rng) -> tuple[int, int] | None:
    """Two steps on two different components whose sum is exactly `missing`."""
    size = len(k)
    chosen = rng.permutation(size)[:PAIR_CANDIDATES]
    candidates = np.concatenate([chosen, chosen + size])
    sums = steps[candidates][:, None] + steps[candidates][None, :]
    for a, b in np.argwhere(sums == missing):
        first, second = int(candidates[a]), int(candidates[b])
        if first % size != second % size:
            return first, second
    return None


def exact_triple(k: np.ndarray, steps: np.ndarray, missing: int) -> tuple[int, int, int] | None:
    """Three steps on three different components whose sum is exactly `missing` (small vectors only)."""
    size = len(k)
    if size > TRIPLE_LIMIT:
        return None
    sums = steps[:, None, None] + steps[None, :, None] + steps[None, None, :]
    for a, b, c in np.argwhere(sums == missing):
        if len({int(a) % size, int(b) % size, int(c) % size}) == 3:
            return int(a), int(b), int(c)
    return None


def place_vectors(vectors: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
    """float32 vectors of norm exactly 1 whose self-similarity is exactly 1.0 (see the module), each near
    its input's direction. `seeds` (one per row; default the row numbers) make each row's steps its own,
    so a point gets the same vector whatever else is in its batch (an interrupted export resumes)."""
    wide = np.asarray(vectors, dtype=np.float64)
    if wide.ndim != 2 or not np.isfinite(wide).all():
        raise ScinSearchError("vectors must be a finite 2-d array")
    norms = np.linalg.norm(wide, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ScinSearchError(f"row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is a zero vector")
    seeds = range(len(wide)) if seeds is None else seeds
    placed = np.empty(wide.shape, dtype=np.float32)
    for row, (direction, seed) in enumerate(zip(wide / norms, seeds)):
        k = exact_unit(direction, np.random.default_rng(int(seed)))
        if k is None:
            raise ScinSearchError(f"row {row}: no unit vector on the grid was found near it")
        placed[row] = k.astype(np.float32) / np.float32(GRID)
    return placed


def self_score_problems(vectors: np.ndarray) -> np.ndarray:
    """Indices of the rows that are not exact unit vectors on the grid (whose self-score could pass 1.0)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors):
        return np.zeros(0, dtype=np.int64)
    scaled = vectors.astype(np.float64) * GRID
    k = np.rint(scaled)
    on_grid = (k == scaled).all(axis=1) & (np.abs(k) < GRID).all(axis=1)
    exact = np.einsum("ij,ij->i", k.astype(np.int64), k.astype(np.int64)) == TARGET
    return np.flatnonzero(~(on_grid & exact))
