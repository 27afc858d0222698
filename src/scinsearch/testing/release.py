"""A small synthetic data set in the official SCIN layout, with the real release's traps (Python-literal
cells, commas inside names, `{}` labels, shared and missing images, broken files)."""

from __future__ import annotations

import ast
import csv
import random
from pathlib import Path

import numpy as np
from PIL import Image

from scinsearch.testing.photos import CONDITIONS, condition_image, png_bytes

BODY_PARTS = ["head_or_neck", "arm", "palm", "leg", "torso_front", "foot_sole"]
TEXTURES = ["raised_or_bumpy", "flat", "rough_or_flaky", "fluid_filled"]
SYMPTOMS = ["itching", "burning", "pain", "bleeding"]
AGES = ["AGE_18_TO_29", "AGE_30_TO_39", "AGE_40_TO_49", "AGE_UNKNOWN"]
SEXES = ["FEMALE", "MALE", "OTHER_OR_UNSPECIFIED"]
SELF_FST = ["FST1", "FST2", "FST3", "FST4", "FST5", "FST6", "NONE_IDENTIFIED", ""]
GRADABILITY = [
    "DEFAULT_YES_IMAGE_QUALITY_SUFFICIENT",
    "NO_IMAGE_QUALITY_INSUFFICIENT",
    "YES_IMAGE_QUALITY_SUFFICIENT_NO_DISCERNIBLE_PATHOLOGY",
]
SHOTS = ["CLOSE_UP", "AT_AN_ANGLE", "AT_DISTANCE"]

CASE_COLUMNS = (
    ["case_id", "source", "release", "year", "age_group", "sex_at_birth", "fitzpatrick_skin_type"]
    + [f"race_ethnicity_{r}" for r in ("asian", "black_or_african_american", "white")]
    + [f"textures_{t}" for t in TEXTURES]
    + [f"body_parts_{b}" for b in BODY_PARTS]
    + [f"condition_symptoms_{s}" for s in SYMPTOMS]
    + [
        "other_symptoms_fever",
        "related_category",
        "condition_duration",
        "image_1_path",
        "image_2_path",
        "image_3_path",
        "image_1_shot_type",
        "image_2_shot_type",
        "image_3_shot_type",
        "combined_race",
        "race_ethnicity_two_or_more_after_mitigation",
    ]
)
LABEL_COLUMNS = (
    ["case_id"]
    + [f"dermatologist_gradable_for_skin_condition_{n}" for n in (1, 2, 3)]
    + [
        "dermatologist_skin_condition_on_label_name",
        "dermatologist_skin_condition_confidence",
        "weighted_skin_condition_label",
    ]
    + [f"dermatologist_gradable_for_fitzpatrick_skin_type_{n}" for n in (1, 2, 3)]
    + [f"dermatologist_fitzpatrick_skin_type_label_{n}" for n in (1, 2, 3)]
    + [
        "gradable_for_monk_skin_tone_india",
        "gradable_for_monk_skin_tone_us",
        "monk_skin_tone_label_india",
        "monk_skin_tone_label_us",
    ]
)
MISSING_IMAGE = "dataset/images/-2243186711511406658.png"


def case_rows(case_id: str, number: int, rng: random.Random, images: list[str]) -> tuple[dict, dict]:
    """One row of scin_cases.csv and one of scin_labels.csv, in the release's literal formats."""
    labelled = number % 5 != 4  # every fifth case unlabelled: `{}` and `[]`
    main = CONDITIONS[number % len(CONDITIONS)]
    other = CONDITIONS[(number + 3) % len(CONDITIONS)]
    weighted = {main: 0.67, other: 0.33} if labelled and number % 3 else ({main: 1.0} if labelled else {})
    names = [main, other, main] if labelled else []
    case = {column: "" for column in CASE_COLUMNS}
    case.update(
        {
            "case_id": case_id,
            "source": "SCIN",
            "release": "1.0.0",
            "year": "2023",
            "age_group": AGES[number % len(AGES)],
            "sex_at_birth": SEXES[number % len(SEXES)],
            "fitzpatrick_skin_type": SELF_FST[number % len(SELF_FST)],
            "condition_duration": "ONE_TO_FOUR_WEEKS" if number % 2 else "",
            "related_category": "RASH",
            f"body_parts_{BODY_PARTS[number % len(BODY_PARTS)]}": "YES",
            "body_parts_arm": "YES",
            f"textures_{TEXTURES[number % len(TEXTURES)]}": "YES",
            f"condition_symptoms_{SYMPTOMS[number % len(SYMPTOMS)]}": "YES",
            "race_ethnicity_white" if number % 2 else "race_ethnicity_asian": "YES",
        }
    )
    for n, path in enumerate(images, start=1):
        case[f"image_{n}_path"] = path
        case[f"image_{n}_shot_type"] = SHOTS[(number + n) % 3]
    label = {column: "" for column in LABEL_COLUMNS}
    derm_fst = f"FST{number % 6 + 1}"
    label.update(
        {
            "case_id": case_id,
            "dermatologist_gradable_for_skin_condition_1": GRADABILITY[0 if labelled else number % 3],
            "dermatologist_skin_condition_on_label_name": repr(names),
            "dermatologist_skin_condition_confidence": repr([4, 3, 4] if labelled else []),
            "weighted_skin_condition_label": repr(weighted),
            "dermatologist_gradable_for_fitzpatrick_skin_type_1": "YES",
            "dermatologist_fitzpatrick_skin_type_label_1": derm_fst,
            "gradable_for_monk_skin_tone_india": "True",
            "gradable_for_monk_skin_tone_us": "True",
            "monk_skin_tone_label_india": f"{number % 10 + 1}.0",
            "monk_skin_tone_label_us": "" if number % 7 == 6 else f"{(number * 3) % 10 + 1}.0",
        }
    )
    return case, label


def write_release(
    root: Path, cases: int = 12, seed: int = 0, image_size: tuple[int, int] = (48, 64), broken_files: bool = True
) -> Path:
    """Write a SCIN-shaped release under `root/dataset/` and return `root`.

    With `broken_files` (needs at least 12 cases), it holds the release's traps: an image shared by two
    cases, the one missing image of the real release, a truncated PNG, an empty file, a text file named
    .png, and images in RGBA, P, LA, I;16, CMYK (a JPEG body) and with an EXIF rotation."""
    rng = random.Random(seed)
    images_dir = root / "dataset" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    case_table, label_table = [], []
    for number in range(cases):
        case_id = str(rng.randrange(-(2**63), 2**63))
        paths = [f"dataset/images/{rng.randrange(-(2**63), 2**63)}.png" for _ in range(1 + number % 3)]
        case, label = case_rows(case_id, number, rng, paths)
        condition = max(eval_weights(label), key=eval_weights(label).get, default=None)
        for path in paths:
            condition_image(condition, image_size, rng).save(root / path)
        case_table.append(case)
        label_table.append(label)
    if broken_files and cases >= 12:
        add_traps(root, case_table, rng, image_size)
    write_table(root / "dataset" / "scin_cases.csv", CASE_COLUMNS, case_table)
    write_table(root / "dataset" / "scin_labels.csv", LABEL_COLUMNS, label_table)
    return root


def eval_weights(label: dict) -> dict:
    return ast.literal_eval(label["weighted_skin_condition_label"])


def add_traps(root: Path, case_table: list[dict], rng: random.Random, size: tuple[int, int]) -> None:
    """Mutate the written cases so they carry the real release's traps and some broken files."""
    case_table[1]["image_2_path"] = case_table[0]["image_1_path"]  # one image, two cases
    case_table[2]["image_1_path"] = MISSING_IMAGE  # referenced, not in the release
    broken = {
        "truncated": lambda p: p.write_bytes(png_bytes(size)[:60]),
        "empty": lambda p: p.write_bytes(b""),
        "not_an_image": lambda p: p.write_text("this is not a picture"),
    }
    modes = {"rgba": "RGBA", "palette": "P", "grey_alpha": "LA", "sixteen_bit": "I;16"}
    targets = [c for c in case_table[3:] if c["image_2_path"]]
    for case, (_name, writer) in zip(targets, broken.items()):
        writer(root / case["image_2_path"])
    odd = [c for c in case_table[3:] if c["image_1_path"]]
    for case, (_name, mode) in zip(odd, modes.items()):
        picture = condition_image(CONDITIONS[0], size, rng)
        if mode == "I;16":
            grey = np.asarray(picture.convert("L"), dtype=np.uint16) * 257
            picture = Image.fromarray(grey)  # uint16 array -> mode I;16
        else:
            picture = picture.convert(mode)
        picture.save(root / case["image_1_path"])
    cmyk_case, rotated_case = odd[len(modes)], odd[len(modes) + 1]
    condition_image(CONDITIONS[1], size, rng).convert("CMYK").save(root / cmyk_case["image_1_path"], format="JPEG")
    rotated = condition_image(CONDITIONS[2], size, rng)
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise when displayed
    rotated.save(root / rotated_case["image_1_path"], exif=exif)


def write_table(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
