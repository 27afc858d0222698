"""Turn SCIN's text cells into typed, filterable payload values.

The release stores lists and dicts as Python literals in text (`['Eczema', 'Acute dermatitis, NOS']`),
check boxes as `YES` or blank, numbers as text with NaN holes. Everything here is defensive: a cell is
untrusted text, so it is parsed with `ast.literal_eval` (never `eval`), size-capped and type-checked.
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
import statistics
from typing import Any

from scinsearch.schema import SPLIT_FRACTIONS

MISSING_MARKERS = {"", "nan", "NaN", "NAN", "None", "none", "null", "NULL", "<NA>", "NaT"}
MAX_CELL_CHARS = 20_000  # any CSV cell; SCIN's longest are a few hundred characters
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?(\.[A-Za-z0-9]{1,5})?")  # -123, 3.5, -123.png: no formula possible

GRADABLE_FOR_CONDITION = "DEFAULT_YES_IMAGE_QUALITY_SUFFICIENT"
SKIN_TYPE_GROUPS = {1: "I-II", 2: "I-II", 3: "III-IV", 4: "III-IV", 5: "V-VI", 6: "V-VI"}


class CellError(ValueError):
    """A cell whose text is not the kind of value its column holds."""


def is_missing(value: Any) -> bool:
    """True for NaN, None and the textual spellings of 'no value'."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() in MISSING_MARKERS


def text(value: Any) -> str | None:
    """A stripped string, or None when the cell is empty."""
    return None if is_missing(value) else str(value).strip()


def parse_literal(value: Any, expected: type) -> Any:
    """Parse a Python literal cell (list or dict) safely; empty cells give an empty container."""
    raw = text(value)
    if raw is None:
        return expected()
    if len(raw) > MAX_CELL_CHARS:
        raise CellError(f"value is {len(raw)} characters long (limit {MAX_CELL_CHARS})")
    try:
        parsed = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise CellError(f"not a Python literal: {raw[:60]!r}") from exc
    if not isinstance(parsed, expected):
        raise CellError(f"expected a {expected.__name__}, got {type(parsed).__name__}: {raw[:60]!r}")
    return parsed


def parse_weighted_labels(value: Any) -> dict[str, float]:
    """`{'Eczema': 0.62, 'Tinea': 0.38}` -> a dict of finite, non-negative weights, heaviest first."""
    parsed = parse_literal(value, dict)
    labels = {}
    for name, weight in parsed.items():
        if not isinstance(name, str) or not name.strip():
            raise CellError(f"label name {name!r} is not text")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise CellError(f"weight {weight!r} of {name!r} is not a non-negative number")
        labels[name.strip()] = float(weight)
    return dict(sorted(labels.items(), key=lambda item: (-item[1], item[0])))


def parse_string_list(value: Any) -> list[str]:
    """`['Eczema', 'Acute dermatitis, NOS']` -> list of names (never split on commas)."""
    parsed = parse_literal(value, list)
    if not all(isinstance(item, str) for item in parsed):
        raise CellError("list holds non-text items")
    return [item.strip() for item in parsed]


def parse_int_list(value: Any) -> list[int]:
    parsed = parse_literal(value, list)
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in parsed):
        raise CellError("list holds non-integer items")
    return parsed


def parse_int(value: Any) -> int | None:
    """'3', '3.0' -> 3; empty -> None (pandas writes integer columns with holes as floats)."""
    raw = text(value)
    if raw is None:
        return None
    try:
        number = float(raw)
    except ValueError as exc:
        raise CellError(f"not a number: {raw[:30]!r}") from exc
    if not math.isfinite(number) or number != int(number):
        raise CellError(f"not a whole number: {raw[:30]!r}")
    return int(number)


def parse_bool(value: Any) -> bool | None:
    """'True'/'False'/'YES'/'NO' -> bool; empty -> None."""
    raw = text(value)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise CellError(f"not a yes/no value: {raw[:30]!r}")


def generic_value(value: Any) -> Any:
    """Best typed form of a cell from a column this module has no rule for (schema drift)."""
    raw = text(value)
    if raw is None:
        return None
    if raw in ("YES", "True", "TRUE", "true"):
        return True
    if raw in ("NO", "False", "FALSE", "false"):
        return False
    try:
        return parse_int(raw)
    except CellError:
        pass
    if raw[0] in "[{":
        try:
            parsed = ast.literal_eval(raw) if len(raw) <= MAX_CELL_CHARS else raw
            return parsed if isinstance(parsed, (list, dict)) else raw
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return raw
    return raw


def to_csv_cell(value: str) -> str:
    """Neutralise a cell a spreadsheet would run as a formula: prefix a single quote when it starts with
    = + - @ TAB or CR, unless it is a plain number or number-named file (SCIN's ids and image paths,
    `-5669089898008966381.png`, hold no formula and must stay as they are). A cell that already starts
    with a quote gets one more, so `from_csv_cell` gives every value back exactly."""
    if value.startswith("'") or (value.startswith(FORMULA_TRIGGERS) and not PLAIN_NUMBER.fullmatch(value)):
        return "'" + value
    return value


def from_csv_cell(value: Any) -> Any:
    """The value `to_csv_cell` was given: one leading quote removed where it added one."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(("'", *FORMULA_TRIGGERS)):
        return value[1:]
    return value


def primary_condition(weighted: dict[str, float], names: list[str]) -> str | None:
    """The highest-weighted label, falling back to the first dermatologist name."""
    if weighted:
        return next(iter(weighted))  # already sorted heaviest first
    return names[0] if names else None


def fitzpatrick_number(label: str | None) -> int | None:
    """'FST3' -> 3; anything else (NONE_IDENTIFIED, empty) -> None."""
    if label and label.upper().startswith("FST") and label[3:].isdigit() and 1 <= int(label[3:]) <= 6:
        return int(label[3:])
    return None


def dermatologist_skin_type(labels: list[str]) -> str | None:
    """Median of the dermatologists' Fitzpatrick labels (rounded down), as 'FSTn'."""
    numbers = [n for n in (fitzpatrick_number(label) for label in labels) if n is not None]
    if not numbers:
        return None
    return f"FST{int(statistics.median_low(numbers))}"


def skin_type_group(label: str | None) -> str:
    """'FST1'/'FST2' -> 'I-II', 3-4 -> 'III-IV', 5-6 -> 'V-VI', else 'unknown'."""
    number = fitzpatrick_number(label)
    return SKIN_TYPE_GROUPS.get(number, "unknown") if number else "unknown"


def monk_tone_group(tone: int | None) -> str:
    """Monk skin tone 1-10 grouped as in the SCIN audits: 1-3, 4-6, 7-10."""
    if tone is None or not 1 <= tone <= 10:
        return "unknown"
    return "1-3" if tone <= 3 else "4-6" if tone <= 6 else "7-10"


def split_for_case(case_id: str) -> str:
    """A deterministic train/val/test split by case (70/15/15, `schema.SPLIT_FRACTIONS`): a hash, so it
    is stable across runs, machines and `--limit` subsets, and all images of a case land on the same side."""
    digest = hashlib.sha256(f"scin-split:{case_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return next(name for name, upper in SPLIT_FRACTIONS if fraction < upper)


def humanize(enum_value: str | None) -> str | None:
    """'AGE_30_TO_39' -> 'age 30 to 39'; for readable descriptions."""
    return enum_value.replace("_", " ").lower() if enum_value else None
