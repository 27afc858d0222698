"""What each image's payload must hold, worked out from the CSVs with the `csv` module alone.

An independent reference for `scinsearch.dataset`: nothing here imports scinsearch. It restates the
documented rules (docs/embedding.md, "What a point's payload holds") in plain code: blank cells are
missing, list and dict cells are Python literals, the primary condition is the heaviest weighted label
(else the first dermatologist name), check boxes are `YES`, and the split is 70/15/15 by a hash of the
case id (the hash is restated here on purpose: changing it would reshuffle every user's split).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import random
import statistics
from pathlib import Path, PurePosixPath

CHECKBOX_FAMILIES = ("race_ethnicity", "textures", "body_parts", "condition_symptoms", "other_symptoms")
KEPT_AS_TEXT = ("source", "release", "related_category", "condition_duration", "combined_race")
OLD_SCRIPT_COLUMNS = [
    "image_id",
    "image_path",
    "case_id",
    "condition",
    "all_conditions",
    "weighted_labels",
    "age_group",
    "sex_at_birth",
    "fitzpatrick_skin_type",
    "condition_label",
    "split",
    "description",
]


def read_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def blank_is_none(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def whole(value: str | None) -> int | None:
    return int(float(value)) if blank_is_none(value) else None


def weighted_labels(cell: str | None) -> dict[str, float]:
    """Heaviest first, ties by name, weights as floats."""
    parsed = ast.literal_eval(cell) if blank_is_none(cell) else {}
    return dict(sorted(((k.strip(), float(v)) for k, v in parsed.items()), key=lambda kv: (-kv[1], kv[0])))


def literal_list(cell: str | None) -> list:
    return list(ast.literal_eval(cell)) if blank_is_none(cell) else []


def primary(weighted: dict[str, float], names: list[str]) -> str | None:
    return next(iter(weighted), None) or (names[0] if names else None)


def fitzpatrick_group(label: str | None) -> str:
    number = int(label[3:]) if label and label.startswith("FST") and label[3:].isdigit() else 0
    return {1: "I-II", 2: "I-II", 3: "III-IV", 4: "III-IV", 5: "V-VI", 6: "V-VI"}.get(number, "unknown")


def monk_group(tone: int | None) -> str:
    if tone is None or not 1 <= tone <= 10:
        return "unknown"
    return "1-3" if tone <= 3 else "4-6" if tone <= 6 else "7-10"


def case_split(case_id: str) -> str:
    fraction = int.from_bytes(hashlib.sha256(f"scin-split:{case_id}".encode()).digest()[:8], "big") / 2**64
    return "train" if fraction < 0.70 else "val" if fraction < 0.85 else "test"


def label_and_person(weighted: dict, names: list[str], row: dict[str, str]) -> dict:
    """The fields both tables give the same way: from the weighted labels, the dermatologists' condition
    names, and the person's own cells (age, sex, self-reported skin type)."""
    self_type = blank_is_none(row["fitzpatrick_skin_type"])
    return {
        "conditions": list(weighted),
        "all_conditions": names,
        "weighted_labels": weighted,
        "labelled": bool(weighted),
        "age_group": blank_is_none(row["age_group"]),
        "sex_at_birth": blank_is_none(row["sex_at_birth"]),
        "fitzpatrick_skin_type": self_type,
        "skin_type_group": fitzpatrick_group(self_type),
    }


def release_case(case: dict[str, str], label: dict[str, str]) -> dict:
    """Every payload field a case gives its images (not `condition_label`, which needs all cases)."""
    weighted = weighted_labels(label.get("weighted_skin_condition_label"))
    names = [n.strip() for n in literal_list(label.get("dermatologist_skin_condition_on_label_name"))]
    derm = [v for n in (1, 2, 3) if (v := blank_is_none(label.get(f"dermatologist_fitzpatrick_skin_type_label_{n}")))]
    numbers = [int(v[3:]) for v in derm if v.startswith("FST") and v[3:].isdigit()]
    derm_type = f"FST{statistics.median_low(numbers)}" if numbers else None
    gradable = [
        v for n in (1, 2, 3) if (v := blank_is_none(label.get(f"dermatologist_gradable_for_skin_condition_{n}")))
    ]
    payload = {
        "case_id": case["case_id"],
        "condition": primary(weighted, names),
        **label_and_person(weighted, names, case),
        "condition_confidences": literal_list(label.get("dermatologist_skin_condition_confidence")),
        "dermatologist_fitzpatrick_skin_type_labels": derm,
        "dermatologist_fitzpatrick_skin_type": derm_type,
        "dermatologist_skin_type_group": fitzpatrick_group(derm_type),
        "dermatologist_gradable_for_fitzpatrick_skin_type": [
            v
            for n in (1, 2, 3)
            if (v := blank_is_none(label.get(f"dermatologist_gradable_for_fitzpatrick_skin_type_{n}")))
        ],
        "dermatologist_gradable_for_skin_condition": gradable,
        "gradable": bool(gradable) and gradable[0] == "DEFAULT_YES_IMAGE_QUALITY_SUFFICIENT",
        "split": case_split(case["case_id"]),
    }
    for region in ("us", "india"):
        tone = whole(label.get(f"monk_skin_tone_label_{region}"))
        payload[f"monk_skin_tone_label_{region}"] = tone
        payload[f"monk_tone_group_{region}"] = monk_group(tone)
        flag = blank_is_none(label.get(f"gradable_for_monk_skin_tone_{region}"))
        payload[f"gradable_for_monk_skin_tone_{region}"] = None if flag is None else flag.lower() in ("true", "yes")
    for family in CHECKBOX_FAMILIES:
        payload[family] = [c[len(family) + 1 :] for c, v in case.items() if c.startswith(family + "_") and v == "YES"]
    for column in KEPT_AS_TEXT:
        if blank_is_none(case.get(column)):
            payload[column] = blank_is_none(case[column])
    if blank_is_none(case.get("year")):
        payload["year"] = int(case["year"])
    return payload


def release_images(csv_dir: Path) -> dict[str, dict]:
    """image_id -> the payload (without `description`) of every distinct image path of the release."""
    labels = {row["case_id"]: row for row in read_table(csv_dir / "scin_labels.csv")}
    cases = [(row, release_case(row, labels.get(row["case_id"], {}))) for row in read_table(csv_dir / "scin_cases.csv")]
    names = sorted({payload["condition"] for _, payload in cases if payload["condition"]})
    images: dict[str, dict] = {}
    for row, case in cases:
        for number in (1, 2, 3):
            path = blank_is_none(row[f"image_{number}_path"])
            if path is None:
                continue
            image_id = PurePosixPath(path).stem
            if image_id in images:
                if row["case_id"] not in images[image_id]["case_ids"]:
                    images[image_id]["case_ids"].append(row["case_id"])
                continue
            images[image_id] = {
                **case,
                "condition_label": names.index(case["condition"]) if case["condition"] else None,
                "image_id": image_id,
                "image_path": path,
                "case_ids": [row["case_id"]],
                "image_index": number,
                "shot_type": blank_is_none(row[f"image_{number}_shot_type"]),
            }
    return images


def description_facts(payload: dict) -> list[str]:
    """Words a factual description of the case must contain (not its exact wording)."""
    facts = [part.replace("_", " ") for part in payload["body_parts"]]
    facts += list(payload["weighted_labels"])[:3] or ["no dermatologist condition label"]
    if payload["sex_at_birth"]:
        facts.append(payload["sex_at_birth"].replace("_", " ").lower())
    if payload["fitzpatrick_skin_type"]:
        facts.append(payload["fitzpatrick_skin_type"])
    return facts


def write_old_style_flat_csv(csv_dir: Path, images_dir: Path, out: Path) -> Path:
    """real_labeled_metadata.csv as the original kiosk's create_correct_metadata.py made it: labelled cases
    only, one row per image file present, `str()` of the list and dict, a seeded split, a template sentence."""
    labels = {row["case_id"]: row for row in read_table(csv_dir / "scin_labels.csv")}
    rows = []
    for case in read_table(csv_dir / "scin_cases.csv"):
        label = labels.get(case["case_id"])
        names = literal_list(label and label["dermatologist_skin_condition_on_label_name"])
        if not names:
            continue
        weighted = ast.literal_eval(label["weighted_skin_condition_label"] or "{}")
        condition = max(weighted, key=weighted.get) if weighted else names[0]
        for number in (1, 2, 3):
            path = blank_is_none(case[f"image_{number}_path"])
            if path and (images_dir / PurePosixPath(path).name).is_file():
                rows.append({"case_id": case["case_id"], "condition": condition, "names": names, "weighted": weighted})
                rows[-1].update(path=PurePosixPath(path).name, case=case)
    conditions = sorted({row["condition"] for row in rows})
    case_ids = sorted({row["case_id"] for row in rows})
    random.Random(42).shuffle(case_ids)
    cut = (int(len(case_ids) * 0.7), int(len(case_ids) * 0.85))
    split = {c: "train" if i < cut[0] else "val" if i < cut[1] else "test" for i, c in enumerate(case_ids)}
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(OLD_SCRIPT_COLUMNS)
        for row in rows:
            case = row["case"]
            writer.writerow(
                [
                    PurePosixPath(row["path"]).stem,
                    row["path"],
                    row["case_id"],
                    row["condition"],
                    str(row["names"]),
                    str(row["weighted"]),
                    case["age_group"],
                    case["sex_at_birth"],
                    case["fitzpatrick_skin_type"],
                    conditions.index(row["condition"]),
                    split[row["case_id"]],
                    f"A dermatological image showing {row['condition']}",
                ]
            )
    return out


def flat_images(flat_csv: Path) -> dict[str, dict]:
    """image_id -> the payload an image of the flat CSV must get (the first row of a repeated image wins)."""
    images: dict[str, dict] = {}
    for row in read_table(flat_csv):
        if row["image_id"] in images:
            if row["case_id"] not in images[row["image_id"]]["case_ids"]:
                images[row["image_id"]]["case_ids"].append(row["case_id"])
            continue
        weighted = weighted_labels(row["weighted_labels"])
        names = [n.strip() for n in literal_list(row["all_conditions"])]
        images[row["image_id"]] = {
            "image_id": row["image_id"],
            "image_path": row["image_path"],
            "case_id": row["case_id"],
            "case_ids": [row["case_id"]],
            "condition": blank_is_none(row["condition"]) or primary(weighted, names),
            **label_and_person(weighted, names, row),
            "condition_label": whole(row["condition_label"]),
            "split": row["split"],
            "description": row["description"],
        }
    return images
