"""The payload schema: every field stored beside a vector, declared once; everything else reads it.

`dataset.case_payload` (the release) and `dataset.flat_record` (the flat CSV) write these fields.
The store indexes the fields with an `index`, `SearchFilters` restricts the fields with a `filter`,
each search result shows the `shown` ones, `prepare` writes the `flat_csv` ones (in the order of
FIELDS: that order is the flat CSV's column order), and evaluation breaks its metrics down by the
`breakdown` ones. The SCIN vocabularies, the train/val/test split and the point id live here too.

This module imports nothing heavy (no pandas, numpy or torch): the query path and the service read it.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import PurePosixPath


@dataclasses.dataclass(frozen=True)
class Field:
    """One payload field.

    type: keyword (text), integer, bool, text (free text, not indexed), keyword[] / integer[] (lists),
      checkboxes (the ticked suffixes of a `<name>_<suffix>` check-box column family), dict.
    index: the Qdrant payload index type ("keyword", "integer", "bool"), or None for no index.
    filter: the `SearchFilters` restriction on this field ("monk" is monk_min/monk_max,
      "gradable" is gradable_only), or None.
    shown: returned with each search result (`results.Neighbour.metadata`).
    flat_csv: a column of the flat one-row-per-image CSV (`scinsearch prepare`).
    breakdown: the name evaluation reports a per-group breakdown under, or None.
    required: both sources (the release and the flat CSV) write it for every image, if only as null;
      `scinsearch check` verifies it.
    """

    name: str
    type: str
    index: str | None = None
    filter: str | None = None
    shown: bool = False
    flat_csv: bool = False
    breakdown: str | None = None
    required: bool = False
    doc: str = ""


FIELDS: tuple[Field, ...] = (
    # The image and its case(s).
    Field(
        "image_id",
        "keyword",
        index="keyword",
        flat_csv=True,
        required=True,
        doc="the image file's stem (a signed 64-bit id)",
    ),
    Field(
        "image_path",
        "keyword",
        flat_csv=True,
        required=True,
        doc="path as the release lists it (dataset/images/<id>.png)",
    ),
    Field("image_index", "integer", doc="1-3: which of its case's photos"),
    Field(
        "case_id", "keyword", index="keyword", flat_csv=True, required=True, doc="the (first) case the image belongs to"
    ),
    Field(
        "case_ids",
        "keyword[]",
        index="keyword",
        required=True,
        doc="every case the image belongs to (a few images are shared)",
    ),
    # Dermatologist labels.
    Field("condition", "keyword", index="keyword", flat_csv=True, required=True, doc="the highest-weighted label"),
    Field("conditions", "keyword[]", index="keyword", filter="conditions", required=True, doc="every weighted label"),
    Field("all_conditions", "keyword[]", flat_csv=True, required=True, doc="every label name the dermatologists gave"),
    Field("condition_confidences", "integer[]", doc="the dermatologists' confidence per label name"),
    Field(
        "weighted_labels",
        "dict",
        flat_csv=True,
        required=True,
        doc="label -> weight, heaviest first; {} when unlabelled",
    ),
    Field("labelled", "bool", index="bool", filter="labelled", required=True, doc="the case has a weighted label"),
    # The person and the skin.
    Field("age_group", "keyword", index="keyword", filter="age_groups", shown=True, flat_csv=True, required=True),
    Field("sex_at_birth", "keyword", index="keyword", filter="sexes", shown=True, flat_csv=True, required=True),
    Field(
        "fitzpatrick_skin_type",
        "keyword",
        index="keyword",
        filter="fitzpatrick",
        shown=True,
        flat_csv=True,
        breakdown="self_reported_fitzpatrick",
        required=True,
        doc="self-reported: FST1-FST6 or NONE_IDENTIFIED",
    ),
    Field(
        "skin_type_group",
        "keyword",
        index="keyword",
        required=True,
        doc="self-reported type as I-II, III-IV, V-VI or unknown",
    ),
    Field("dermatologist_fitzpatrick_skin_type_labels", "keyword[]", doc="each dermatologist's Fitzpatrick label"),
    Field(
        "dermatologist_fitzpatrick_skin_type",
        "keyword",
        index="keyword",
        filter="dermatologist_fitzpatrick",
        shown=True,
        doc="median of the dermatologists' labels (eFST)",
    ),
    Field(
        "dermatologist_skin_type_group",
        "keyword",
        index="keyword",
        breakdown="dermatologist_skin_type_group",
        doc="eFST as I-II, III-IV, V-VI or unknown",
    ),
    Field("dermatologist_gradable_for_fitzpatrick_skin_type", "keyword[]"),
    Field(
        "monk_skin_tone_label_us",
        "integer",
        index="integer",
        filter="monk",
        shown=True,
        doc="Monk skin tone 1-10, US annotators",
    ),
    Field(
        "monk_skin_tone_label_india",
        "integer",
        index="integer",
        shown=True,
        doc="Monk skin tone 1-10, India annotators",
    ),
    Field("monk_tone_group_us", "keyword", breakdown="monk_tone_group_us", doc="1-3, 4-6, 7-10 or unknown"),
    Field("monk_tone_group_india", "keyword", doc="1-3, 4-6, 7-10 or unknown"),
    Field("gradable_for_monk_skin_tone_us", "bool"),
    Field("gradable_for_monk_skin_tone_india", "bool"),
    Field("race_ethnicity", "checkboxes"),
    Field("combined_race", "keyword", doc="as the release writes it"),
    Field("race_ethnicity_two_or_more_after_mitigation", "keyword", doc="as the release writes it"),
    # The complaint.
    Field("body_parts", "checkboxes", index="keyword", filter="body_parts", shown=True),
    Field("textures", "checkboxes", shown=True),
    Field("condition_symptoms", "checkboxes", shown=True),
    Field("other_symptoms", "checkboxes"),
    Field("related_category", "keyword", doc="as the release writes it"),
    Field("condition_duration", "keyword", shown=True),
    # The photo's quality.
    Field("shot_type", "keyword", shown=True, doc="CLOSE_UP, AT_AN_ANGLE or AT_DISTANCE"),
    Field("dermatologist_gradable_for_skin_condition", "keyword[]"),
    Field(
        "gradable",
        "bool",
        index="bool",
        filter="gradable",
        shown=True,
        doc="the first dermatologist found the image quality sufficient",
    ),
    # The release's bookkeeping, kept as written.
    Field("source", "keyword"),
    Field("release", "keyword"),
    Field("year", "integer"),
    # Derived, for the flat CSV's readers and for search.
    Field(
        "condition_label",
        "integer",
        flat_csv=True,
        required=True,
        doc="index of `condition` among the sorted condition names",
    ),
    Field(
        "split",
        "keyword",
        index="keyword",
        filter="splits",
        shown=True,
        flat_csv=True,
        required=True,
        doc="train, val or test, by case (see SPLIT_FRACTIONS)",
    ),
    Field(
        "description",
        "text",
        shown=True,
        flat_csv=True,
        required=True,
        doc="a factual sentence from the case's own metadata",
    ),
)

BY_NAME: dict[str, Field] = {field.name: field for field in FIELDS}
FIELD_NAMES: frozenset[str] = frozenset(BY_NAME)
INDEXED_FIELDS: dict[str, str] = {f.name: f.index for f in FIELDS if f.index}  # field -> payload index type
FILTER_FIELDS: dict[str, str] = {f.filter: f.name for f in FIELDS if f.filter}  # SearchFilters name -> field
SHOWN_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.shown)
FLAT_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.flat_csv)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
BREAKDOWN_FIELDS: dict[str, str] = {f.breakdown: f.name for f in FIELDS if f.breakdown}  # report name -> field
CHECKBOX_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.type == "checkboxes")

# SCIN's vocabularies, as the release spells them.
SELF_FITZPATRICK = ("FST1", "FST2", "FST3", "FST4", "FST5", "FST6", "NONE_IDENTIFIED")
DERM_FITZPATRICK = ("FST1", "FST2", "FST3", "FST4", "FST5", "FST6")
AGE_GROUPS = (
    "AGE_18_TO_29",
    "AGE_30_TO_39",
    "AGE_40_TO_49",
    "AGE_50_TO_59",
    "AGE_60_TO_69",
    "AGE_70_TO_79",
    "AGE_80_OR_ABOVE",
    "AGE_UNKNOWN",
)
SEXES = ("FEMALE", "MALE", "OTHER_OR_UNSPECIFIED")
BODY_PARTS = (
    "head_or_neck",
    "arm",
    "palm",
    "back_of_hand",
    "torso_front",
    "torso_back",
    "genitalia_or_groin",
    "buttocks",
    "leg",
    "foot_top_or_side",
    "foot_sole",
    "other",
)  # the release's body_parts_* columns
MONK_RANGE = (1, 10)

# The split, by case: a case's hash below the first bound is train, below the second val, else test.
SPLIT_FRACTIONS = (("train", 0.70), ("val", 0.85), ("test", 1.00))
SPLITS = tuple(name for name, _ in SPLIT_FRACTIONS)
TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = SPLITS  # what training, validation and the held-out measurement use

# Referenced by case 1834609919572055750 but absent from the bucket (google-research-datasets/scin issue #1):
# `download` reports it as a known gap, and `embed` does not count it against a complete run.
KNOWN_MISSING_OBJECTS = frozenset({"dataset/images/-2243186711511406658.png"})


def is_known_missing(path: str) -> bool:
    """The release's known gap, by its object path or (a file laid out elsewhere) by its file name."""
    names = {PurePosixPath(known).name for known in KNOWN_MISSING_OBJECTS}
    return path in KNOWN_MISSING_OBJECTS or PurePosixPath(path.replace("\\", "/")).name in names


POINT_NAMESPACE = uuid.UUID("5f1c6a52-7d0e-4a8e-9b3e-5c1e2a9d0b11")


def case_ids(payload: dict) -> list[str]:
    """Every case a stored image belongs to (`case_ids`; points written before it: `case_id` alone)."""
    return [str(c) for c in payload.get("case_ids") or [payload.get("case_id")] if c]


def point_id_for(image_id: str) -> str:
    """A deterministic Qdrant point id for an image (uuid5, not Python's per-process `hash()`)."""
    return str(uuid.uuid5(POINT_NAMESPACE, image_id))
