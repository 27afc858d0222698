"""`scinsearch search`: similar SCIN cases for a photo, a stored image or a description.

\b
scinsearch search --image photo.jpg --top-k 5
scinsearch search --text "itchy red ring on the arm" --fitzpatrick FST5,FST6
scinsearch search --like <image_id> --exclude-same-case
scinsearch search --image photo.jpg --json
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import click

from scinsearch.commands.options import (
    adapter_option,
    file_option,
    make_settings,
    model_options,
    model_was_given,
    open_searcher,
    store_options,
)
from scinsearch.errors import ScinSearchError
from scinsearch.rules import DEFAULT_TOP_K, MAX_TOP_K
from scinsearch.search_filters import (
    FILTERS,
    FLAG,
    HIGHEST,
    LOWEST,
    MIN_SCORE_HELP,
    NAMES,
    TOP_K_HELP,
    FilterSpec,
    SearchFilters,
    SearchOptions,
)


def filter_option(spec: FilterSpec):
    """The click option of one registered filter; its value arrives under the filter's own name."""
    if spec.kind == FLAG:
        return click.option(spec.flag, spec.name, is_flag=True, help=spec.help)
    if spec.kind in (LOWEST, HIGHEST):
        return click.option(spec.flag, spec.name, type=int, default=None, help=spec.help)
    if spec.kind == NAMES:
        return click.option(spec.flag, spec.name, multiple=True, metavar="NAME", help=spec.help)
    return click.option(spec.flag, spec.name, default=None, metavar="LIST", help=spec.help)


def with_filter_options(function):
    """Every filter of `search_filters.FILTERS`, in its order."""
    for spec in reversed(FILTERS):
        function = filter_option(spec)(function)
    return function


def checked_option(context, parameter, value):
    """A usage error (exit 2) for a value `SearchOptions`, the one check of every surface, refuses."""
    try:
        SearchOptions(**{parameter.name: value})
    except ScinSearchError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command()
@file_option("--image", "image", help="Query photo (JPEG, PNG, ...); read in memory, never stored.")
@click.option("--text", default=None, help="Describe what the skin looks like (English).")
@click.option("--like", "like", default=None, metavar="IMAGE_ID", help="Find cases like a stored image.")
@click.option(
    "--top-k",
    type=int,
    default=DEFAULT_TOP_K,
    show_default=True,
    callback=checked_option,
    help=f"{TOP_K_HELP} At most {MAX_TOP_K}.",
)
@click.option("--min-score", type=float, default=None, callback=checked_option, help=MIN_SCORE_HELP)
@click.option(
    "--exclude-same-case/--include-same-case",
    default=True,
    show_default=True,
    help="With --like: leave out the other photos of the image's own case(s).",
)
@click.option("--all-images", is_flag=True, help="One result per image instead of one per case.")
@with_filter_options
@click.option("--zero-shot", is_flag=True, help="Also show SigLIP zero-shot scores of the condition names.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (schema in docs/search.md).")
@store_options
@model_options
@adapter_option
def search(
    image,
    text,
    like,
    top_k,
    min_score,
    exclude_same_case,
    all_images,
    zero_shot,
    as_json,
    **options,
):
    """Find SCIN cases similar to a photo, a stored image or a description (decision support, not diagnosis).

    \b
    scinsearch search --image photo.jpg --top-k 5
    scinsearch search --text "itchy red ring on the arm" --fitzpatrick FST5,FST6
    scinsearch search --like IMAGE_ID --exclude-same-case
    scinsearch search --image photo.jpg --json
    """
    given = [name for name, value in (("--image", image), ("--text", text), ("--like", like)) if value is not None]
    if len(given) != 1:
        raise ScinSearchError(
            "give exactly one of --image PATH, --text TEXT or --like IMAGE_ID"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if zero_shot and text is not None:
        raise ScinSearchError("--zero-shot scores an image: use it with --image or --like")
    if text is not None and not text.strip():
        raise ScinSearchError("empty text query: describe what the skin looks like")
    photo = read_photo(image) if image is not None else None
    filters = SearchFilters(**{spec.name: options.pop(spec.name) for spec in FILTERS})
    search_options = SearchOptions(top_k, min_score, per_case=not all_images)
    settings = make_settings(**options)
    common = dict(filters=filters, options=search_options)
    quiet_model_loading()
    searcher, store = open_searcher(settings, model_was_given())
    try:
        if photo is not None:
            result = searcher.search_image(photo, zero_shot=zero_shot, **common)
        elif text is not None:
            result = searcher.search_text(text, **common)
        else:
            result = searcher.search_like(like, exclude_same_case=exclude_same_case, zero_shot=zero_shot, **common)
    finally:
        searcher.close()
        store.close()
    click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if as_json else format_result(result))


def read_photo(path: Path) -> bytes:
    """Read the query photo into memory before the model loads, so a wrong path fails at once."""
    from scinsearch.images import ImageError, read_bytes

    try:
        return read_bytes(path.expanduser())
    except ImageError as exc:
        raise exc.user_error(f"the query image {path}") from None


def quiet_model_loading() -> None:
    """No 'Loading weights' progress bar on stderr: a search prints its result or one error line."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def format_result(result) -> str:
    """The terminal view: disclaimer, neighbour table, suggestion (or abstention), zero-shot apart."""
    lines = [f"! {result.disclaimer}", ""]
    lines += format_referral(result.refer)
    lines += format_quality(result.quality)
    lines += format_neighbours(result.results)
    lines += [""] + format_suggestions(result.suggestions)
    if result.zero_shot is not None:
        lines += ["", "SigLIP zero-shot scores of the condition names (not from the neighbours, not calibrated):"]
        lines += [f"  {probability:6.1%}  {name}" for name, probability in result.zero_shot.scores]
    return "\n".join(lines)


# The table's columns: (title, width). The condition column takes the width the terminal leaves; the
# optional columns join the row only where the condition keeps CONDITION_ROOM beside them, else their
# values go to the line under the row.
CONDITION_TITLE = "condition (dermatologist labels)"
BEFORE_CONDITION = (("#", 3), ("score", 6))
AFTER_CONDITION = (("FST s/d", 7), ("Monk", 4), ("age", 7), ("sex", 6))
OPTIONAL = (("body parts", 20), ("case id", 20))
GAP = 2
MIN_WIDTH = 80  # the narrowest terminal the table is laid out for
CONDITION_ROOM = 40
MAX_CONDITION = 72


def terminal_width() -> int:
    """The terminal's width (COLUMNS, else the terminal's own, else 80), never below MIN_WIDTH."""
    return max(shutil.get_terminal_size((MIN_WIDTH, 24)).columns, MIN_WIDTH)


def table_columns(width: int) -> list[tuple[str, int]]:
    """The columns that fit `width`, the condition's width being what the others leave (at most MAX_CONDITION)."""
    chosen = list(BEFORE_CONDITION) + [(CONDITION_TITLE, 0)] + list(AFTER_CONDITION)
    for column in OPTIONAL:
        if room_for_condition(chosen + [column], width) >= CONDITION_ROOM:
            chosen.append(column)
    room = min(room_for_condition(chosen, width), MAX_CONDITION)
    return [(title, room if title == CONDITION_TITLE else size) for title, size in chosen]


def room_for_condition(columns: list[tuple[str, int]], width: int) -> int:
    return width - sum(size for _, size in columns) - GAP * (len(columns) - 1)


def format_quality(report) -> list[str]:
    """The quality warnings in words, above the results (which stay listed: a warning hides nothing)."""
    if report is None:
        return []
    lines = []
    for check in report.warnings:
        lines += [f"Warning: {check.reason}", f"  What to do: {check.advice}"]
    if lines:
        lines.append("  The cases below can still be looked at.")
    skipped = [check.name for check in report.checks if check.verdict == "skipped"]
    if skipped:
        lines.append(f"(not checked: {', '.join(skipped)}; see --json for why)")
    return lines + [""] if lines else []


def format_neighbours(neighbours, width: int | None = None) -> list[str]:
    """The neighbour table, `width` columns wide (default: the terminal's); a long condition wraps onto
    the next lines of its column, never cut."""
    if not neighbours:
        return ["no stored image matches this query and its filters"]
    columns = table_columns(width or terminal_width())
    titles = [title for title, _ in columns]
    header = row_line([title for title, _ in columns], columns)
    lines = [header, "-" * len(header)]
    for rank, n in enumerate(neighbours, start=1):
        meta = n.metadata
        labels = ", ".join(f"{name} {weight:.0%}" for name, weight in n.weighted_labels.items()) or "(no label)"
        skin_types = "/".join(
            short(meta.get(key)).replace("FST", "")
            for key in ("fitzpatrick_skin_type", "dermatologist_fitzpatrick_skin_type")
        )
        cells = {
            "#": str(rank),
            "score": f"{n.score:.3f}",
            "FST s/d": skin_types,
            "Monk": short(meta.get("monk_skin_tone_label_us")),
            "age": age(meta.get("age_group")),
            "sex": short(meta.get("sex_at_birth")).lower(),
            "body parts": ", ".join(meta.get("body_parts") or []) or "-",
            "case id": n.case_id,
        }
        room = dict(columns)[CONDITION_TITLE]
        wrapped = textwrap.wrap(labels, room, break_on_hyphens=False) or [labels]
        lines.append(row_line([wrapped[0] if t == CONDITION_TITLE else cells[t] for t in titles], columns))
        lines += [row_line([piece if t == CONDITION_TITLE else "" for t in titles], columns) for piece in wrapped[1:]]
        lines.append(f"     image {n.image_id}: {n.image_path}")
        left_out = [(title, cells[title]) for title, _ in OPTIONAL if title not in titles]
        if left_out:
            lines.append("     " + "; ".join(f"{title}: {value}" for title, value in left_out))
        if not meta.get("gradable"):
            lines.append("     (dermatologists: image quality insufficient)")
    return lines


def row_line(cells: list[str], columns: list[tuple[str, int]]) -> str:
    return (" " * GAP).join(clip(cell, size) for cell, (_, size) in zip(cells, columns)).rstrip()


def format_referral(refer: dict | None) -> list[str]:
    """The red-flag notice (`referral`), first, whatever the suggestion says."""
    if not refer:
        return []
    flagged = ", ".join(f"{item['condition']} ({item['why']})" for item in refer["conditions"])
    return [f"!! REFER: {refer['reason']} {refer['cases']} of the {refer['of']} most similar cases: {flagged}.", ""]


def format_suggestions(suggestions) -> list[str]:
    if not suggestions.confident:
        return [f"Suggestion: {suggestions.reason}."]
    lines = [f"Conditions suggested by the similar cases' labels: {suggestions.reason}"]
    lines += [
        f"  {item.score:6.1%}  {item.condition}  (in {item.support} of {suggestions.neighbours} cases)"
        for item in suggestions.items
    ]
    return lines


def short(value) -> str:
    if value is None or value == "":
        return "-"
    return str(value).replace("NONE_IDENTIFIED", "none").replace("OTHER_OR_UNSPECIFIED", "other")


def age(value) -> str:
    """'AGE_30_TO_39' -> '30-39' to fit the table."""
    if not value:
        return "-"
    return str(value).replace("AGE_", "").replace("_TO_", "-").replace("_OR_ABOVE", "+").lower()


def clip(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


COMMANDS = [search]
