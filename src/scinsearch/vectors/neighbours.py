"""The stored vectors as arrays, the query/reference selection of a protocol, and exact kNN that never
lets a query see its own case.

Evaluation works on what `scinsearch embed` stored (no re-embedding): every point is scrolled once with
its vector (10k x 768 floats is ~30 MB) and the neighbours are found by an exact cosine matrix product
in numpy, in chunks. Exclusion is by masks, so the rule is visible in one place:

- a reference point is never a neighbour of a query when their `case_ids` overlap (the other views of
  the query's case, and an image shared by the query's case and another case);
- nor when it is the same image (`image_id`), whatever its cases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from scinsearch import rules
from scinsearch.errors import ScinSearchError
from scinsearch.schema import BREAKDOWN_FIELDS, TEST_SPLIT, TRAIN_SPLIT, case_ids
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, VectorStore

PROTOCOLS = ("split", "leave-case-out")
UNKNOWN = "unknown"  # the breakdown group (`schema.BREAKDOWN_FIELDS`) of a point without a value


@dataclasses.dataclass
class PointTable:
    """Every stored point: its unit vector and the payload fields evaluation needs, row-aligned."""

    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    image_ids: list[str]
    case_ids: list[tuple[str, ...]]
    primary: list[str | None]  # highest-weighted dermatologist label
    weighted: list[dict[str, float]]
    label_sets: list[frozenset[str]]  # every dermatologist label: weighted keys + names
    gradable: list[bool | None]
    splits: list[str | None]
    groups: dict[str, list[str]]  # breakdown name -> group per point

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def labelled(self) -> np.ndarray:
        return np.array([bool(w) for w in self.weighted], dtype=bool)

    def rows(self, order: Sequence[int]) -> PointTable:
        """These rows, in this order (a subset, or the same points reordered)."""
        order = list(order)
        pick = lambda values: [values[i] for i in order]  # noqa: E731
        return PointTable(
            vectors=self.vectors[order],
            image_ids=pick(self.image_ids),
            case_ids=pick(self.case_ids),
            primary=pick(self.primary),
            weighted=pick(self.weighted),
            label_sets=pick(self.label_sets),
            gradable=pick(self.gradable),
            splits=pick(self.splits),
            groups={name: pick(values) for name, values in self.groups.items()},
        )


@dataclasses.dataclass
class Selection:
    """Row indices into a `PointTable`: who asks (queries) and who can answer (reference)."""

    protocol: str
    queries: np.ndarray
    reference: np.ndarray


@dataclasses.dataclass
class Neighbours:
    """Per query, the positions (into `Selection.reference`) of its neighbours, most similar first,
    and their cosine similarities. -1 / NaN pad rows that had fewer than k admissible neighbours."""

    indices: np.ndarray  # (q, k) int
    similarities: np.ndarray  # (q, k) float32

    def first(self, k: int) -> Neighbours:
        """Each query's k nearest."""
        return Neighbours(self.indices[:, :k], self.similarities[:, :k])


def table_from_points(points: Sequence) -> PointTable:
    """`StoredPoint`s (with vectors) -> a `PointTable`; points without a vector cannot be evaluated."""
    points = [p for p in points if p.vector is not None]
    if not points:
        raise ScinSearchError("the collection holds no points with vectors: run `scinsearch embed` first")
    vectors = np.stack([np.asarray(p.vector, dtype=np.float32) for p in points])
    vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    payloads = [p.payload or {} for p in points]
    weighted = [clean_weights(p.get("weighted_labels")) for p in payloads]
    return PointTable(
        vectors=vectors,
        image_ids=[str(p.get("image_id") or point.id) for p, point in zip(payloads, points)],
        case_ids=[case_ids_of(p, point.id) for p, point in zip(payloads, points)],
        primary=[primary_label(p, w) for p, w in zip(payloads, weighted)],
        weighted=weighted,
        label_sets=[
            frozenset(w) | frozenset(n for n in (p.get("all_conditions") or []) if isinstance(n, str))
            for p, w in zip(payloads, weighted)
        ],
        gradable=[p.get("gradable") if isinstance(p.get("gradable"), bool) else None for p in payloads],
        splits=[p.get("split") for p in payloads],
        groups={name: [group_value(p.get(field)) for p in payloads] for name, field in BREAKDOWN_FIELDS.items()},
    )


def load_table(store: VectorStore, progress: bool = False) -> PointTable:
    """Scroll the whole collection once, with vectors (the long step of an evaluation: shown when asked)."""
    from tqdm import tqdm

    points = tqdm(
        store.scroll(with_vectors=True, page=512),
        total=store.count(),
        unit="pt",
        desc="reading vectors",
        disable=not progress,
        leave=False,
    )
    return table_from_points(list(points))


def read_collection(
    settings: Settings,
    progress: bool = False,
    check: Callable[[CollectionInfo], None] | None = None,
    store: VectorStore | None = None,
) -> tuple[CollectionInfo, PointTable]:
    """Open the collection `settings` names (or use the open `store`, left open), refuse one scinsearch did
    not make, run `check` on its record before the long read, and read every point once with its vector:
    how evaluation, calibration and adapter training start."""
    from scinsearch.store import open_store, require_collection

    owned = store is None
    store = open_store(settings) if owned else store
    try:
        info = require_collection(store)
        if check is not None:
            check(info)
        return info, load_table(store, progress=progress)
    finally:
        if owned:
            store.close()


def clean_weights(value) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {
        str(k): float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
    }


def primary_label(payload: dict, weighted: dict[str, float]) -> str | None:
    """The stored `condition` (the highest-weighted label), else the argmax of the weights."""
    condition = payload.get("condition")
    if isinstance(condition, str) and condition:
        return condition
    return max(sorted(weighted), key=weighted.get) if weighted else None


def case_ids_of(payload: dict, point_id: str) -> tuple[str, ...]:
    """The point's cases, or the point alone when it names none (then it is its own case)."""
    return tuple(case_ids(payload)) or (f"point:{point_id}",)


def group_value(value) -> str:
    return UNKNOWN if value is None or value == "" else str(value)


def select(table: PointTable, protocol: str) -> Selection:
    """Queries: labelled images of gradable cases. Reference: labelled images (they are the evidence).

    `split`: test-split queries against the train split. `leave-case-out`: every query against all
    labelled points (its own case is masked later). Points without a `gradable` field (the flat CSV
    source) count as gradable; cases marked not gradable are never queries."""
    if protocol not in PROTOCOLS:
        raise ScinSearchError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    labelled = table.labelled
    gradable = np.array([g is not False for g in table.gradable], dtype=bool)
    splits = np.array([s or "" for s in table.splits], dtype=object)
    queries, reference = labelled & gradable, labelled.copy()
    if protocol == "split":
        queries &= splits == TEST_SPLIT
        reference &= splits == TRAIN_SPLIT
    instead = ": evaluate with --leave-case-out (every labelled image against the other cases)"
    if not reference.any():
        where, advice = ("in the train split", instead) if protocol == "split" else ("in the collection", "")
        raise ScinSearchError(f"no labelled reference points {where}: nothing to compare queries with{advice}")
    if not queries.any():
        where, advice = ("in the test split", instead) if protocol == "split" else ("in the collection", "")
        raise ScinSearchError(f"no labelled images of gradable cases {where} to use as queries{advice}")
    return Selection(protocol, np.flatnonzero(queries), np.flatnonzero(reference))


def exclusions(table: PointTable, selection: Selection, exclude_own_case: bool = True) -> list[np.ndarray]:
    """Per query, the reference positions it may never see: same case (any overlap of `case_ids`) or the
    same image. With `exclude_own_case=False` only the query point itself is masked: the leaky protocol,
    kept so that tests can show what leakage does to the numbers."""
    position = {int(row): pos for pos, row in enumerate(selection.reference)}
    by_case: dict[str, list[int]] = {}
    by_image: dict[str, list[int]] = {}
    for pos, row in enumerate(selection.reference):
        for case in table.case_ids[row]:
            by_case.setdefault(case, []).append(pos)
        by_image.setdefault(table.image_ids[row], []).append(pos)
    masks = []
    for row in selection.queries:
        if not exclude_own_case:
            masks.append(np.array([position[row]] if row in position else [], dtype=np.int64))
            continue
        hidden = set(by_image.get(table.image_ids[row], []))
        for case in table.case_ids[row]:
            hidden.update(by_case.get(case, []))
        masks.append(np.array(sorted(hidden), dtype=np.int64))
    return masks


def case_clusters(case_ids: Sequence[tuple[str, ...]]) -> np.ndarray:
    """Dense cluster number per point: points linked by a shared case are one cluster (union-find).
    This is the resampling unit of the bootstrap; the largest cluster bounds how many neighbours
    `one_per_case` can drop."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ids in case_ids:
        for other in ids[1:]:
            parent[root(other)] = root(ids[0])
    roots = [root(ids[0]) for ids in case_ids]
    numbers: dict[str, int] = {}
    return np.array([numbers.setdefault(r, len(numbers)) for r in roots], dtype=np.int64)


def masked_top_k(
    scores_for: Callable[[np.ndarray], np.ndarray], n_queries: int, hidden: list[np.ndarray], k: int, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns per row of a score matrix built chunk by chunk, hidden columns set to -inf.
    Returns (indices, scores), best first; -1 / -inf where a row has fewer than k admissible columns."""
    all_idx, all_val = [], []
    for start in range(0, n_queries, chunk):
        rows = np.arange(start, min(start + chunk, n_queries))
        scores = np.asarray(scores_for(rows), dtype=np.float32).copy()
        for r, row in enumerate(rows):
            scores[r, hidden[row]] = -np.inf
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        values = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        idx, values = np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)
        idx[~np.isfinite(values)] = -1
        if take < k:
            idx = np.pad(idx, ((0, 0), (0, k - take)), constant_values=-1)
            values = np.pad(values, ((0, 0), (0, k - take)), constant_values=-np.inf)
        all_idx.append(idx)
        all_val.append(values)
    return np.concatenate(all_idx), np.concatenate(all_val)


def one_per_case(
    indices: np.ndarray, similarities: np.ndarray, reference_cases: Sequence[tuple[str, ...]], k: int
) -> Neighbours:
    """Keep each reference case's most similar image only (`rules.one_per_case`, the search's own rule),
    then the first k: a case search returns cases, and a case with three views must not cast three votes."""
    out_idx = np.full((len(indices), k), -1, dtype=np.int64)
    out_sim = np.full((len(indices), k), np.nan, dtype=np.float32)
    for q, (row, sims) in enumerate(zip(indices, similarities)):
        found = int((row >= 0).sum())  # padding (-1) only ever trails
        kept = rules.one_per_case([reference_cases[pos] for pos in row[:found]], limit=k)
        out_idx[q, : len(kept)], out_sim[q, : len(kept)] = row[kept], sims[kept]
    return Neighbours(out_idx, out_sim)


def nearest(
    table: PointTable, selection: Selection, hidden: list[np.ndarray], k: int, per_case: bool = True
) -> Neighbours:
    """Exact cosine kNN of every query among the reference points, honouring `hidden`."""
    queries, reference = table.vectors[selection.queries], table.vectors[selection.reference]
    reference_cases = [table.case_ids[r] for r in selection.reference]
    widest = int(np.bincount(case_clusters(reference_cases)).max()) if per_case else 1
    idx, sims = masked_top_k(lambda rows: queries[rows] @ reference.T, len(queries), hidden, k * widest)
    if per_case:
        return one_per_case(idx, sims, reference_cases, k)
    return Neighbours(idx[:, :k], np.where(idx[:, :k] >= 0, sims[:, :k], np.nan).astype(np.float32))


def random_neighbours(
    table: PointTable, selection: Selection, hidden: list[np.ndarray], k: int, seed: int, per_case: bool = True
) -> Neighbours:
    """k admissible reference points drawn at random per query (fixed seed): the chance level of a search
    that ignores the image. Their "similarities" are the random draws themselves, so that no predictor's
    tie-break or weighting can bring the image back in."""
    rng = np.random.default_rng(seed)
    n_reference = len(selection.reference)
    reference_cases = [table.case_ids[r] for r in selection.reference]
    widest = int(np.bincount(case_clusters(reference_cases)).max()) if per_case else 1
    idx, keys = masked_top_k(
        lambda rows: rng.random((len(rows), n_reference)), len(selection.queries), hidden, k * widest
    )
    if per_case:
        return one_per_case(idx, keys, reference_cases, k)
    return Neighbours(idx[:, :k], np.where(idx[:, :k] >= 0, keys[:, :k], np.nan).astype(np.float32))


def nearest_other_case(table: PointTable, rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each row's cosine similarity to its most similar reference image of another case (NaN when there is
    none): what the collection's own photos find among themselves (the "nothing alike" cut)."""
    selection = Selection("nearest-other-case", np.asarray(rows), np.asarray(reference))
    found = nearest(table, selection, exclusions(table, selection), 1, per_case=False)
    return found.similarities[:, 0].astype(np.float64)


def in_image_order(table: PointTable) -> PointTable:
    """The same points sorted by image id: collections of the same images then line up row by row, whatever
    order each store returned them in."""
    return table.rows(sorted(range(len(table)), key=table.image_ids.__getitem__))
