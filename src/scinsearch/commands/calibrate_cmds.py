"""`scinsearch calibrate`: suggestion thresholds, the nothing-alike cut and the gradability probe of a collection."""

from __future__ import annotations

import json

import click

from scinsearch.commands.options import file_option, make_settings, store_options
from scinsearch.errors import ScinSearchError
from scinsearch.helpers import write_text_atomically
from scinsearch.rules import MAX_TOP_K
from scinsearch.suggest import NEIGHBOURS


@click.command()
@store_options
@click.option(
    "--target-precision",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.80,
    show_default=True,
    help="When a suggestion is made, its top condition must be among the case's dermatologist labels at "
    "least this often (on the train split, leave-case-out); the thresholds with the most suggestions that "
    "reach it are chosen. When none reach it, suggestions are recorded as off (every answer abstains) and the "
    "rest is still calibrated, with a warning.",
)
@click.option(
    "--k",
    type=click.IntRange(1, MAX_TOP_K),
    default=NEIGHBOURS,
    show_default=True,
    help="Neighbouring cases every suggestion is drawn from, recorded with the collection: search, the "
    "service and evaluate then draw suggestions from this many cases, whatever number they list.",
)
@click.option(
    "--nothing-alike-percentile",
    type=click.FloatRange(0.0, 100.0, min_open=True, max_open=True),
    default=5.0,
    show_default=True,
    help="Flag a photo as unlike every case when its best similarity is below this percentile of the train "
    "images' similarity to their most similar other case.",
)
@file_option("--out", help="Also write the calibration record to this JSON file.")
@click.option("--dry-run", is_flag=True, help="Compute and print, but record nothing in the collection.")
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 1, nothing recorded) when no suggestion thresholds reach the target precision, instead of "
    "recording suggestions as off.",
)
def calibrate(target_precision, k, nothing_alike_percentile, out, dry_run, strict, **options):
    """Derive the collection's suggestion thresholds, nothing-alike cut and gradability probe from its train split.

    The result is recorded with the collection; search, the service and evaluate then use it.

    \b
    scinsearch calibrate --collection scin_dermatology --target-precision 0.8
    scinsearch calibrate --target-precision 0.9 --dry-run
    """
    from scinsearch.calibration.calibrate import calibrate_collection

    settings = make_settings(**options)
    result = calibrate_collection(
        settings, target_precision, k, nothing_alike_percentile, write=not dry_run, progress=True, strict=strict
    )
    if out is not None:
        try:
            write_text_atomically(out, json.dumps(result.calibration.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise ScinSearchError(f"cannot write {out}: {exc.strerror or exc}") from None
    for line in result.summary_lines(settings.collection):
        click.echo(line)
    if result.warning:
        click.echo(result.warning, err=True)


COMMANDS = [calibrate]
