"""Coverage of a collection: how many images and cases each condition, skin type, Monk tone group, body
part and split has, and the conditions x skin-type tables that show where cases are few.

Counts come from the stored payloads only (no vectors). An image counts once per group it falls in: once
for its condition, once for each body part it shows. A case counts once per group any of its images falls
in (an image shared by two cases counts for both). Each table is plain data (`columns`, `rows`) that the
page, the report and tests read alike.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

from scinsearch.schema import BODY_PARTS, DERM_FITZPATRICK, SELF_FITZPATRICK, SPLITS, case_ids

TOP_CONDITIONS = 30  # conditions listed by name; the rest are one "long tail" row
FEW_CASES = 10  # a conditions x skin-type cell with fewer cases than this is flagged
UNLABELLED = "(no dermatologist label)"
UNKNOWN = "unknown"
SKIN_GROUPS = ("I-II", "III-IV", "V-VI", UNKNOWN)
MONK_GROUPS = ("1-3", "4-6", "7-10", UNKNOWN)
# (id, title, payload field, the order of its known values)
GROUP_TABLES = (
    ("self_fitzpatrick", "Self-reported Fitzpatrick skin type", "fitzpatrick_skin_type", SELF_FITZPATRICK),
    ("dermatologist_fitzpatrick", "Dermatologists' Fitzpatrick skin type (eFST)",
     "dermatologist_fitzpatrick_skin_type", DERM_FITZPATRICK),
    ("self_skin_group", "Self-reported skin-type group", "skin_type_group", SKIN_GROUPS),
    ("dermatologist_skin_group", "Dermatologists' skin-type group", "dermatologist_skin_type_group", SKIN_GROUPS),
    ("monk_us", "Monk skin tone group (US annotators)", "monk_tone_group_us", MONK_GROUPS),
    ("monk_india", "Monk skin tone group (India annotators)", "monk_tone_group_india", MONK_GROUPS),
    ("body_part", "Body part (an image may show several)", "body_parts", BODY_PARTS),
    ("split", "Split", "split", SPLITS),
)  # fmt: skip
MATRIX_GROUPS = (
    ("conditions_by_self_skin", "Cases by condition and self-reported skin-type group", "skin_type_group"),
    ("conditions_by_dermatologist_skin", "Cases by condition and dermatologists' skin-type group",
     "dermatologist_skin_type_group"),
)  # fmt: skip


def condition_of(payload: dict) -> str:
    condition = payload.get("condition")
    return condition if isinstance(condition, str) and condition else UNLABELLED


def cases_of(payload: dict) -> tuple[str, ...]:
    return tuple(case_ids(payload))


def values_of(payload: dict, field: str) -> list[str]:
    """The group(s) of one image for a field: a list field gives each element, a missing value 'unknown'."""
    value = payload.get(field)
    if isinstance(value, list):
        return [str(v) for v in value if v not in (None, "")] or [UNKNOWN]
    return [UNKNOWN if value in (None, "") else str(value)]


class Tally:
    """Images and distinct cases per group."""

    def __init__(self):
        self.images: collections.Counter = collections.Counter()
        self.cases: dict[str, set[str]] = collections.defaultdict(set)

    def add(self, group: str, cases: Iterable[str]) -> None:
        self.images[group] += 1
        self.cases[group].update(cases)

    def row(self, group: str) -> list:
        return [group, self.images[group], len(self.cases[group])]


def ordered(groups: Iterable[str], known: Sequence[str]) -> list[str]:
    """The known values in their own order, then any others alphabetically, 'unknown' last."""
    present = set(groups)
    rest = sorted(present - set(known) - {UNKNOWN})
    return [g for g in known if g in present and g != UNKNOWN] + rest + ([UNKNOWN] if UNKNOWN in present else [])


def condition_table(payloads: Sequence[dict]) -> dict:
    """Images and cases per condition: the TOP_CONDITIONS largest by cases, then one long-tail row."""
    tally = Tally()
    for payload in payloads:
        tally.add(condition_of(payload), cases_of(payload))
    ranked = sorted(tally.images, key=lambda c: (-len(tally.cases[c]), -tally.images[c], c))
    labelled = [c for c in ranked if c != UNLABELLED]
    rows = [tally.row(c) for c in labelled[:TOP_CONDITIONS]]
    tail = labelled[TOP_CONDITIONS:]
    if tail:
        tail_cases = set().union(*(tally.cases[c] for c in tail))
        rows.append([f"long tail: {len(tail)} more conditions", sum(tally.images[c] for c in tail), len(tail_cases)])
    if UNLABELLED in tally.images:
        rows.append(tally.row(UNLABELLED))
    return {
        "id": "condition",
        "title": f"Condition (the {TOP_CONDITIONS} with most cases, then the long tail)",
        "columns": ["condition", "images", "cases"],
        "rows": rows,
        "conditions": len(labelled),
    }


def group_table(payloads: Sequence[dict], table_id: str, title: str, field: str, known: Sequence[str]) -> dict:
    tally = Tally()
    for payload in payloads:
        for group in values_of(payload, field):
            tally.add(group, cases_of(payload))
    return {
        "id": table_id,
        "title": title,
        "columns": [field, "images", "cases"],
        "rows": [tally.row(g) for g in ordered(tally.images, known)],
    }


def condition_matrix(payloads: Sequence[dict], table_id: str, title: str, field: str, conditions: list[str]) -> dict:
    """Distinct cases per (condition, skin-type group) for the listed conditions; cells under FEW_CASES flagged."""
    cases: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for payload in payloads:
        for group in values_of(payload, field):
            cases[condition_of(payload), group].update(cases_of(payload))
    rows, flagged = [], 0
    for condition in conditions:
        counts = [len(cases[condition, group]) for group in SKIN_GROUPS]
        flagged += sum(1 for c in counts[:-1] if c < FEW_CASES)
        rows.append([condition, *counts])
    return {
        "id": table_id,
        "title": title,
        "columns": ["condition", *SKIN_GROUPS],
        "rows": rows,
        "flag_below": FEW_CASES,
        "flag_columns": list(SKIN_GROUPS[:-1]),  # 'unknown' is not a group anyone is under-served in
        "flagged": flagged,
    }


def coverage(payloads: Sequence[dict]) -> dict:
    """Every coverage table of the page and the report, from the payloads."""
    by_condition = condition_table(payloads)
    top = [row[0] for row in by_condition["rows"][:TOP_CONDITIONS] if not row[0].startswith("long tail")]
    top = [c for c in top if c != UNLABELLED]
    return {
        "tables": [by_condition] + [group_table(payloads, *spec) for spec in GROUP_TABLES],
        "matrices": [condition_matrix(payloads, *spec, conditions=top) for spec in MATRIX_GROUPS],
        "few_cases": FEW_CASES,
        "top_conditions": TOP_CONDITIONS,
    }
