"""`scinsearch download` and `prepare`: get the public SCIN release, and write the flat metadata table."""

from __future__ import annotations

import click

from scinsearch.commands.options import IncompleteRun, file_option, folder_option, setting_option
from scinsearch.errors import ScinSearchError
from scinsearch.helpers import summarised

# Same as scinsearch.download.DEFAULT_BASE_URL (a test checks): not imported, so that `scinsearch --help`
# does not pay for importing httpx and pandas.
DEFAULT_BASE_URL = "https://storage.googleapis.com/dx-scin-public-data/"


@click.command()
@folder_option(
    "--to",
    "to",
    required=True,
    envvar="SCINSEARCH_SCIN_DIR",
    help="Folder to download into; the bucket's dataset/ is mirrored there.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Only this many cases (the same subset every time), for a quick start. CSVs are always whole.",
)
@setting_option(
    "--base-url", default=DEFAULT_BASE_URL, help="Where the bucket is served; an object's URL is this plus its path."
)
@setting_option(
    "--connections",
    type=click.IntRange(1, 64),
    default=8,
    envvar="SCINSEARCH_DOWNLOAD_CONNECTIONS",
    help="Parallel downloads.",
)
@click.option(
    "--retries",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Attempts per object on connection errors, 5xx and corrupt bodies (never on 404/403).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def download(to, limit, base_url, connections, retries, quiet):
    """Download the SCIN CSVs and every referenced image; re-runs fetch only what is missing.

    \b
    scinsearch download --to ~/data/scin
    scinsearch download --to ~/data/scin --limit 200

    Exit code 0 when every object was had (the one image the release itself lacks is reported, not
    counted), 1 otherwise, with each missing object and why.
    """
    from scinsearch.download import RetryPolicy, download_release

    try:
        summary = download_release(
            to,
            base_url=base_url,
            limit=limit,
            connections=connections,
            progress=not quiet,
            retry=RetryPolicy(attempts=retries),
        )
    except ScinSearchError as exc:
        raise click.ClickException(str(exc)) from None
    for line in summary.lines():
        click.echo(line)
    if not summary.complete:
        raise IncompleteRun(f"download incomplete: {len(summary.missing)} object(s) could not be had")


@click.command()
@folder_option(
    "--scin-dir",
    required=True,
    envvar="SCINSEARCH_SCIN_DIR",
    help="The downloaded release: the folder holding dataset/.",
)
@file_option("--out", required=True, help="The CSV to write (e.g. real_labeled_metadata.csv).")
@click.option("--labelled-only", is_flag=True, help="Only images of cases with a dermatologist condition label.")
@click.option("--include-missing", is_flag=True, help="Also rows for images not on disk (default: left out).")
def prepare(scin_dir, out, labelled_only, include_missing):
    """Write the flat one-row-per-image metadata CSV, with the same parsing and split as `embed`.

    \b
    scinsearch prepare --scin-dir ~/data/scin --out real_labeled_metadata.csv
    scinsearch embed --metadata real_labeled_metadata.csv --images-dir ~/data/scin/dataset/images
    """
    from scinsearch.prepare import prepare_metadata

    try:
        summary = prepare_metadata(scin_dir, out, labelled_only=labelled_only, include_missing=include_missing)
    except ScinSearchError as exc:
        raise click.ClickException(str(exc)) from None
    for warning in summarised(summary.warnings):
        click.echo(f"warning: {warning}", err=True)
    for line in summary.lines():
        click.echo(line)


COMMANDS = [download, prepare]
