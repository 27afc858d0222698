"""Plain-language names for SCIN's condition labels, read from one data file (`data/glossary.json`).

Keyed by the label as SCIN spells it, with a name per language (drafts that want review: its `_status`).
The kiosk page gets it from GET /filters and shows the name in its language, English when there is none,
and always the raw label beside it; a label without an entry is shown as it is.
"""

from __future__ import annotations

import functools
import json
from importlib import resources


@functools.cache
def glossary() -> dict[str, dict[str, str]]:
    """SCIN label -> {language code -> plain name}."""
    data = json.loads(resources.files("scinsearch").joinpath("data/glossary.json").read_text(encoding="utf-8"))
    return data["conditions"]


def plain_name(label: str, language: str = "en") -> str | None:
    """The plain name of a SCIN label in a language (English when that language has none), or None."""
    names = glossary().get(label) or {}
    return names.get(language) or names.get("en")
