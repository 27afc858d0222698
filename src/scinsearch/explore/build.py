"""One exploration of a collection: its record, coverage, map, neighbours and soundness checks, as one
JSON-safe document that the `/explore` page and the `explore --out` report both draw.

    with open_store(settings) as store:            # or any `VectorStore`
        document = explore_store(store)             # reads every point once, with its vector
    write_report(document, Path("report.html"))

`explore_points` does the same from `StoredPoint`s already in memory (tests, other stores). Coverage and
the record count every point; the map, the neighbours and the checks run on every point up to
`projection.MAX_MAP_POINTS` and on a stratified sample (by condition) above it.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scinsearch.calibration.record import calibration_of
from scinsearch.errors import ScinSearchError
from scinsearch.explore.checks import other_case_neighbours, soundness
from scinsearch.explore.coverage import UNLABELLED, cases_of, condition_of, coverage
from scinsearch.explore.projection import MAX_MAP_POINTS, cached_projection, stratified_sample
from scinsearch.explore.report import thumbnails
from scinsearch.helpers import json_safe
from scinsearch.schema import SPLITS
from scinsearch.store import CollectionInfo, StoredPoint, VectorStore, require_collection
from scinsearch.vectors.neighbours import table_from_points

SCHEMA = "scinsearch.explore/1"
# The map's colourings: (id, label, payload field); the condition colouring uses `condition_of`.
COLOURINGS = (
    ("condition", "Condition", "condition"),
    ("self_skin", "Self-reported skin-type group", "skin_type_group"),
    ("derm_skin", "Dermatologists' skin-type group", "dermatologist_skin_type_group"),
    ("split", "Split", "split"),
)
HOVER_FIELDS = (("self_fst", "fitzpatrick_skin_type"), ("derm_fst", "dermatologist_fitzpatrick_skin_type"))


def calibration_record(info: CollectionInfo) -> dict | str:
    """What the page says about the collection's calibration (`scinsearch calibrate`)."""
    try:
        calibration = calibration_of(info)
    except ScinSearchError as exc:
        return f"unusable: {exc}"
    if calibration is None:
        return "none (run `scinsearch calibrate`)"
    t = calibration.thresholds
    return {
        "created": calibration.created,
        "target precision": t.get("target_precision"),
        "min similarity": t.get("min_similarity"),
        "min agreement": t.get("min_agreement"),
        "min support": t.get("min_support"),
        "nothing alike below": calibration.cut,
        "gradability probe": "yes" if calibration.probe else "no",
    }


def collection_record(name: str, info: CollectionInfo, payloads: Sequence[dict]) -> dict:
    """The collection's record: model, vector size, preprocessing, points, cases, splits, calibration, adapter."""
    splits = collections.Counter(p.get("split") or "unknown" for p in payloads)
    cases = set().union(*(cases_of(p) for p in payloads)) if payloads else set()
    adapter = info.adapter_id
    return {
        "collection": name,
        "model": info.model,
        "vector size": info.dim,
        "preprocessing": info.preprocessing,
        "points": len(payloads),
        "cases": len(cases),
        "splits": {s: splits.get(s, 0) for s in (*SPLITS, *sorted(set(splits) - set(SPLITS)))},
        "calibration": calibration_record(info),
        "adapter": f"{adapter} (from {info.adapted_from!r})" if adapter else "none (base model vectors)",
    }


def vocabulary(values: Sequence[str]) -> tuple[list[str], list[int]]:
    """Distinct values, most frequent first (ties by name), and each value's index into them."""
    counts = collections.Counter(values)
    names = sorted(counts, key=lambda v: (-counts[v], v))
    index = {name: i for i, name in enumerate(names)}
    return names, [index[v] for v in values]


def field_text(payload: dict, field: str) -> str:
    value = condition_of(payload) if field == "condition" else payload.get(field)
    return "unknown" if value in (None, "") else str(value)


def unit_square(coordinates: np.ndarray) -> np.ndarray:
    """The map scaled into [0, 1] on both axes with one factor (so distances keep their proportions)."""
    if len(coordinates) == 0:
        return coordinates
    low = coordinates.min(axis=0)
    span = float((coordinates.max(axis=0) - low).max()) or 1.0
    scaled = (coordinates - low) / span
    return scaled + (1.0 - scaled.max(axis=0)) / 2  # centred on the short axis


def map_points(points: Sequence[StoredPoint], coordinates: np.ndarray, neighbourhood) -> tuple[dict, dict]:
    """The per-point columns the page draws and the vocabularies its indices point into."""
    payloads = [p.payload for p in points]
    columns: dict = {
        "image": [str(p.get("image_id") or point.id) for p, point in zip(payloads, points)],
        "case": [(cases_of(p) or (str(point.id),))[0] for p, point in zip(payloads, points)],
    }
    xy = np.round(unit_square(coordinates), 4)
    columns["x"], columns["y"] = xy[:, 0].tolist(), xy[:, 1].tolist()
    vocab = {}
    for key, _, field in COLOURINGS:
        vocab[key], columns[key] = vocabulary([field_text(p, field) for p in payloads])
    for key, field in HOVER_FIELDS:
        vocab[key], columns[key] = vocabulary([field_text(p, field) for p in payloads])
    columns["neighbours"] = [[int(j) for j in row if j >= 0] for row in neighbourhood.indices]
    columns["similarities"] = [
        [round(float(s), 4) for j, s in zip(row, sims) if j >= 0]
        for row, sims in zip(neighbourhood.indices, neighbourhood.similarities)
    ]
    return columns, vocab


def explore_points(
    points: Sequence[StoredPoint],
    name: str,
    info: CollectionInfo,
    store: VectorStore | None = None,
    method: str | None = None,
    max_points: int = MAX_MAP_POINTS,
    images_root: Path | None = None,
) -> dict:
    """The exploration document of these points. `store`, when given, holds the map's cache; `method`
    None takes the cached map whatever its method (PCA when there is none). With `images_root` (the
    report), each drawn image's thumbnail is embedded."""
    points = [p for p in points if p.vector is not None]
    if not points:
        raise ScinSearchError(f"collection {name!r} holds no points with vectors: run `scinsearch embed` first")
    payloads = [p.payload or {} for p in points]
    rows = stratified_sample([condition_of(p) for p in payloads], [str(p.id) for p in points], max_points)
    shown = [points[i] for i in rows]
    vectors = np.stack([np.asarray(p.vector, dtype=np.float32) for p in shown])
    norms = np.linalg.norm(vectors, axis=1)
    table = table_from_points(shown)
    neighbourhood = other_case_neighbours(table)
    projection, from_cache = cached_projection(store, [str(p.id) for p in shown], table.vectors, method)
    columns, vocab = map_points(shown, projection["coordinates"], neighbourhood)
    document = {
        "schema": SCHEMA,
        "record": collection_record(name, info, payloads),
        "coverage": coverage(payloads),
        "map": {
            "method": projection["method"],
            "explained": projection["explained"],
            "cached": from_cache,
            "points": len(shown),
            "total": len(points),
            "sampled": len(shown) < len(points),
            "max_points": max_points,
            "colourings": [{"id": key, "label": label} for key, label, _ in COLOURINGS],
            "unlabelled": UNLABELLED,
        },
        "points": columns,
        "vocab": vocab,
        "checks": soundness(table, norms, neighbourhood),
    }
    if images_root is not None:
        document["thumbs"] = thumbnails(columns["image"], [p.payload.get("image_path") for p in shown], images_root)
    return json_safe(document)


def read_points(store: VectorStore) -> list[StoredPoint]:
    return list(store.scroll(with_vectors=True, page=512))


def explore_store(
    store: VectorStore,
    method: str | None = None,
    max_points: int = MAX_MAP_POINTS,
    images_root: Path | None = None,
) -> dict:
    """The exploration document of a stored collection (every point read once, with its vector)."""
    info = require_collection(store)
    points = read_points(store)
    return explore_points(points, store.name, info, store, method, max_points, images_root)
