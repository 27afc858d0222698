"""The 2-D map of a collection's vectors: PCA (numpy) by default, UMAP when `umap-learn` is installed
(`pip install 'scinsearch[umap]'`), a stratified sample above MAX_MAP_POINTS, and the cache.

The map is computed once per collection and kept in the collection's own record (metadata key MAP_KEY:
`collection.json` of the embedded store, the collection metadata of a Qdrant server), so it travels with
the collection and is dropped when the collection is recreated. The cache names the points and vectors it
was made from (a SHA-256 of the ids and the vector bytes): a collection that changed, or another
collection with the same ids and other vectors (`finetune apply`), gets a new map, never a stale one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

import numpy as np

from scinsearch.errors import ScinSearchError

MAP_KEY = "scinsearch_map"
MAP_SCHEMA = "scinsearch.map/1"
METHODS = ("pca", "umap")
MAX_MAP_POINTS = 15_000  # drawn, checked and neighboured one by one up to here; above, a stratified sample
SAMPLE_SEED = 0


def fingerprint(ids: Sequence[str], vectors: np.ndarray) -> str:
    digest = hashlib.sha256()
    for point_id in ids:
        digest.update(point_id.encode() + b"\0")
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The first two principal components (scores) and the share of variance each explains. Signs are
    fixed (each axis's largest loading positive) so the same vectors always give the same picture."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2), dtype=np.float32), [0.0, 0.0]
    covariance = x.T @ x / (len(x) - 1)
    values, axes = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1][:2]
    axes = axes[:, order]
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]] + 1e-300)
    total = float(values.clip(min=0).sum()) or 1.0
    explained = [float(max(values[i], 0.0)) / total for i in order] + [0.0] * (2 - len(order))
    return (x @ axes).astype(np.float32), explained


def umap_2d(vectors: np.ndarray) -> np.ndarray:
    try:
        import umap
    except ImportError:
        raise ScinSearchError("--map umap needs the optional extra: pip install 'scinsearch[umap]'") from None
    n_neighbors = max(2, min(15, len(vectors) - 1))
    reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=n_neighbors, random_state=SAMPLE_SEED)
    return np.asarray(reducer.fit_transform(np.asarray(vectors, dtype=np.float32)), dtype=np.float32)


def project(vectors: np.ndarray, method: str) -> dict:
    """{"method", "coordinates": (n, 2) float32, "explained": [pc1, pc2] for PCA}."""
    if method not in METHODS:
        raise ScinSearchError(f"unknown map method {method!r}: use one of {', '.join(METHODS)}")
    if method == "umap" and len(vectors) >= 4:
        return {"method": "umap", "coordinates": umap_2d(vectors), "explained": None}
    coordinates, explained = pca_2d(vectors)
    return {"method": "pca", "coordinates": coordinates, "explained": explained}


def stratified_sample(groups: Sequence[str], ids: Sequence[str], limit: int = MAX_MAP_POINTS) -> np.ndarray:
    """Row indices of at most `limit` points, each group (condition) keeping its share, at least one
    point each while the limit allows; the same points for the same collection (seeded by sorted ids)."""
    n = len(ids)
    if n <= limit:
        return np.arange(n)
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    rng = np.random.default_rng(SAMPLE_SEED)
    by_group: dict[str, list[int]] = {}
    for row in order:
        by_group.setdefault(groups[row], []).append(int(row))
    quotas = {g: max(1, int(limit * len(rows) / n)) for g, rows in by_group.items()}
    while sum(quotas.values()) > limit:  # more groups than the limit allows one point each: largest first
        biggest = max(quotas, key=lambda g: (quotas[g], g))
        quotas[biggest] -= 1
        if quotas[biggest] == 0:
            del quotas[biggest]
    chosen = [row for g, q in quotas.items() for row in rng.permutation(by_group[g])[:q]]
    return np.sort(np.asarray(chosen, dtype=np.int64))


def encode_map(result: dict, key: str) -> dict:
    coordinates = np.ascontiguousarray(result["coordinates"], dtype="<f4")
    return {
        "schema": MAP_SCHEMA,
        "method": result["method"],
        "fingerprint": key,
        "points": int(len(coordinates)),
        "explained": result["explained"],
        "coordinates": base64.b64encode(coordinates.tobytes()).decode("ascii"),
    }


def decode_map(cached, key: str, method: str | None) -> dict | None:
    """The cached map when it was made from these points (and with `method`, when one is asked); else None."""
    if not isinstance(cached, dict) or cached.get("schema") != MAP_SCHEMA or cached.get("fingerprint") != key:
        return None
    if method is not None and cached.get("method") != method:
        return None
    try:
        raw = base64.b64decode(str(cached["coordinates"]), validate=True)
        coordinates = np.frombuffer(raw, dtype="<f4").reshape(int(cached["points"]), 2).astype(np.float32)
    except (KeyError, ValueError, TypeError):
        return None
    if not np.isfinite(coordinates).all():
        return None
    return {"method": str(cached["method"]), "coordinates": coordinates, "explained": cached.get("explained")}


def cached_projection(store, ids: Sequence[str], vectors: np.ndarray, method: str | None) -> tuple[dict, bool]:
    """The map of these points: from the collection's record when it is there and current, else computed
    (with `method`, PCA when None) and written back. Returns (map, whether it came from the cache). A store
    that refuses the write (read-only, another owner) still gets its map, just not cached."""
    key = fingerprint(ids, vectors)
    info = store.info() if store is not None else None
    cached = decode_map((info.extra if info else {}).get(MAP_KEY), key, method)
    if cached is not None:
        return cached, True
    result = project(vectors, method or "pca")
    if store is not None:
        try:
            store.update_metadata({MAP_KEY: encode_map(result, key)})
        except Exception:  # a cache that cannot be written only costs time on the next run
            pass
    return result, False
