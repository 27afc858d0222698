"""`scinsearch import`: a Parquet export into any store, with nothing of the file trusted that the
operator did not choose.

The file is read and checked twice over (`ParquetPoints`: its layout, ids, vectors and cells), and here
for what only an import decides: the file's `image_root` is never taken (the collection records the
operator's `--images-dir`, or none), every `image_path` must stay inside the images folder, and when the
verification at the end fails, what the run wrote is taken back (docs/storage.md#importing-a-parquet-file).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tqdm import tqdm

from scinsearch.errors import ScinSearchError
from scinsearch.paths import inside, relative_parts
from scinsearch.store import CollectionInfo, StoredPoint, VectorStore
from scinsearch.store.record import IMAGE_ROOT
from scinsearch.transfer.copy import (
    PAGE,
    SAMPLE,
    Sampler,
    TransferSummary,
    prepare_target,
    refuse_mismatch,
    verify,
    write_missing,
)
from scinsearch.transfer.parquet import ParquetPoints


def import_parquet(
    path: Path,
    target: VectorStore,
    page: int = PAGE,
    sample: int = SAMPLE,
    progress: bool = True,
    images_dir: Path | None = None,
) -> TransferSummary:
    """Write the points of a scinsearch Parquet file into `target` (made with the file's record, or an
    existing collection with the same model, vector size and preprocessing); resumable, then verified.

    The file's `image_root` is never taken: the collection records `images_dir` instead (the operator's
    folder; None records none, and `serve --images-dir` names it), and every `image_path` must stay
    inside it (`check_image_paths`). When the verification fails, what this run wrote is taken back: the
    points it added to an existing collection, or the whole collection it made."""
    started = time.perf_counter()
    points = ParquetPoints(path)
    root = Path(images_dir).expanduser().resolve() if images_dir is not None else None
    if root is not None and not root.is_dir():
        raise ScinSearchError(f"images folder not found: {images_dir}")
    record = operator_record(points.info, root)
    origin = f"the file {points.path.name}"
    refuse_mismatch(target, record, origin)
    checking = tqdm(total=points.rows, unit="pt", desc="checking", disable=not progress, leave=False)
    with checking as bar:
        for batch in points.batches(page):  # every row is checked before anything is written
            check_image_paths(points, batch, root)
            bar.update(len(batch))
    made = target.info() is None
    prepare_target(target, record, origin)
    summary = TransferSummary(str(points.path), target.name, points=points.rows)
    sampler = Sampler(points.rows, sample)
    written: list[str] = []
    with tqdm(total=points.rows, unit="pt", desc="importing", disable=not progress, dynamic_ncols=True) as bar:
        for batch in points.batches(page):
            written += write_missing(target, batch, summary)
            sampler.offer(batch)
            bar.update(len(batch))
    target.finish_writes()
    try:
        summary.checked = verify(target, points.rows, sampler.points)
    except ScinSearchError:
        take_back(target, made, written)
        raise
    if root is not None and not made:
        target.update_metadata({IMAGE_ROOT: str(root)})
    summary.seconds = time.perf_counter() - started
    return summary


def operator_record(info: CollectionInfo, root: Path | None) -> CollectionInfo:
    """The file's record with its `image_root` replaced by the operator's folder (or removed): a file
    that names `/` must never make `/images` serve the disk."""
    extra = {key: value for key, value in info.extra.items() if key != IMAGE_ROOT}
    if root is not None:
        extra[IMAGE_ROOT] = str(root)
    return dataclasses.replace(info, extra=extra)


def check_image_paths(points: ParquetPoints, batch: list[StoredPoint], root: Path | None) -> None:
    """Every `image_path` is relative and stays in its folder by its text (no absolute path, no '..');
    with the operator's `root`, also once symbolic links are resolved."""
    for point in batch:
        relative = point.payload.get("image_path")
        if relative is None:
            continue
        if relative_parts(relative) is None or (root is not None and inside(root, relative) is None):
            points.fail(f"point {point.id}: image path {str(relative)[:80]!r} leaves the images folder")


def take_back(target: VectorStore, made: bool, written: list[str]) -> None:
    """Leave the target as it was before a failed import: drop the collection it made, or remove the
    points it added (points that were there already were never overwritten)."""
    if made:
        target.drop()
    else:
        target.delete(written)
        target.finish_writes()
