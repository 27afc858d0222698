"""The search rules every surface shares (Python API, CLI, HTTP service, evaluation), each defined once.

Limits on a query, the zero-shot prompt, and the one-result-per-case rule. Pure Python: the CLI's
option parsing, the service and evaluation import it without loading a model or pandas.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

MAX_TEXT_CHARS = 2000  # a text query longer than this is not a description of skin (SigLIP reads 64 tokens)
VISIBLE_CATEGORIES = "LNPS"  # Unicode letters, numbers, punctuation, symbols: what a description is written in


def has_visible_text(text: str) -> bool:
    """Whether `text` holds anything to search for: not only spaces, control characters (C0/C1),
    format characters (zero-width space and joiners, direction marks) or lone combining marks."""
    return any(unicodedata.category(character)[0] in VISIBLE_CATEGORIES for character in text)


DEFAULT_TOP_K = 5  # what a health worker can compare at a glance
MAX_TOP_K = 200  # the Python API and the CLI: bounds what one query fetches (top_k x the over-fetch factor)
# The HTTP service's default cap (`ServiceSettings.max_top_k`, at most MAX_TOP_K): it answers whoever reaches
# it on the network, so it keeps each response (and the thumbnails a page then loads) small.
HTTP_MAX_TOP_K = 50
SCORE_RANGE = (-1.0, 1.0)  # a cosine similarity of normalised vectors: every min_score lies in it

# Similarity in words: (band, lowest cosine) from the closest band down, for image queries (photo, stored
# image) and for text queries, whose cosines are on a far lower scale. Hand-set: "somewhat alike" starts
# where a neighbour counts as a similar case for a suggestion (`suggest.MIN_SIMILARITY`,
# `suggest.TEXT_MIN_SIMILARITY`); the page names each band in its language and shows the number on request.
SIMILARITY_BANDS = (("very_close", 0.90), ("close", 0.80), ("somewhat", 0.60), ("distant", -1.0))
TEXT_SIMILARITY_BANDS = (("very_close", 0.20), ("close", 0.15), ("somewhat", 0.10), ("distant", -1.0))

ZERO_SHOT_PROMPT = "a photo of {condition}"  # SigLIP's training captions; search and evaluation use the same


def similarity_band(score: float, kind: str | None = "image") -> str:
    """The named band a cosine similarity falls in, on the scale of its kind of query."""
    bands = TEXT_SIMILARITY_BANDS if kind == "text" else SIMILARITY_BANDS
    return next((name for name, lowest in bands if score >= lowest), bands[-1][0])


def one_per_case(case_ids: Iterable[Sequence[str]], limit: int | None = None) -> list[int]:
    """Positions of the results to keep from a best-first list, given each result's `case_ids`.

    A search answers with cases, and a case with three photos must not cast three votes: keep the
    first (best) result of each case. SCIN files a few images under two cases; such an image lists
    both in `case_ids` and stands for all of them, so a result is dropped when it shares any case with
    a result already kept. No case is ever shown twice. The rule is not transitive: a case linked to a
    shown case only through a third case's shared image still gets its own result."""
    seen: set[str] = set()
    kept: list[int] = []
    for position, cases in enumerate(case_ids):
        if limit is not None and len(kept) >= limit:
            break
        cases = set(cases)
        if cases & seen:
            continue
        seen |= cases
        kept.append(position)
    return kept
