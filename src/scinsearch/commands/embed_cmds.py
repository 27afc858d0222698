"""`scinsearch embed`, `info`, `check` and `models`: build the database and look at it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import numpy as np

from scinsearch.calibration import METADATA_KEY, calibration_of
from scinsearch.commands.options import (
    IncompleteRun,
    backend_option,
    data_options,
    make_settings,
    model_options,
    path_option,
    quiet_option,
    server_options,
    setting_option,
    store_options,
)
from scinsearch.errors import ScinSearchError
from scinsearch.explore.projection import MAP_KEY
from scinsearch.helpers import summarised
from scinsearch.schema import REQUIRED_FIELDS, SPLITS


def open_embedder(settings):
    from scinsearch.embedding import Embedder

    embedder = Embedder.from_settings(settings)
    click.echo(f"model: {embedder.describe()}", err=True)
    return embedder


@click.command()
@data_options
@store_options
@model_options
@backend_option
@server_options
@setting_option(
    "--alias",
    help="Server only: embed into a new collection ALIAS_v<n>, then point the alias ALIAS at it once the run "
    "has finished and been verified (readers of ALIAS never see a half-built collection).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images per model call (default: 16 on the CPU, 256 on a GPU).",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Embed only the first N images.")
@setting_option(
    "--workers",
    type=click.IntRange(min=0),
    help="Image decoding processes (default: one per core at low priority on the CPU, cores - 1 with "
    "a GPU; 0 decodes in the main process).",
)
@click.option("--recreate", is_flag=True, help="Delete the collection and start over (default: resume).")
@quiet_option
@setting_option(
    "--compile",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    help="torch.compile the image tower (--backend torch). auto = on the CPU for runs of 1000+ images "
    "(~1.4-1.6x faster after a one-off compile of 10-60 s).",
)
@path_option(
    "--cache-dir",
    envvar="SCINSEARCH_CACHE_DIR",
    help="Keep preprocessed pixels here, so embedding again (e.g. with a second model of the same "
    "input size) decodes nothing. Off by default.",
)
@click.option(
    "--exact-preprocessing",
    is_flag=True,
    help="Resize exactly as the checkpoint's processor (default: a faster path within 0.6 grey "
    "levels of it on average).",
)
@setting_option(
    "--decode-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds one image may take to decode before its worker is stopped and the image skipped "
    "(default 300; a SCIN image takes a few hundredths of a second).",
)
def embed(scin_dir, metadata, images_dir, alias, batch_size, limit, workers, recreate, quiet, **options):
    """Embed SCIN images with SigLIP into Qdrant; re-runs embed only what is missing.

    \b
    scinsearch embed --scin-dir ~/data/scin
    scinsearch embed --metadata real_labeled_metadata.csv --images-dir ~/data/scin/images
    scinsearch embed --scin-dir ~/data/scin --qdrant-url http://qdrant:6333 --alias scin_dermatology

    Images that cannot be used (missing, broken, or crashing or hanging the decoder) are skipped and
    named in the summary. Exit code 0 when every image is stored (the one image the release itself
    lacks is reported, not counted), 1 otherwise: run again after fixing them to add just those.
    """
    from scinsearch.dataset import load_dataset
    from scinsearch.decoding import DECODE_TIMEOUT
    from scinsearch.pipeline import default_batch_size, run_embed
    from scinsearch.pixel_cache import PixelCache
    from scinsearch.store import open_store

    settings = make_settings(batch_size=batch_size, workers=workers, **options)
    if alias is not None:
        settings = alias_settings(settings, alias)
    data = load_dataset(scin_dir=scin_dir, metadata=metadata, images_dir=images_dir)
    for warning in summarised(data.warnings):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"data: {len(data.records)} distinct images under {data.image_root}", err=True)
    embedder = open_embedder(settings)
    batch_size = settings.batch_size or default_batch_size(embedder.device.type)
    store = open_store(settings)
    alias_line = None
    try:
        if recreate and alias is None and settings.collection in getattr(store, "aliases", dict)():
            raise ScinSearchError(
                f"{settings.collection!r} is an alias: rebuild it with --alias {settings.collection} "
                f"(a new version, switched when finished)"
            )
        cache = PixelCache(settings.cache_dir) if settings.cache_dir else None
        run = dict(
            batch_size=batch_size,
            workers=settings.workers,
            limit=limit,
            progress=not quiet,
            cache=cache,
            decode_timeout=settings.decode_timeout or DECODE_TIMEOUT,
        )
        collection = settings.collection
        if alias is None:
            summary = run_embed(data, embedder, store, recreate=recreate, **run)
        else:
            from scinsearch.transfer.versions import embed_into_alias

            summary, collection, previous = embed_into_alias(data, embedder, store, alias, recreate=recreate, **run)
            kept = f" (was {previous}, kept until you delete it)" if previous and previous != collection else ""
            alias_line = f"alias {alias!r} -> {collection}{kept}"
        summary.store = settings.store_description() + f", collection {collection!r}"
    finally:
        store.close()
    for line in summary.lines():
        click.echo(line)
    if alias_line:
        click.echo(alias_line)
    if not summary.complete:
        raise IncompleteRun(f"embed incomplete: {len(summary.missing)} image(s) not stored (listed above)")


def alias_settings(settings, alias: str):
    """`embed --alias NAME`: a server (aliases are the server's), and NAME in place of --collection."""
    if not settings.uses_server:
        raise ScinSearchError(
            "--alias needs a Qdrant server (--qdrant-url): the embedded Qdrant Edge store has no aliases"
        )
    context = click.get_current_context()
    if context.get_parameter_source("collection") == click.core.ParameterSource.COMMANDLINE:
        if settings.collection != alias:
            raise ScinSearchError("give --alias or --collection, not both: --alias names the collection")
    return settings.replace(collection=alias)


@click.command()
@store_options
def info(**options):
    """Show a collection: model, vector size, number of points, splits."""
    from scinsearch.store import Filter, Match, open_store, require_collection
    from scinsearch.transfer.versions import version_lines

    settings = make_settings(**options)
    store = open_store(settings)
    try:
        for line in version_lines(store, settings.collection):
            click.echo(line)
        collection = require_collection(store)
        click.echo(f"collection {settings.collection!r} in {settings.store_description()}")
        click.echo(f"model: {collection.model} ({collection.dim}-d)")
        click.echo(f"preprocessing: {collection.preprocessing}")
        click.echo(f"points: {store.count()}")
        for split in SPLITS:
            click.echo(f"  {split}: {store.count(Filter(must=(Match('split', (split,)),)))}")
        for key, value in collection.extra.items():
            if key not in (METADATA_KEY, MAP_KEY):  # the calibration record and the map are long: summarised
                click.echo(f"{key}: {value}")
        if isinstance(collection.extra.get(MAP_KEY), dict):
            cached = collection.extra[MAP_KEY]
            click.echo(f"map (scinsearch explore): {cached.get('method')} of {cached.get('points')} points, cached")
        click.echo(f"calibration: {calibration_summary(collection)}")
    finally:
        store.close()


def calibration_summary(collection) -> str:
    """One line about the collection's calibration record (`scinsearch calibrate`)."""
    if METADATA_KEY not in collection.extra:
        return "none (run `scinsearch calibrate`)"
    try:
        calibration = calibration_of(collection)
    except ScinSearchError as exc:
        return f"unusable: {exc}"
    t = calibration.thresholds
    rule = (
        "suggestions OFF (not reached)"
        if calibration.suggestions_off
        else f"min_similarity {t['min_similarity']:.4f}, min_agreement {t['min_agreement']:.2f}, "
        f"min_support {t['min_support']}"
    )
    return (
        f"{calibration.created}, for {t['target_precision']:.0%} precision, {calibration.neighbours} neighbouring "
        f"cases: {rule}; nothing alike below {calibration.cut:.4f}; "
        f"gradability probe: {'yes' if calibration.probe else 'no'}"
    )


@click.command()
@data_options
@model_options
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=5, show_default=True)
def check(scin_dir, metadata, images_dir, limit, batch_size, **options):
    """Embed a few images into a throw-away store and verify the vectors and payloads (self-test)."""
    from scinsearch.dataset import load_dataset
    from scinsearch.pipeline import run_embed
    from scinsearch.store import open_store

    data = load_dataset(scin_dir=scin_dir, metadata=metadata, images_dir=images_dir)
    with tempfile.TemporaryDirectory(prefix="scinsearch-check-") as folder:
        settings = make_settings(
            qdrant_path=Path(folder), collection="scinsearch_check", batch_size=batch_size, workers=0, **options
        )
        embedder = open_embedder(settings)
        store = open_store(settings)
        try:
            summary = run_embed(
                data,
                embedder,
                store,
                batch_size=settings.batch_size,
                workers=settings.workers,
                limit=limit,
                progress=False,
            )
            problems = verify_store(store, summary, embedder.dim)
        finally:
            store.close()
    for line in summary.lines():
        click.echo(line)
    if problems:
        raise ScinSearchError("check failed: " + "; ".join(problems))
    click.echo(
        f"check passed: {summary.embedded} images embedded, {embedder.dim}-d unit vectors, payloads complete, "
        f"each image finds itself first"
    )


def verify_store(store, summary, dim: int) -> list[str]:
    """What the check asserts: count, dimension, unit norm, payload fields, self-retrieval."""
    problems = []
    points = list(store.scroll(with_vectors=True))
    if len(points) != summary.embedded or not points:
        problems.append(f"{len(points)} points stored, {summary.embedded} embedded")
    for point in points:
        if point.vector is None or point.vector.shape != (dim,):
            problems.append(f"point {point.id} has no {dim}-d vector")
            continue
        if abs(float(np.linalg.norm(point.vector)) - 1.0) > 1e-3:
            problems.append(f"point {point.id} is not unit length")
        missing = [f for f in REQUIRED_FIELDS if f not in point.payload]
        if missing:
            problems.append(f"point {point.id} lacks {', '.join(missing)}")
        top = store.query(point.vector, limit=1)
        if not top or top[0].score < 0.999:
            problems.append(f"image {point.payload.get('image_id')} is not its own nearest neighbour")
    return problems


@click.command(name="models")
def list_models():
    """List the SigLIP checkpoints scinsearch knows (any SigLIP hub id or folder works)."""
    from scinsearch.models import KNOWN_MODELS

    for info in KNOWN_MODELS.values():
        click.echo(f"{info.model_id:40s} {info.dim:5d}-d  {info.image_size}px  {info.note}")


COMMANDS = [embed, info, check, list_models]
