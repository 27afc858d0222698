"""Read SCIN into one record per distinct image, with every metadata field typed for Qdrant.

Two sources, both untrusted:
- the official release: `scin_cases.csv` + `scin_labels.csv` joined on `case_id`, images at the
  `image_N_path` values (`dataset/images/<id>.png`);
- the flat one-row-per-image CSV of the existing scripts (`real_labeled_metadata.csv`).

Problems in single cells become warnings and the value is treated as missing; a malformed row (wrong
number of fields, a cell over `cells.MAX_CELL_CHARS`, bytes that are not UTF-8) is left out with a
warning naming its line; problems with a whole file (missing, too big, no header, wrong columns, no
readable row) raise `ScinSearchError` with one line. Two different files that would get the same image id
(the file stem) are both refused: a point is keyed by its image id, and which file won must not depend
on row order.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path, PurePosixPath
from typing import Any

from scinsearch import cells
from scinsearch.errors import ScinSearchError
from scinsearch.paths import resolve_image
from scinsearch.schema import CHECKBOX_FIELDS, FLAT_COLUMNS, SPLITS, point_id_for
from scinsearch.tables import read_csv, require_columns  # noqa: F401  (dataset.read_csv: also the downloader's)

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
    refused: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (file, why it is not a record)


def find_release_root(scin_dir: Path) -> tuple[Path, Path]:
    """(folder holding the CSVs, folder that `dataset/images/...` paths are relative to).

    Accepts the folder holding `dataset/` or `dataset/` itself."""
    scin_dir = scin_dir.expanduser()
    if not scin_dir.is_dir():
        raise ScinSearchError(
            f"the folder {scin_dir} does not exist: `scinsearch download --to {scin_dir}` gets the SCIN release"
        )
    if (scin_dir / "dataset" / CASES_CSV).is_file():
        return scin_dir / "dataset", scin_dir
    if (scin_dir / CASES_CSV).is_file():
        return scin_dir, scin_dir.parent
    raise ScinSearchError(f"no {CASES_CSV} in {scin_dir} or {scin_dir / 'dataset'}: is this the SCIN release?")


def read_release(scin_dir: Path) -> Dataset:
    """The official release: one record per distinct image path, no case lost."""
    csv_dir, root = find_release_root(Path(scin_dir))
    warnings: list[str] = []
    cases = read_csv(csv_dir / CASES_CSV, warnings)
    labels = read_csv(csv_dir / LABELS_CSV, warnings)
    require_columns(cases, ["case_id", "image_1_path"], csv_dir / CASES_CSV)
    require_columns(labels, ["case_id", WEIGHTED_LABELS], csv_dir / LABELS_CSV)
    merged = cases.merge(labels, on="case_id", how="left", suffixes=("", "_labels"))
    case_payloads = [case_payload(row, warnings) for row in merged.to_dict("records")]
    condition_index = {
        name: i for i, name in enumerate(sorted({p["condition"] for p in case_payloads if p["condition"]}))
    }
    by_path: dict[str, ImageRecord] = {}
    for row, payload in zip(merged.to_dict("records"), case_payloads):
        payload["condition_label"] = condition_index.get(payload["condition"])
        for number in (1, 2, 3):
            add_release_image(by_path, row, payload, number, root, warnings)
    records, refused = one_record_per_image_id([(f"case {r.payload['case_id']}", r) for r in by_path.values()])
    return Dataset(records, root, warnings + refusal_warnings(refused), refused)


def refusal_warnings(refused: list[tuple[str, str]]) -> list[str]:
    """One warning per refused group (its members share the reason)."""
    return list(dict.fromkeys(reason for _, reason in refused))


def one_record_per_image_id(
    labelled: list[tuple[str, ImageRecord]], merged: list[str] | None = None
) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    """Records that share an image id (hence a point id): the same file is kept once, its cases merged
    (`merged` gets 'where it repeats where'); different files are all refused, with the reason.

    `labelled`: (where it comes from, e.g. 'line 7' or 'case 123', record), in source order."""
    groups: dict[str, list[tuple[str, ImageRecord]]] = collections.defaultdict(list)
    for where, record in labelled:
        groups[record.image_id].append((where, record))
    kept: list[ImageRecord] = []
    refused: list[tuple[str, str]] = []
    for image_id, group in groups.items():
        first = group[0][1]
        if len({record.file for _, record in group}) > 1:
            sources = "; ".join(f"{record.payload['image_path']} ({where})" for where, record in group)
            reason = (
                f"image id {image_id} belongs to {len(group)} different files: {sources}; none is stored, because "
                f"a point is keyed by its image id and which file won would depend on row order (give each its own id)"
            )
            refused += [(str(record.file), reason) for _, record in group]
            continue
        for where, record in group[1:]:
            case_ids = first.payload["case_ids"]
            case_ids += [case for case in record.payload["case_ids"] if case not in case_ids]
            if merged is not None:
                merged.append(f"{where} repeats {group[0][0]}")
        kept.append(first)
    return kept, refused


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


def shared_fields(row: dict, weighted: dict, names: list) -> dict[str, Any]:
    """The fields both readers (the release and the flat CSV) derive the same way from a row and its
    labels: written once, so the two sources cannot drift apart."""
    self_reported = cells.text(row.get("fitzpatrick_skin_type"))
    return {
        "conditions": list(weighted),
        "all_conditions": names,
        "weighted_labels": weighted,
        "labelled": bool(weighted),
        "age_group": cells.text(row.get("age_group")),
        "sex_at_birth": cells.text(row.get("sex_at_birth")),
        "fitzpatrick_skin_type": self_reported,
        "skin_type_group": cells.skin_type_group(self_reported),
    }


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
        **shared_fields(row, weighted, names),
        "condition_confidences": cell(row, LABEL_CONFIDENCES, cells.parse_int_list, warnings, list),
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
    """The existing scripts' one-row-per-image CSV; `image_path` is relative to `images_dir`.

    Cells that `prepare` neutralised against spreadsheet formulas are read back as they were
    (`cells.from_csv_cell`). An image listed on several lines (once per case, as the legacy file does) is
    one record under all its cases."""
    metadata_csv, images_dir = Path(metadata_csv).expanduser(), Path(images_dir).expanduser()
    warnings: list[str] = []
    frame = read_csv(metadata_csv, warnings)
    require_columns(frame, ["image_id", "image_path"], metadata_csv)
    if not images_dir.is_dir():
        raise ScinSearchError(f"images folder not found: {images_dir}")
    labelled: list[tuple[str, ImageRecord]] = []
    for line, row in zip(frame.index, frame.to_dict("records")):
        where = f"{metadata_csv.name} line {line}"
        record = flat_record({k: cells.from_csv_cell(v) for k, v in row.items()}, images_dir, warnings, where)
        if record is not None:
            labelled.append((where, record))
    merged: list[str] = []
    records, refused = one_record_per_image_id(labelled, merged)
    if merged:
        warnings.append(
            f"{len(merged)} row(s) repeat an image already listed with the same file ({merged[0]}, ...): "
            f"each image is stored once, under every case it is listed with"
        )
    return Dataset(records, images_dir, warnings + refusal_warnings(refused), refused)


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
            **shared_fields(row, weighted, names),
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
