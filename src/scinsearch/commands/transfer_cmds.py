"""`scinsearch export` and `import`: move a collection without embedding it again (scinsearch.transfer)."""

from __future__ import annotations

from pathlib import Path

import click

from scinsearch.commands.options import (
    file_option,
    folder_option,
    make_settings,
    path_option,
    quiet_option,
    server_options,
    store_options,
)
from scinsearch.errors import ScinSearchError
from scinsearch.settings import Settings


@click.command(name="export")
@store_options
@path_option(
    "--from-qdrant-client-path",
    help="Read a qdrant-client folder (QdrantClient(path=...)) instead of --qdrant-path / --qdrant-url.",
)
@click.option(
    "--to-url",
    default=None,
    help="Target: a Qdrant server or cluster URL (':memory:' runs qdrant-client in-process, for trials).",
)
@click.option("--to-api-key", default=None, envvar="QDRANT_TO_API_KEY", help="API key of the --to-url server.")
@path_option("--to-qdrant-path", help="Target: qdrant-client's embedded folder, which QdrantClient(path=DIR) opens.")
@path_option("--to-edge-path", help="Target: another embedded Qdrant Edge folder (what --qdrant-path names).")
@file_option("--to-parquet", help="Target: a new Parquet file, one row per image: id, vector, every payload field.")
@click.option("--to-collection", default=None, help="Collection name in the target (default: --collection).")
@click.option(
    "--for",
    "profile",
    type=click.Choice(["kiosk-backend"]),  # transfer.kiosk_profile.PROFILES, not imported here: it loads numpy
    default=None,
    help="Write the collection as this reader needs it: kiosk-backend keeps the labelled images only, adds "
    "icd_code, features and absolute image paths, and keeps every self-similarity at most 1.0 (docs/storage.md).",
)
@folder_option(
    "--images-dir",
    help="With --for kiosk-backend: the image folder image_path is resolved against (default: the one `embed` "
    "recorded).",
)
@click.option(
    "--image-base-url",
    default=None,
    help="With --for kiosk-backend: write image_path as this URL followed by the release's relative path.",
)
@server_options
@quiet_option
def export(
    from_qdrant_client_path,
    to_url,
    to_api_key,
    to_qdrant_path,
    to_edge_path,
    to_parquet,
    to_collection,
    profile,
    images_dir,
    image_base_url,
    quiet,
    **options,
):
    """Copy a collection to a Qdrant server, a qdrant-client folder, an Edge folder or a Parquet file.

    Copies ids, vectors, every payload field and the collection record; a store target resumes an
    interrupted run; the counts and a sample of points are verified at the end.

    \b
    scinsearch export --collection scin_dermatology --to-url http://qdrant:6333
    scinsearch export --collection scin_dermatology --to-qdrant-path ./qdrant_data
    scinsearch export --collection scin_dermatology --to-parquet scin_siglip.parquet
    scinsearch export --for kiosk-backend --to-qdrant-path ./qdrant_data --images-dir /srv/scin
    """
    from scinsearch.store import open_store
    from scinsearch.transfer import copy_collection, export_parquet
    from scinsearch.transfer.kiosk_profile import profile_view

    source_settings = make_settings(**options)
    if from_qdrant_client_path:
        source_settings = source_settings.replace(qdrant_client_path=from_qdrant_client_path.expanduser())
    targets = {"--to-url": to_url, "--to-qdrant-path": to_qdrant_path, "--to-edge-path": to_edge_path}
    given = [flag for flag, value in {**targets, "--to-parquet": to_parquet}.items() if value]
    if len(given) != 1:
        raise ScinSearchError("give exactly one target: --to-url, --to-qdrant-path, --to-edge-path or --to-parquet")
    target_settings = None
    if not to_parquet:
        target_settings = target_for(source_settings, to_collection, to_url, to_api_key, to_qdrant_path, to_edge_path)
    source = open_store(source_settings)
    try:
        reader = profile_view(profile, source, images_dir, image_base_url)
        if to_parquet:
            summary = export_parquet(reader, to_parquet, progress=not quiet)
            if profile:
                reader.verify_parquet(to_parquet)
        else:
            target = open_store(target_settings)
            try:
                summary = copy_collection(reader, target, progress=not quiet)
                if profile:
                    reader.verify_store(target)
            finally:
                target.close()
            summary.target = f"{target_settings.store_description()}, collection {target_settings.collection!r}"
    finally:
        source.close()
    summary.source = f"{source_settings.store_description()}, collection {source_settings.collection!r}"
    for line in summary.lines() + (reader.lines() if profile else []):
        click.echo(line)


def target_for(source: Settings, collection, url, api_key, client_path, edge_path) -> Settings:
    """The target store's settings: the source's (collection name, server options, timeout), moved."""
    if url == ":memory:":
        place = {"qdrant_location": ":memory:"}
    elif url:
        place = {"qdrant_url": url, "qdrant_api_key": api_key}
    elif client_path:
        place = {"qdrant_client_path": client_path.expanduser()}
    else:
        place = {"qdrant_path": edge_path.expanduser()}
    target = source.moved(**place).replace(collection=collection or source.collection)
    if same_place(source, target):
        raise ScinSearchError(f"the source and the target are the same collection {target.collection!r}")
    return target


def same_place(a: Settings, b: Settings) -> bool:
    """Both settings name one collection in one store (':memory:' is a new store each time it opens)."""
    if a.collection != b.collection or a.qdrant_location or b.qdrant_location:
        return False
    if a.qdrant_url or b.qdrant_url:
        return a.qdrant_url == b.qdrant_url
    if a.qdrant_client_path or b.qdrant_client_path:
        return bool(a.qdrant_client_path and b.qdrant_client_path) and (
            Path(a.qdrant_client_path).resolve() == Path(b.qdrant_client_path).resolve()
        )
    return Path(a.qdrant_path).resolve() == Path(b.qdrant_path).resolve()


@click.command(name="import")
@file_option("--from-parquet", required=True, help="A Parquet file written by `scinsearch export --to-parquet`.")
@folder_option(
    "--images-dir",
    help="The folder holding the images on this machine: every image path must stay inside it (links "
    "resolved), and `serve` shows images from it. The file's own image folder is never used.",
)
@store_options
@server_options
@quiet_option
def import_parquet_command(from_parquet, images_dir, quiet, **options):
    """Load a Parquet export into a store (the usual --qdrant-path / --qdrant-url choose it); resumes; verifies.

    The file's collection record must match the target collection's (model, vector size, preprocessing);
    a missing collection is made with it. Image paths that leave the images folder, and vectors that are
    not unit vectors, are refused before anything is written; a failed verification takes back what the
    run wrote.

    \b
    scinsearch import --from-parquet scin_siglip.parquet --collection scin_dermatology \\
        --images-dir ~/data/scin/dataset/images
    """
    from scinsearch.store import open_store
    from scinsearch.transfer import import_parquet

    settings = make_settings(**options)
    store = open_store(settings)
    try:
        summary = import_parquet(from_parquet, store, progress=not quiet, images_dir=images_dir)
    finally:
        store.close()
    summary.target = f"{settings.store_description()}, collection {settings.collection!r}"
    for line in summary.lines():
        click.echo(line)


COMMANDS = [export, import_parquet_command]
