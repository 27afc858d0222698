"""`scinsearch serve`: the kiosk page and the HTTP API on one port.

The store is opened before the model and before uvicorn starts, so a store held by another process
(`embed`, a second `serve`) fails in a second, with one line saying what to do, not a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from scinsearch.commands.options import adapter_option, make_settings, model_options, store_options


def open_searcher(settings):
    """Store first (fails fast when locked), then the model; the caller closes the store."""
    from scinsearch.search import Searcher
    from scinsearch.store import open_store

    store = open_store(settings)
    try:
        return Searcher(settings, store=store), store
    except BaseException:
        store.close()
        raise


@click.command()
@store_options
@model_options
@adapter_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="SCINSEARCH_HOST",
    help="Address to listen on; 0.0.0.0 opens it to the local network.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, envvar="SCINSEARCH_PORT")
@click.option(
    "--api-key",
    default=None,
    envvar="SCINSEARCH_API_KEY",
    help="Require this key in the X-API-Key header of API calls (off by default).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    envvar="SCINSEARCH_CORS_ORIGINS",
    help="Allow browser calls from this origin (repeat for several; none by default).",
)
@click.option(
    "--images-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    envvar="SCINSEARCH_IMAGES_DIR",
    help="Folder the stored image paths are relative to (default: the one `embed` recorded).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0.1, max=512),
    default=20.0,
    show_default=True,
    help="Largest photo upload accepted (413 above).",
)
@click.option(
    "--idle-reset-seconds",
    type=click.IntRange(0, 86_400),
    default=None,
    envvar="SCINSEARCH_IDLE_RESET_SECONDS",
    help="The kiosk page clears the photo, results and filters after this many seconds without a touch or key "
    "press, so the next patient never sees the last one's (default 180; 0 = never).",
)
@click.option(
    "--compile",
    "compile_towers",
    type=click.Choice(["auto", "on", "off"]),
    default="off",
    show_default=True,
    envvar="SCINSEARCH_SERVE_COMPILE",
    help="torch.compile the image and text towers for one query at a time, at start-up, before /ready "
    "answers (a one-off 20-90 s on a CPU). auto = where a compiler is present, keeping each tower only "
    "if it answers faster than eager (timed at start-up).",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
def serve(
    host,
    port,
    api_key,
    cors_origins,
    images_dir,
    max_upload_mb,
    idle_reset_seconds,
    compile_towers,
    log_level,
    **options,
):
    """Serve the kiosk page (/) and the API (/docs) over one SigLIP model and one store.

    \b
    scinsearch serve --qdrant-path ~/.scinsearch/qdrant --model ./siglip-base-patch16-224
    HF_HUB_OFFLINE=1 scinsearch serve --host 0.0.0.0 --api-key "$KEY"
    scinsearch serve --collection scin_dermatology_adapted --adapter models/scin-adapter
    """
    import uvicorn

    from scinsearch.service import ServiceSettings, create_app

    settings = make_settings(**options)
    page = {} if idle_reset_seconds is None else {"idle_reset_seconds": idle_reset_seconds}  # else the default
    service = ServiceSettings(
        search=settings,
        host=host,
        port=port,
        api_key=api_key or None,
        cors_origins=tuple(cors_origins),
        images_dir=images_dir,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        compile=compile_towers,
        **page,
    )
    searcher, store = open_searcher(settings)
    try:
        adapter = f"; {searcher.adapter.describe()}" if searcher.adapter else ""
        click.echo(f"model: {searcher.embedder.describe()}; store: {settings.store_description()}{adapter}", err=True)
        app = create_app(service, searcher=searcher)
        address = f"http://{service.host}:{service.port}"
        click.echo(f"kiosk page: {address}/   API docs: {address}/docs", err=True)
        uvicorn.run(app, host=service.host, port=service.port, log_level=log_level, access_log=log_level == "debug")
    finally:
        searcher.close()
        store.close()


COMMANDS = [serve]
