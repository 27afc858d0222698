"""Red flags: conditions that need a clinician soon, read from one data file (`data/red_flags.json`).

When one of them is among the dermatologist labels of the cases a suggestion is drawn from, the answer
carries `refer` (which conditions, from how many of those cases, and the reason), whether or not a
condition is suggested: a similar case that was cellulitis or melanoma is reason enough to refer, and an
abstaining suggestion must not hide it. The list is a draft that wants clinical review (its `_status`);
its spellings are SCIN's labels, matched without regard to case.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from importlib import resources

from scinsearch.suggest import normalised_labels

SOURCE = "scinsearch red-flag list (draft, wants clinical review)"


@functools.cache
def red_flags() -> dict:
    """The data file as read: {"reason", "_status", "conditions": [{"name", "why", "spellings"}]}."""
    return json.loads(resources.files("scinsearch").joinpath("data/red_flags.json").read_text(encoding="utf-8"))


@functools.cache
def flag_of_spelling() -> dict[str, dict]:
    """Lower-cased SCIN label -> its red-flag entry."""
    return {spelling.strip().lower(): entry for entry in red_flags()["conditions"] for spelling in entry["spellings"]}


def flagged(label: str) -> dict | None:
    """The red-flag entry a SCIN label falls under, or None."""
    return flag_of_spelling().get(str(label).strip().lower())


def referral(case_labels: Iterable[Mapping[str, float]]) -> dict | None:
    """`refer` for the cases a suggestion is drawn from (each case's weighted labels), or None when no
    red-flag condition is among their labels."""
    cases = list(case_labels)
    counts: dict[str, list] = {}
    flagged_cases = 0
    for labels in cases:
        hits = [(label, entry) for label in normalised_labels(labels) if (entry := flagged(label)) is not None]
        flagged_cases += bool(hits)
        for label, entry in hits:
            counts.setdefault(label, [entry, 0])[1] += 1
    if not counts:
        return None
    return {
        "conditions": [
            {"condition": label, "flag": entry["name"], "why": entry["why"], "cases": count}
            for label, (entry, count) in sorted(counts.items(), key=lambda item: (-item[1][1], item[0]))
        ],
        "cases": flagged_cases,
        "of": len(cases),
        "reason": red_flags()["reason"],
        "source": SOURCE,
    }
