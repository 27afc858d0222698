"""Turn HTTP inputs (query parameters and form fields, all text) into search arguments.

Filters can come as query parameters or as form fields, repeated or comma-separated; the search
API's `SearchFilters` does the validation, so the service and the CLI accept exactly the same values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException

from scinsearch import rules
from scinsearch.errors import BAD_FILTER, ScinSearchError
from scinsearch.schema import AGE_GROUPS, BODY_PARTS, MONK_RANGE, SELF_FITZPATRICK, SEXES
from scinsearch.search_filters import SearchFilters

SCIN_LICENCE = (
    "Images and labels: the SCIN dataset (Skin Condition Image Network), Google Research and Stanford "
    "Medicine, used under the SCIN Data Use License "
    "(https://github.com/google-research-datasets/scin). Shown unmodified, except resized thumbnails. "
    "Any attempt to re-identify or re-link the people pictured is forbidden. For health education "
    "and research; images may be sensitive or graphic."
)

INT_FILTERS = {"monk_min", "monk_max"}
BOOL_FILTERS = {"gradable_only"}
FILTER_NAMES = tuple(field.name for field in dataclasses.fields(SearchFilters))
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}

# What the page offers; the API accepts every spelling SearchFilters does.
FILTER_CHOICES = {
    "fitzpatrick": list(SELF_FITZPATRICK),
    "body_parts": list(BODY_PARTS),
    "age_groups": list(AGE_GROUPS),
    "sexes": list(SEXES),
}


def one_value(name: str, values: Sequence[str]) -> str:
    if len(values) > 1:
        raise HTTPException(400, f"{name} given {len(values)} times: give it once")
    return values[0].strip()


def parse_int(name: str, values: Sequence[str]) -> int | None:
    text = one_value(name, values)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, not {text[:40]!r}") from None


def parse_bool(name: str, values: Sequence[str]) -> bool:
    text = one_value(name, values).lower()
    if text not in TRUE | FALSE:
        raise HTTPException(400, f"{name} must be true or false, not {text[:40]!r}")
    return text in TRUE


def parse_float(name: str, values: Sequence[str]) -> float | None:
    text = one_value(name, values)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number, not {text[:40]!r}") from None
    if not math.isfinite(value):
        raise HTTPException(400, f"{name} must be a finite number")
    return value


def build_filters(values: Mapping[str, Sequence[str]]) -> SearchFilters | None:
    """SearchFilters from text values; None when no filter was given; 400 with SearchFilters' reason."""
    arguments: dict[str, Any] = {}
    for name in FILTER_NAMES:
        given = [v for v in values.get(name, ()) if v.strip()]
        if not given:
            continue
        if name in INT_FILTERS:
            arguments[name] = parse_int(name, given)
        elif name in BOOL_FILTERS:
            arguments[name] = parse_bool(name, given)
        else:
            arguments[name] = tuple(given)
    if not arguments:
        return None
    try:
        return SearchFilters(**arguments)
    except ScinSearchError as exc:
        raise ScinSearchError(str(exc), BAD_FILTER) from None
    except (TypeError, ValueError) as exc:
        raise ScinSearchError(f"bad filter: {exc}", BAD_FILTER) from None


@dataclasses.dataclass
class SearchOptions:
    """The non-filter knobs of a search."""

    top_k: int = rules.DEFAULT_TOP_K
    min_score: float | None = None
    per_case: bool = True


def build_options(values: Mapping[str, Sequence[str]], max_top_k: int) -> SearchOptions:
    """top_k (1..max_top_k), min_score (-1..1), per_case, from text values with a 400 for bad ones."""
    options = SearchOptions()
    if values.get("top_k"):
        options.top_k = checked_top_k(parse_int("top_k", values["top_k"]), max_top_k)
    if values.get("min_score"):
        options.min_score = parse_float("min_score", values["min_score"])
        if options.min_score is not None and not -1.0 <= options.min_score <= 1.0:
            raise HTTPException(400, f"min_score must be a cosine similarity from -1 to 1, not {options.min_score}")
    if values.get("per_case"):
        options.per_case = parse_bool("per_case", values["per_case"])
    return options


def checked_top_k(top_k: int | None, max_top_k: int) -> int:
    """`top_k`, or the default when not given; a 400 outside 1..max_top_k (the one check of every route)."""
    if top_k is None:
        return rules.DEFAULT_TOP_K
    if not 1 <= top_k <= max_top_k:
        raise HTTPException(400, f"top_k must be from 1 to {max_top_k}, not {top_k}")
    return top_k


def merged(*sources: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Combine query parameters and form fields; a later source wins for a name both give."""
    combined: dict[str, list[str]] = {}
    for source in sources:
        for name, values in source.items():
            combined[name] = list(values)
    return combined


def image_urls(image_id: str) -> dict[str, str]:
    path = f"/images/{quote(str(image_id), safe='')}"
    return {"image_url": path, "thumbnail_url": f"{path}?size=thumb"}


def with_image_urls(item: Any) -> Any:
    """Add `image_url` and `thumbnail_url` to every dict that names an `image_id`, at any depth."""
    if isinstance(item, list):
        return [with_image_urls(value) for value in item]
    if isinstance(item, dict):
        updated = {key: with_image_urls(value) for key, value in item.items()}
        if isinstance(item.get("image_id"), str) and item["image_id"]:
            updated.update(image_urls(item["image_id"]))
        return updated
    return item


def filter_parameters() -> list[dict]:
    """OpenAPI descriptions of the filter query parameters (the same names work as form fields)."""
    docs = {
        "fitzpatrick": "Self-reported Fitzpatrick skin type: FST1-FST6, NONE_IDENTIFIED (also 5, V)",
        "dermatologist_fitzpatrick": "Dermatologists' Fitzpatrick skin type, FST1-FST6",
        "monk_min": "Lowest Monk skin tone (1-10)",
        "monk_max": "Highest Monk skin tone (1-10)",
        "age_groups": "Age group, e.g. AGE_30_TO_39 or 30-39",
        "sexes": "FEMALE, MALE, OTHER_OR_UNSPECIFIED",
        "body_parts": "Body part, e.g. arm, head_or_neck",
        "conditions": "A dermatologist label, e.g. Eczema",
        "splits": "train, val or test",
        "gradable_only": "Only images dermatologists found gradable",
    }
    parameters = []
    for name in FILTER_NAMES:
        if name in INT_FILTERS:
            schema = {"type": "integer", "minimum": MONK_RANGE[0], "maximum": MONK_RANGE[1]}
        elif name in BOOL_FILTERS:
            schema = {"type": "boolean"}
        else:
            schema = {"type": "array", "items": {"type": "string"}}
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": schema,
                "description": docs.get(name, name),
                "explode": True,
            }
        )
    return parameters
