"""Turn HTTP inputs (query parameters and form fields, all text) into search arguments.

Filters can come as query parameters or as form fields, repeated or comma-separated; the search
API's `SearchFilters` does the validation, so the service and the CLI accept exactly the same values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException

from scinsearch.errors import BAD_FILTER, ScinSearchError
from scinsearch.search_filters import (
    CHOICES,
    FILTERS,
    FLAG,
    HIGHEST,
    LOWEST,
    PAGE_MENUS,
    WORDS,
    FilterSpec,
    SearchFilters,
    SearchOptions,
)

SCIN_LICENCE = (
    "Images and labels: the SCIN dataset (Skin Condition Image Network), Google Research and Stanford "
    "Medicine, used under the SCIN Data Use License "
    "(https://github.com/google-research-datasets/scin). Shown unmodified, except resized thumbnails. "
    "Any attempt to re-identify or re-link the people pictured is forbidden. For health education "
    "and research; images may be sensitive or graphic."
)

TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


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
    """SearchFilters from text values (each filter of the registry read as its kind says, the service's
    defaults for those not given: `FilterSpec.service_default`); None when nothing restricts the search;
    a 400 with SearchFilters' reason."""
    arguments: dict[str, Any] = {}
    for spec in FILTERS:
        given = [v for v in values.get(spec.name, ()) if v.strip()]
        if not given:
            if spec.service_default is not None:
                arguments[spec.name] = spec.service_default
            continue
        if spec.kind in (LOWEST, HIGHEST):
            arguments[spec.name] = parse_int(spec.name, given)
        elif spec.kind == FLAG:
            arguments[spec.name] = parse_bool(spec.name, given)
        else:
            arguments[spec.name] = tuple(given)
    if not any(arguments.values()):
        return None
    try:
        return SearchFilters(**arguments)
    except ScinSearchError as exc:
        raise ScinSearchError(str(exc), BAD_FILTER) from None
    except (TypeError, ValueError) as exc:
        raise ScinSearchError(f"bad filter: {exc}", BAD_FILTER) from None


def build_options(values: Mapping[str, Sequence[str]], max_top_k: int) -> SearchOptions:
    """top_k, min_score and per_case from text values: a 400 for text that is not a number or a boolean,
    and `SearchOptions`' one check (400) for the rest."""
    top_k = parse_int("top_k", values["top_k"]) if values.get("top_k") else None
    min_score = parse_float("min_score", values["min_score"]) if values.get("min_score") else None
    per_case = parse_bool("per_case", values["per_case"]) if values.get("per_case") else True
    return SearchOptions(top_k, min_score, per_case, max_top_k=max_top_k)


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


def parameter_schema(spec: FilterSpec) -> dict:
    if spec.kind in (LOWEST, HIGHEST):
        return {"type": "integer", "minimum": spec.vocabulary[0], "maximum": spec.vocabulary[1]}
    if spec.kind == FLAG:
        return {"type": "boolean", "default": bool(spec.service_default)}
    return {"type": "array", "items": {"type": "string"}}


def filter_parameters() -> list[dict]:
    """OpenAPI descriptions of the filter query parameters (the same names work as form fields), from the
    filter registry."""
    return [
        {
            "name": spec.name,
            "in": "query",
            "required": False,
            "schema": parameter_schema(spec),
            "description": spec.help,
            "explode": True,
        }
        for spec in FILTERS
    ]


def page_menus() -> list[dict]:
    """The filters the kiosk page offers as menus: name, the message-key prefix of their values, values."""
    return [{"name": spec.name, "labels": spec.menu, "values": list(spec.vocabulary)} for spec in PAGE_MENUS]


def filter_choices() -> dict[str, list[str]]:
    """Every filter's listed values (the API accepts every spelling SearchFilters does)."""
    return {spec.name: list(spec.vocabulary) for spec in FILTERS if spec.kind in (CHOICES, WORDS)}


def model_label(model: str) -> str:
    """The model as /ready shows it: a hub id as it is, a local folder by its name only (its path says
    how the machine is laid out, which is nobody's business over HTTP)."""
    return Path(model).name if Path(model).is_absolute() or Path(model).exists() else model
