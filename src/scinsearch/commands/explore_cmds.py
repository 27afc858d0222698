"""`scinsearch explore`: the collection's record, coverage, 2-D map and soundness checks as one offline
HTML file (the same view `scinsearch serve` shows at /explore)."""

from __future__ import annotations

from pathlib import Path

import click

from scinsearch.commands.options import file_option, folder_option, make_settings, store_options
from scinsearch.explore.projection import MAX_MAP_POINTS, METHODS


@click.command()
@store_options
@file_option(
    "--out",
    required=True,
    help="The HTML file to write: one self-contained page (data, script and style inline; nothing fetched).",
)
@click.option(
    "--map",
    "method",
    type=click.Choice(METHODS),
    default=None,
    help="How the vectors are laid out in 2-D (default: the map cached in the collection's record, else PCA; "
    "umap needs `pip install 'scinsearch[umap]'`).",
)
@click.option(
    "--max-points",
    type=click.IntRange(min=2),
    default=MAX_MAP_POINTS,
    show_default=True,
    help="Above this many images the map, neighbours and checks use a stratified sample (by condition).",
)
@folder_option(
    "--images-dir",
    exists=True,
    envvar="SCINSEARCH_IMAGES_DIR",
    help="Folder of the images, for the thumbnails (default: the one `embed` recorded).",
)
@click.option(
    "--thumbnails/--no-thumbnails",
    default=True,
    show_default=True,
    help="Embed a small thumbnail of every drawn image (about 3 KB each).",
)
def explore(out, method, max_points, images_dir, thumbnails, **options):
    """Write the collection's record, coverage, 2-D map and soundness checks as one offline HTML file."""
    from scinsearch.explore import explore_store, write_report
    from scinsearch.store import open_store, require_collection

    settings = make_settings(**options)
    store = open_store(settings)
    try:
        root = images_dir or require_collection(store).extra.get("image_root")
        if thumbnails and root and not Path(root).is_dir():
            click.echo(f"warning: the images folder {root} is not there: the report has no thumbnails", err=True)
            root = None
        document = explore_store(store, method, max_points, Path(root) if thumbnails and root else None)
    finally:
        store.close()
    write_report(document, out)
    shown = document["map"]
    counts = ", ".join(f"{check['id'].replace('_', ' ')} {check['count']}" for check in document["checks"])
    click.echo(
        f"wrote {out}: {shown['points']} of {shown['total']} images on the map ({shown['method']}"
        f"{', cached' if shown['cached'] else ''}), {len(document.get('thumbs', {}))} thumbnails; checks: {counts}"
    )


COMMANDS = [explore]
