"""Read SCIN into one record per distinct image, with every metadata field typed for Qdrant.

Two sources, both untrusted:
- the official release: `scin_cases.csv` + `scin_labels.csv` joined on `case_id`, images at the
  `image_N_path` values (`dataset/images/<id>.png`);
- the flat one-row-per-image CSV of the existing scripts (`real_labeled_metadata.csv`).

Problems in single cells become warnings and the value is treated as missing; problems with a whole
file (missing, unreadable, wrong columns) raise `ScinSearchError` with one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from scinsearch import cells
from scinsearch.errors import ScinSearchError
from scinsearch.paths import resolve_image
from scinsearch.schema import CHECKBOX_FIELDS, FLAT_COLUMNS, SPLITS, point_id_for

CASES_CSV = "scin_cases.csv"
LABELS_CSV = "scin_labels.csv"
LABEL_NAMES = "dermatologist_skin_condition_on_label_name"
LABEL_CONFIDENCES = "dermatologist_skin_condition_confidence"
WEIGHTED_LABELS = "weighted_skin_condition_label"


@dataclasses.dataclass
class ImageRecord:
    """One distinct image: where its file is on disk and the payload stored beside its vector."""

    image_id: str
    file: Path
    payload: dict[str, Any]

    @property
    def point_id(self) -> str:
        return point_id_for(self.image_id)


@dataclasses.dataclass
class Dataset:
    """The records of a source, the folder images are resolved against, and cell-level warnings."""

    records: list[ImageRecord]
    image_root: Path
    warnings: list[str] = dataclasses.field(default_factory=list)


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV as text cells (ids are signed 64-bit integers: never let pandas make them numbers)."""
    if not path.is_file():
        raise ScinSearchError(f"file not found: {path}")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScinSearchError(f"cannot read {path}: {reason}") from None


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ScinSearchError(f"{path} lacks the column(s) {', '.join(missing)}")


def find_release_root(scin_dir: Path) -> tuple[Path, Path]:
    """(folder holding the CSVs, folder that `dataset/images/...` paths are relative to).

    Accepts the folder holding `dataset/` or `dataset/` itself."""
    scin_dir = scin_dir.expanduser()
    if (scin_dir / "dataset" / CASES_CSV).is_file():
        return scin_dir / "dataset", scin_dir
    if (scin_dir / CASES_CSV).is_file():
        return scin_dir, scin_dir.parent
    raise ScinSearchError(f"no {CASES_CSV} in {scin_dir} or {scin_dir / 'dataset'}: is this the SCIN release?")


def read_release(scin_dir: Path) -> Dataset:
    """The official release: one record per distinct image path, no case lost."""
    csv_dir, root = find_release_root(Path(scin_dir))
    cases = read_csv(csv_dir / CASES_CSV)
    labels = read_csv(csv_dir / LABELS_CSV)
    require_columns(cases, ["case_id", "image_1_path"], csv_dir / CASES_CSV)
    require_columns(labels, ["case_id", WEIGHTED_LABELS], csv_dir / LABELS_CSV)
    merged = cases.merge(labels, on="case_id", how="left", suffixes=("", "_labels"))
    warnings: list[str] = []
    case_payloads = [case_payload(row, warnings) for row in merged.to_dict("records")]
    condition_index = {
        name: i for i, name in enumerate(sorted({p["condition"] for p in case_payloads if p["condition"]}))
    }
    by_path: dict[str, ImageRecord] = {}
    for row, payload in zip(merged.to_dict("records"), case_payloads):
        payload["condition_label"] = condition_index.get(payload["condition"])
        for number in (1, 2, 3):
            add_release_image(by_path, row, payload, number, root, warnings)
    return Dataset(list(by_path.values()), root, warnings)


def add_release_image(
    by_path: dict[str, ImageRecord], row: dict, case: dict, number: int, root: Path, warnings: list[str]
) -> None:
    relative = cells.text(row.get(f"image_{number}_path"))
    if relative is None:
        return
    if relative in by_path:  # an image shared by several cases: one point, every case listed
        case_ids = by_path[relative].payload["case_ids"]
        if case["case_id"] not in case_ids:
            case_ids.append(case["case_id"])
        return
    file = resolve_image(root, relative)
    if file is None:
        warnings.append(f"case {case['case_id']}: unsafe image path {relative!r} skipped")
        return
    image_id = PurePosixPath(relative).stem
    payload = {
        "image_id": image_id,
        "image_path": relative,
        **case,
        "case_ids": [case["case_id"]],
        "image_index": number,
        "shot_type": cells.text(row.get(f"image_{number}_shot_type")),
    }
    by_path[relative] = ImageRecord(image_id, file, payload)


def cell(row: dict, column: str, parse, warnings: list[str], default=None):
    """Parse one cell; a malformed value becomes a warning and `default`."""
    try:
        return parse(row.get(column))
    except cells.CellError as exc:
        warnings.append(f"case {row.get('case_id')}: column {column}: {exc}")
        return default() if callable(default) else default


def case_payload(row: dict, warnings: list[str]) -> dict[str, Any]:
    """Every case and label column of one case, typed: lists for check boxes, numbers, booleans.
    The fields are declared in `scinsearch.schema` (a test keeps the two in step)."""
    case_id = cells.text(row.get("case_id")) or ""
    weighted = cell(row, WEIGHTED_LABELS, cells.parse_weighted_labels, warnings, dict)
    names = cell(row, LABEL_NAMES, cells.parse_string_list, warnings, list)
    derm_fst_labels = [
        label for n in (1, 2, 3) if (label := cells.text(row.get(f"dermatologist_fitzpatrick_skin_type_label_{n}")))
    ]
    derm_fst = cells.dermatologist_skin_type(derm_fst_labels)
    gradable_values = [
        v for n in (1, 2, 3) if (v := cells.text(row.get(f"dermatologist_gradable_for_skin_condition_{n}")))
    ]
    payload: dict[str, Any] = {
        "case_id": case_id,
        "condition": cells.primary_condition(weighted, names),
        "conditions": list(weighted),
        "all_conditions": names,
        "condition_confidences": cell(row, LABEL_CONFIDENCES, cells.parse_int_list, warnings, list),
        "weighted_labels": weighted,
        "labelled": bool(weighted),
        "age_group": cells.text(row.get("age_group")),
        "sex_at_birth": cells.text(row.get("sex_at_birth")),
        "fitzpatrick_skin_type": cells.text(row.get("fitzpatrick_skin_type")),
        "skin_type_group": cells.skin_type_group(cells.text(row.get("fitzpatrick_skin_type"))),
        "dermatologist_fitzpatrick_skin_type_labels": derm_fst_labels,
        "dermatologist_fitzpatrick_skin_type": derm_fst,
        "dermatologist_skin_type_group": cells.skin_type_group(derm_fst),
        "dermatologist_gradable_for_fitzpatrick_skin_type": [
            v for n in (1, 2, 3) if (v := cells.text(row.get(f"dermatologist_gradable_for_fitzpatrick_skin_type_{n}")))
        ],
        "dermatologist_gradable_for_skin_condition": gradable_values,
        "gradable": bool(gradable_values) and gradable_values[0] == cells.GRADABLE_FOR_CONDITION,
        "split": cells.split_for_case(case_id),
    }
    for region in ("us", "india"):
        tone = cell(row, f"monk_skin_tone_label_{region}", cells.parse_int, warnings)
        payload[f"monk_skin_tone_label_{region}"] = tone
        payload[f"monk_tone_group_{region}"] = cells.monk_tone_group(tone)
        payload[f"gradable_for_monk_skin_tone_{region}"] = cell(
            row, f"gradable_for_monk_skin_tone_{region}", cells.parse_bool, warnings
        )
    add_checkbox_lists(row, payload)
    add_remaining_columns(row, payload)
    payload["description"] = describe(payload)
    return payload


HANDLED_PREFIXES = ("image_", "dermatologist_", "monk_skin_tone_label_", "gradable_for_monk_skin_tone_")
HANDLED_COLUMNS = {"case_id", WEIGHTED_LABELS, "age_group", "sex_at_birth", "fitzpatrick_skin_type"}


def add_checkbox_lists(row: dict, payload: dict) -> None:
    """`body_parts_arm = YES` -> payload['body_parts'] = ['arm', ...]: one filterable list per family."""
    for prefix in CHECKBOX_FIELDS:
        payload[prefix] = [
            column[len(prefix) + 1 :]
            for column, value in row.items()
            if column.startswith(prefix + "_") and cells.text(value) == "YES"
        ]


def add_remaining_columns(row: dict, payload: dict) -> None:
    """Keep every other column (source, release, year, duration, ...), typed, without NaN."""
    for column, value in row.items():
        if column in HANDLED_COLUMNS or column.startswith(HANDLED_PREFIXES) or column in payload:
            continue
        if column.startswith(CHECKBOX_FIELDS) and cells.text(value) in (None, "YES"):
            continue
        typed = cells.generic_value(value)
        if typed is not None:
            payload[column] = typed


def describe(payload: dict) -> str:
    """A factual sentence built from the case's own metadata (no templates, no guesses)."""
    parts = []
    where = ", ".join(p.replace("_", " ") for p in payload.get("body_parts") or [])
    parts.append(f"Skin photo{' of the ' + where if where else ''}")
    if payload.get("weighted_labels"):
        labels = ", ".join(f"{name} ({weight:.0%})" for name, weight in list(payload["weighted_labels"].items())[:3])
        parts.append(f"dermatologist labels: {labels}")
    else:
        parts.append("no dermatologist condition label")
    who = [cells.humanize(payload.get("sex_at_birth")), cells.humanize(payload.get("age_group"))]
    if payload.get("fitzpatrick_skin_type"):
        who.append(f"self-reported skin type {payload['fitzpatrick_skin_type']}")
    who = [w for w in who if w]
    if who:
        parts.append("contributor: " + ", ".join(who))
    for key, label in (("textures", "texture"), ("condition_symptoms", "symptoms")):
        if payload.get(key):
            parts.append(f"{label}: " + ", ".join(v.replace("_", " ") for v in payload[key]))
    if payload.get("condition_duration"):
        parts.append(f"duration: {cells.humanize(payload['condition_duration'])}")
    return "; ".join(parts) + "."


def read_flat_csv(metadata_csv: Path, images_dir: Path) -> Dataset:
    """The existing scripts' one-row-per-image CSV; `image_path` is relative to `images_dir`."""
    metadata_csv, images_dir = Path(metadata_csv).expanduser(), Path(images_dir).expanduser()
    frame = read_csv(metadata_csv)
    require_columns(frame, ["image_id", "image_path"], metadata_csv)
    if not images_dir.is_dir():
        raise ScinSearchError(f"images folder not found: {images_dir}")
    warnings: list[str] = []
    records: dict[str, ImageRecord] = {}
    for line, row in enumerate(frame.to_dict("records"), start=2):
        record = flat_record(row, images_dir, warnings, f"{metadata_csv.name} line {line}")
        if record is None:
            continue
        if record.image_id in records:
            case_ids = records[record.image_id].payload["case_ids"]
            if record.payload["case_id"] not in case_ids:
                case_ids.append(record.payload["case_id"])
            continue
        records[record.image_id] = record
    return Dataset(list(records.values()), images_dir, warnings)


def flat_record(row: dict, images_dir: Path, warnings: list[str], where: str) -> ImageRecord | None:
    relative = cells.text(row.get("image_path"))
    image_id = cells.text(row.get("image_id")) or (PurePosixPath(relative).stem if relative else None)
    if not relative or not image_id:
        warnings.append(f"{where}: no image_path/image_id, skipped")
        return None
    file = resolve_image(images_dir, relative)
    if file is None:
        warnings.append(f"{where}: unsafe image path {relative!r} skipped")
        return None
    case_id = cells.text(row.get("case_id")) or image_id
    weighted = cell(row, "weighted_labels", cells.parse_weighted_labels, warnings, dict)
    names = cell(row, "all_conditions", cells.parse_string_list, warnings, list)
    split = cells.text(row.get("split"))
    payload = {
        column: cells.generic_value(value)
        for column, value in row.items()
        if column not in FLAT_COLUMNS and cells.text(value) is not None
    }
    payload.update(
        {
            "image_id": image_id,
            "image_path": relative,
            "case_id": case_id,
            "case_ids": [case_id],
            "condition": cells.text(row.get("condition")) or cells.primary_condition(weighted, names),
            "conditions": list(weighted),
            "all_conditions": names,
            "weighted_labels": weighted,
            "labelled": bool(weighted),
            "age_group": cells.text(row.get("age_group")),
            "sex_at_birth": cells.text(row.get("sex_at_birth")),
            "fitzpatrick_skin_type": cells.text(row.get("fitzpatrick_skin_type")),
            "skin_type_group": cells.skin_type_group(cells.text(row.get("fitzpatrick_skin_type"))),
            "condition_label": cell(row, "condition_label", cells.parse_int, warnings),
            "split": split if split in SPLITS else cells.split_for_case(case_id),
        }
    )
    payload["description"] = cells.text(row.get("description")) or describe(payload)
    return ImageRecord(image_id, file, payload)


def load_dataset(scin_dir: Path | None = None, metadata: Path | None = None, images_dir: Path | None = None) -> Dataset:
    """Pick the source from the arguments given: the release folder, or the flat CSV + images folder."""
    if scin_dir and metadata:
        raise ScinSearchError("give either --scin-dir (the official release) or --metadata, not both")
    if scin_dir:
        return read_release(Path(scin_dir))
    if metadata:
        if not images_dir:
            raise ScinSearchError("--metadata needs --images-dir (the folder the image_path values are in)")
        return read_flat_csv(Path(metadata), Path(images_dir))
    raise ScinSearchError("no data given: use --scin-dir DIR (official release) or --metadata CSV --images-dir DIR")
