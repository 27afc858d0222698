"""Write the flat one-row-per-image CSV (`real_labeled_metadata.csv`) that the existing scripts read.

Every value comes from `dataset.read_release`, the same reader `embed --scin-dir` uses: the same
parsing of the release's Python-literal cells, the same primary condition, the same `condition_label`
index and the same case-grouped split (`cells.split_for_case`). Nothing is parsed twice, so the table
and the vector database cannot disagree.

Column formats follow the scripts that read this file: `image_path` is relative to
`<scin>/dataset/images` (so `embed --metadata OUT --images-dir <scin>/dataset/images` works),
`all_conditions` and `weighted_labels` are Python-literal text as in the release, and `description`
is the factual sentence `dataset.describe` builds from the case's own metadata.

The CSV is meant to be opened in spreadsheets too: a cell that starts with = + - @ TAB or CR (other than
a plain number or number-named file, as SCIN's ids and paths are) is written with a leading single
quote, so a spreadsheet shows it as text instead of running it as a formula (`cells.to_csv_cell`);
`embed --metadata` reads such cells back as they were.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path, PurePosixPath

from scinsearch import cells, dataset
from scinsearch.errors import ScinSearchError
from scinsearch.helpers import atomic_write
from scinsearch.schema import BY_NAME, FLAT_COLUMNS


@dataclasses.dataclass
class PrepareSummary:
    """What `prepare_metadata` wrote and what it left out, and why."""

    out: Path
    rows: int = 0
    images_total: int = 0
    missing_images: int = 0
    unlabelled_skipped: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"wrote {self.rows} rows (one per distinct image; {self.images_total} in the release) to {self.out}"]
        if self.missing_images:
            lines.append(f"left out {self.missing_images} images not on disk (download them, or use --include-missing)")
        if self.unlabelled_skipped:
            lines.append(f"left out {self.unlabelled_skipped} images of cases without a dermatologist label")
        return lines


def literal_text(value) -> str:
    """Lists and dicts as Python literals (`repr`), exactly as the release writes them."""
    return repr(value) if value is not None else ""


def plain_text(value) -> str:
    return "" if value is None else str(value)


def images_relative_path(record: dataset.ImageRecord, images_dir: Path) -> str | None:
    """The record's file relative to `<scin>/dataset/images`, as a POSIX path; None if it lies elsewhere."""
    try:
        return PurePosixPath(*record.file.relative_to(images_dir).parts).as_posix()
    except ValueError:
        return None


def flat_row(record: dataset.ImageRecord, image_path: str) -> dict[str, str]:
    """One CSV row from one record's payload (an image shared by several cases: its first case)."""
    payload = {**record.payload, "image_id": record.image_id, "image_path": image_path}
    return {name: cells.to_csv_cell(flat_cell(BY_NAME[name].type, payload.get(name))) for name in FLAT_COLUMNS}


def flat_cell(kind: str, value) -> str:
    """Lists and dicts as Python literals (empty ones too, as the release writes them); the rest as text."""
    if kind == "dict":
        return literal_text(value or {})
    if kind.endswith("[]"):
        return literal_text(value or [])
    return plain_text(value)


def select_rows(
    data: dataset.Dataset, images_dir: Path, summary: PrepareSummary, labelled_only: bool, include_missing: bool
) -> list[dict[str, str]]:
    rows = []
    for record in data.records:
        if labelled_only and not record.payload.get("labelled"):
            summary.unlabelled_skipped += 1
            continue
        if not include_missing and not record.file.is_file():
            summary.missing_images += 1
            continue
        relative = images_relative_path(record, images_dir)
        if relative is None:
            summary.warnings.append(f"image {record.payload.get('image_path')!r} is not under {images_dir}: left out")
            continue
        rows.append(flat_row(record, relative))
    return rows


def write_csv_atomically(out: Path, rows: list[dict[str, str]]) -> None:
    """Write to a temporary file beside `out` (created exclusively) and rename: a reader never sees half
    a table, and a link planted beside it is never written through."""
    try:
        with atomic_write(out, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(FLAT_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise ScinSearchError(f"cannot write {out}: {exc.strerror or exc}") from None


def prepare_metadata(
    scin_dir: Path, out: Path, labelled_only: bool = False, include_missing: bool = False
) -> PrepareSummary:
    """Read the release under `scin_dir` and write one row per distinct image to `out`.

    By default only images present on disk are written (so a `download --limit` subset gives a table
    of that subset); `labelled_only` keeps only cases with a dermatologist label, as the legacy
    `real_labeled_metadata.csv` did."""
    data = dataset.read_release(Path(scin_dir))
    images_dir = data.image_root / "dataset" / "images"
    out = Path(out).expanduser()
    summary = PrepareSummary(out=out, images_total=len(data.records), warnings=list(data.warnings))
    rows = select_rows(data, images_dir, summary, labelled_only, include_missing)
    write_csv_atomically(out, rows)
    summary.rows = len(rows)
    return summary
