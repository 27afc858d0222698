"""Search filters on the payload, validated against SCIN's own vocabularies before they reach Qdrant.

The vocabularies and the payload field of each filter are declared in `scinsearch.schema`.
A typo in a filter must not silently return nothing: enumerated fields (skin type, age group, sex,
split) are checked here against the release's values, with the valid ones listed in the error. Free
text fields (condition, body part) cannot be listed up front, so the searcher checks them against the
store when a search comes back empty (see `Searcher`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from scinsearch.errors import BAD_FILTER, ScinSearchError
from scinsearch.schema import AGE_GROUPS, DERM_FITZPATRICK, FILTER_FIELDS, MONK_RANGE, SELF_FITZPATRICK, SEXES, SPLITS
from scinsearch.store import Filter, Match, Range

ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6}


def as_tuple(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """None, 'a,b' or ['a', 'b,c'] -> ('a', 'b', 'c'): one shape for flags, JSON and Python callers."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    return tuple(part.strip() for value in values for part in str(value).split(",") if part.strip())


def pick(value: str, valid: tuple[str, ...], what: str, spellings: dict[str, str]) -> str:
    """The canonical spelling of `value`, or a one-line error listing what is valid."""
    canonical = spellings.get(value.strip().upper().replace("-", "_").replace(" ", "_"))
    if canonical is None:
        raise ScinSearchError(f"unknown {what} {value!r}: use one of {', '.join(valid)}", BAD_FILTER)
    return canonical


def fitzpatrick_spellings(valid: tuple[str, ...]) -> dict[str, str]:
    """'FST5', 'fst5', '5' and 'V' all mean FST5."""
    spellings = {label.upper(): label for label in valid}
    for label in valid:
        if label.startswith("FST"):
            number = label[3:]
            spellings[number] = label
            spellings.update({roman: label for roman, n in ROMAN.items() if str(n) == number})
    if "NONE_IDENTIFIED" in valid:
        spellings["NONE"] = "NONE_IDENTIFIED"
    return spellings


def age_spellings() -> dict[str, str]:
    """'AGE_30_TO_39', '30_to_39' and '30-39' all mean AGE_30_TO_39."""
    spellings = {label: label for label in AGE_GROUPS}
    for label in AGE_GROUPS:
        spellings[label[4:]] = label
        spellings[label[4:].replace("_TO_", "_")] = label
    spellings["80+"] = "AGE_80_OR_ABOVE"
    return spellings


SEX_SPELLINGS = {
    "FEMALE": "FEMALE",
    "F": "FEMALE",
    "MALE": "MALE",
    "M": "MALE",
    "OTHER_OR_UNSPECIFIED": "OTHER_OR_UNSPECIFIED",
    "OTHER": "OTHER_OR_UNSPECIFIED",
    "UNSPECIFIED": "OTHER_OR_UNSPECIFIED",
}
SPLIT_SPELLINGS = {label.upper(): label for label in SPLITS} | {"VALIDATION": "val"}


def body_part(value: str) -> str:
    """'Head or neck' -> 'head_or_neck' (the release's column suffix); any other non-empty text is kept."""
    return value.strip().lower().replace(" ", "_").replace("-", "_")


@dataclasses.dataclass(frozen=True)
class SearchFilters:
    """What a search is restricted to; every given value is OR-ed within a field, fields are AND-ed.

    Values are normalised on creation ('fst5' -> 'FST5', '30-39' -> 'AGE_30_TO_39'); an unknown
    enumerated value raises `ScinSearchError` listing the valid ones."""

    fitzpatrick: tuple[str, ...] = ()  # self-reported Fitzpatrick type, FST1-6 or NONE_IDENTIFIED
    dermatologist_fitzpatrick: tuple[str, ...] = ()  # dermatologists' (median) Fitzpatrick type
    monk_min: int | None = None  # Monk skin tone, US annotators' label, 1-10
    monk_max: int | None = None
    age_groups: tuple[str, ...] = ()
    sexes: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()  # any of the case's dermatologist labels
    splits: tuple[str, ...] = ()
    gradable_only: bool = False  # dermatologists found the image quality sufficient

    def __post_init__(self):
        normalised = {
            "fitzpatrick": tuple(
                pick(v, SELF_FITZPATRICK, "Fitzpatrick skin type", fitzpatrick_spellings(SELF_FITZPATRICK))
                for v in as_tuple(self.fitzpatrick)
            ),
            "dermatologist_fitzpatrick": tuple(
                pick(
                    v, DERM_FITZPATRICK, "dermatologist Fitzpatrick skin type", fitzpatrick_spellings(DERM_FITZPATRICK)
                )
                for v in as_tuple(self.dermatologist_fitzpatrick)
            ),
            "age_groups": tuple(pick(v, AGE_GROUPS, "age group", age_spellings()) for v in as_tuple(self.age_groups)),
            "sexes": tuple(pick(v, SEXES, "sex at birth", SEX_SPELLINGS) for v in as_tuple(self.sexes)),
            "splits": tuple(pick(v, SPLITS, "split", SPLIT_SPELLINGS) for v in as_tuple(self.splits)),
            "body_parts": tuple(body_part(v) for v in as_tuple(self.body_parts)),
            "conditions": tuple(v.strip() for v in as_tuple_keep_commas(self.conditions)),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, tuple(dict.fromkeys(value)))
        self.check_monk()

    def check_monk(self) -> None:
        low, high = MONK_RANGE
        for name in ("monk_min", "monk_max"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ScinSearchError(
                    f"{name.replace('_', '-')} {value!r} is not a Monk skin tone: use {low} to {high}", BAD_FILTER
                )
        if self.monk_min is not None and self.monk_max is not None and self.monk_min > self.monk_max:
            raise ScinSearchError(f"monk-min {self.monk_min} is above monk-max {self.monk_max}", BAD_FILTER)

    def __bool__(self) -> bool:
        return bool(self.to_store_filter())

    def to_store_filter(self) -> Filter:
        """The store's filter: one Match per restricted field, a Range for the Monk tone."""
        must: list = [
            Match(FILTER_FIELDS[name], values)
            for name in (
                "fitzpatrick",
                "dermatologist_fitzpatrick",
                "age_groups",
                "sexes",
                "body_parts",
                "conditions",
                "splits",
            )
            if (values := getattr(self, name))
        ]
        if self.monk_min is not None or self.monk_max is not None:
            must.append(Range(FILTER_FIELDS["monk"], gte=self.monk_min, lte=self.monk_max))
        if self.gradable_only:
            must.append(Match(FILTER_FIELDS["gradable"], (True,)))
        return Filter(must=tuple(must))

    def free_text(self) -> list[tuple[str, str, str]]:
        """(what, payload field, value) for values that cannot be validated without the store."""
        return [("condition", FILTER_FIELDS["conditions"], v) for v in self.conditions] + [
            ("body part", FILTER_FIELDS["body_parts"], v) for v in self.body_parts
        ]

    def to_dict(self) -> dict:
        """Only the restrictions in force, for the JSON output."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
            if value not in ((), None, False)
        }


def as_tuple_keep_commas(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """Condition names contain commas ('Acute dermatitis, NOS'): never split them; a str is one name."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    cleaned = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise ScinSearchError("empty condition filter: give a condition name", BAD_FILTER)
        cleaned.append(value)
    return tuple(cleaned)
