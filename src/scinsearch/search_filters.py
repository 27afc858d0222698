"""What a search asks for: the filters on the payload, declared once, and the search options.

`FILTERS` is the one declaration of each filter (its name, payload field, kind, vocabulary, CLI flag and
help text); `SearchFilters`, the flags of `scinsearch search`, the HTTP service's query parameters (and
their OpenAPI text) and the kiosk page's filter menus are all derived from it, as `schema.FIELDS` drives
the store's indexes.

A typo in a filter must not silently return nothing: enumerated fields (skin type, age group, sex,
split) are checked here against the release's values, with the valid ones listed in the error. Free
text fields (condition, body part) cannot be listed up front, so the searcher checks them against the
store when a search comes back empty (see `Searcher`).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from scinsearch import rules
from scinsearch.errors import BAD_FILTER, BAD_REQUEST, ScinSearchError
from scinsearch.schema import (
    AGE_GROUPS,
    BODY_PARTS,
    DERM_FITZPATRICK,
    FILTER_FIELDS,
    MONK_RANGE,
    SELF_FITZPATRICK,
    SEXES,
    SPLITS,
)
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


# Filter kinds: how a value is given and checked.
CHOICES = "choices"  # comma-separated values from a vocabulary, in any accepted spelling
WORDS = "words"  # comma-separated free text, normalised; checked against the store when nothing matches
NAMES = "names"  # whole names that may hold commas, repeated for several; checked like WORDS
LOWEST = "lowest"  # a whole number within the vocabulary's (low, high): the lower bound of a range
HIGHEST = "highest"  # the upper bound of the same range
FLAG = "flag"  # on or off
LISTS = (CHOICES, WORDS, NAMES)


@dataclasses.dataclass(frozen=True)
class FilterSpec:
    """One filter, declared once: every surface derives its part from this."""

    name: str  # the SearchFilters field, the HTTP query parameter and form field, the JSON key
    field: str  # the payload field it restricts (declared in `schema`)
    kind: str  # CHOICES, WORDS, NAMES, LOWEST, HIGHEST or FLAG
    flag: str  # the option of `scinsearch search`
    help: str  # the CLI's --help and the OpenAPI description
    what: str  # what a value is, in error messages
    vocabulary: tuple = ()  # CHOICES: the valid values; WORDS: the values offered; LOWEST/HIGHEST: (low, high)
    spellings: dict[str, str] | None = None  # CHOICES: every accepted spelling -> its canonical value
    normalise: Callable[[str], str] = str.strip  # WORDS and NAMES: one value's canonical form
    menu: str | None = None  # the kiosk page offers it as a menu; the message-key prefix of its values' words
    service_default: Any = None  # the HTTP service's value when a request does not give one (None: `default`)

    @property
    def default(self) -> Any:
        return False if self.kind == FLAG else None if self.kind in (LOWEST, HIGHEST) else ()

    def parse(self, value: Any) -> Any:
        """The canonical value, or a one-line `ScinSearchError` (code `bad_filter`) saying what is valid."""
        if self.kind == FLAG:
            return bool(value)
        if self.kind in (LOWEST, HIGHEST):
            return self.whole_number(value)
        if self.kind == CHOICES:
            values = (pick(v, self.vocabulary, self.what, self.spellings or {}) for v in as_tuple(value))
        elif self.kind == NAMES:
            values = (self.normalise(v) for v in as_tuple_keep_commas(value))
        else:
            values = (self.normalise(v) for v in as_tuple(value))
        return tuple(dict.fromkeys(values))

    def whole_number(self, value: Any) -> int | None:
        low, high = self.vocabulary
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ScinSearchError(f"{self.option} {value!r} is not a {self.what}: use {low} to {high}", BAD_FILTER)
        return value

    @property
    def option(self) -> str:
        """The name in messages: 'monk-min'."""
        return self.name.replace("_", "-")


def monk_help(bound: str) -> str:
    return f"{bound} Monk skin tone (US annotators' label, {MONK_RANGE[0]}-{MONK_RANGE[1]})."


LABELLED_ONLY = "labelled_only"  # the filter a suggestion's neighbours always have (`Searcher.suggestion_pool`)

FILTERS: tuple[FilterSpec, ...] = (
    FilterSpec(
        "fitzpatrick",
        FILTER_FIELDS["fitzpatrick"],
        CHOICES,
        "--fitzpatrick",
        "Self-reported Fitzpatrick skin type(s), comma-separated: FST1..FST6, NONE_IDENTIFIED (5 or V work too).",
        "Fitzpatrick skin type",
        SELF_FITZPATRICK,
        fitzpatrick_spellings(SELF_FITZPATRICK),
        menu="fitzpatrick",
    ),
    FilterSpec(
        "dermatologist_fitzpatrick",
        FILTER_FIELDS["dermatologist_fitzpatrick"],
        CHOICES,
        "--derm-fitzpatrick",
        "Dermatologists' (median) Fitzpatrick skin type(s), comma-separated: FST1..FST6.",
        "dermatologist Fitzpatrick skin type",
        DERM_FITZPATRICK,
        fitzpatrick_spellings(DERM_FITZPATRICK),
    ),
    FilterSpec(
        "monk_min", FILTER_FIELDS["monk"], LOWEST, "--monk-min", monk_help("Lowest"), "Monk skin tone", MONK_RANGE
    ),
    FilterSpec(
        "monk_max", FILTER_FIELDS["monk"], HIGHEST, "--monk-max", monk_help("Highest"), "Monk skin tone", MONK_RANGE
    ),
    FilterSpec(
        "age_groups",
        FILTER_FIELDS["age_groups"],
        CHOICES,
        "--age-group",
        "Age group(s), comma-separated: AGE_18_TO_29 ... AGE_80_OR_ABOVE, AGE_UNKNOWN (30-39 works too).",
        "age group",
        AGE_GROUPS,
        age_spellings(),
        menu="age",
    ),
    FilterSpec(
        "sexes",
        FILTER_FIELDS["sexes"],
        CHOICES,
        "--sex",
        "Sex at birth, comma-separated: FEMALE, MALE, OTHER_OR_UNSPECIFIED.",
        "sex at birth",
        SEXES,
        SEX_SPELLINGS,
    ),
    FilterSpec(
        "body_parts",
        FILTER_FIELDS["body_parts"],
        WORDS,
        "--body-part",
        "Body part(s), comma-separated: arm, leg, palm, head_or_neck, torso_front, ...",
        "body part",
        BODY_PARTS,
        normalise=body_part,
        menu="body_part",
    ),
    FilterSpec(
        "conditions",
        FILTER_FIELDS["conditions"],
        NAMES,
        "--condition",
        "A dermatologist label the case must carry, e.g. Eczema; repeat for several (names contain commas).",
        "condition",
    ),
    FilterSpec(
        "splits",
        FILTER_FIELDS["splits"],
        CHOICES,
        "--split",
        "train, val and/or test, comma-separated (cases split 70/15/15).",
        "split",
        SPLITS,
        SPLIT_SPELLINGS,
    ),
    FilterSpec(
        LABELLED_ONLY,
        FILTER_FIELDS["labelled"],
        FLAG,
        "--labelled-only",
        "Only cases with a dermatologist label. The HTTP service and its kiosk page default to true (only "
        "labelled cases are shown as evidence; give labelled_only=false for research use); the CLI and the "
        "Python API default to false (every case).",
        "labelled",
        service_default=True,
    ),
    FilterSpec(
        "gradable_only",
        FILTER_FIELDS["gradable"],
        FLAG,
        "--gradable-only",
        "Only images whose quality dermatologists found sufficient for a diagnosis.",
        "gradable",
    ),
)
BY_FILTER_NAME = {spec.name: spec for spec in FILTERS}
PAGE_MENUS = tuple(spec for spec in FILTERS if spec.menu)


class FilterMethods:
    """The behaviour of `SearchFilters`, whose fields are the names in `FILTERS`."""

    def __post_init__(self):
        for spec in FILTERS:
            object.__setattr__(self, spec.name, spec.parse(getattr(self, spec.name)))
        for low, high in self.bounds().values():
            lowest, highest = (getattr(self, spec.name) if spec else None for spec in (low, high))
            if lowest is not None and highest is not None and lowest > highest:
                raise ScinSearchError(f"{low.option} {lowest} is above {high.option} {highest}", BAD_FILTER)

    @staticmethod
    def bounds() -> dict[str, list]:
        """payload field -> [its LOWEST spec, its HIGHEST spec] (either may be None)."""
        pairs: dict[str, list] = {}
        for spec in FILTERS:
            if spec.kind in (LOWEST, HIGHEST):
                pairs.setdefault(spec.field, [None, None])[spec.kind == HIGHEST] = spec
        return pairs

    def __bool__(self) -> bool:
        return bool(self.to_store_filter())

    def to_store_filter(self) -> Filter:
        """The store's filter: a Match per restricted list, a Range per bounded field, a Match per flag."""
        must: list = [
            Match(spec.field, values) for spec in FILTERS if spec.kind in LISTS and (values := getattr(self, spec.name))
        ]
        for field, (low, high) in self.bounds().items():
            gte = getattr(self, low.name) if low else None
            lte = getattr(self, high.name) if high else None
            if gte is not None or lte is not None:
                must.append(Range(field, gte=gte, lte=lte))
        must += [Match(spec.field, (True,)) for spec in FILTERS if spec.kind == FLAG and getattr(self, spec.name)]
        return Filter(must=tuple(must))

    def free_text(self) -> list[tuple[str, str, str]]:
        """(what, payload field, value) for values that cannot be validated without the store (names first)."""
        return [
            (spec.what, spec.field, value)
            for kind in (NAMES, WORDS)
            for spec in FILTERS
            if spec.kind == kind
            for value in getattr(self, spec.name)
        ]

    def to_dict(self) -> dict:
        """Only the restrictions in force, for the JSON output."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
            if value not in ((), None, False)
        }


SearchFilters = dataclasses.make_dataclass(
    "SearchFilters",
    [(spec.name, Any, dataclasses.field(default=spec.default)) for spec in FILTERS],
    bases=(FilterMethods,),
    frozen=True,
)
SearchFilters.__module__ = __name__
SearchFilters.__doc__ = """What a search is restricted to, one field per entry of `FILTERS`; every given value
is OR-ed within a field, fields are AND-ed.

Values are normalised on creation ('fst5' -> 'FST5', '30-39' -> 'AGE_30_TO_39'); an unknown enumerated
value raises `ScinSearchError` (code `bad_filter`) listing the valid ones."""


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """The knobs of a search other than its filters, checked here once for the Python API, the CLI and
    the HTTP service."""

    top_k: int | None = rules.DEFAULT_TOP_K  # results wanted (None: the default)
    min_score: float | None = None  # leave out results below this cosine similarity
    per_case: bool = True  # one result per case (its best image); False: one per image
    max_top_k: int = rules.MAX_TOP_K  # the cap in force (the HTTP service's is lower), never above MAX_TOP_K

    def __post_init__(self):
        top_k = rules.DEFAULT_TOP_K if self.top_k is None else self.top_k
        limit = min(self.max_top_k, rules.MAX_TOP_K)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= limit:
            raise ScinSearchError(f"top_k must be from 1 to {limit}, not {top_k!r}", BAD_REQUEST)
        low, high = rules.SCORE_RANGE
        score = self.min_score
        if score is not None and (
            isinstance(score, bool) or not isinstance(score, numbers.Real) or not low <= score <= high
        ):
            raise ScinSearchError(
                f"min_score must be a cosine similarity from {low:g} to {high:g}, not {score}", BAD_REQUEST
            )
        object.__setattr__(self, "top_k", top_k)
        object.__setattr__(self, "min_score", None if score is None else float(score))
        object.__setattr__(self, "per_case", bool(self.per_case))

    def to_dict(self) -> dict:
        return {"top_k": self.top_k, "min_score": self.min_score, "per_case": self.per_case}


TOP_K_HELP = "How many similar cases to return (images, with one result per image)."
LOWEST_SCORE, HIGHEST_SCORE = rules.SCORE_RANGE
MIN_SCORE_HELP = f"Leave out results below this cosine similarity ({LOWEST_SCORE:g} to {HIGHEST_SCORE:g})."
