"""`scinsearch bundle`: one folder a kiosk is set up from (scinsearch.bundle), and its check."""

from __future__ import annotations

import click

from scinsearch.commands.options import (
    folder_option,
    idle_reset_option,
    make_settings,
    model_options,
    quiet_option,
    store_options,
)
from scinsearch.errors import ScinSearchError


@click.command()
@store_options
@model_options
@folder_option("--out", help="Write the bundle into this new folder.")
@folder_option(
    "--verify",
    "verify_folder",
    help="Check this bundle against its manifest (every file's SHA-256 and size) and exit; builds nothing.",
)
@idle_reset_option(
    help="The kiosk page's idle reset, stored in the bundle's page settings (default 180; 0 = never).",
)
@quiet_option
def bundle(out, verify_folder, idle_reset_seconds, quiet, **options):
    """Build a kiosk bundle (model files, collection, calibration, page settings, manifest) or verify one.

    The model comes from a folder, or from the local Hugging Face cache for a hub id (nothing is
    downloaded). Serve it with `scinsearch serve --bundle DIR`: no network and no model cache needed.

    \b
    scinsearch bundle --out /media/usb/kiosk-bundle --collection scin_dermatology
    scinsearch bundle --verify /media/usb/kiosk-bundle
    """
    from scinsearch.bundle import build_bundle, verify_bundle
    from scinsearch.service.settings import DEFAULT_IDLE_RESET_SECONDS

    if (out is None) == (verify_folder is None):
        raise ScinSearchError("give --out DIR to build a bundle, or --verify DIR to check one")
    if verify_folder is not None:
        checked = verify_bundle(verify_folder)
        click.echo(
            f"bundle {checked.folder}: all {checked.files} files match the manifest "
            f"(collection {checked.collection!r}, model {checked.model})"
        )
        return
    page = {"idle_reset_seconds": DEFAULT_IDLE_RESET_SECONDS if idle_reset_seconds is None else idle_reset_seconds}
    for line in build_bundle(make_settings(**options), out, page, progress=not quiet):
        click.echo(line)


COMMANDS = [bundle]
