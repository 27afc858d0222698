"""`scinsearch serve`: the kiosk page and the HTTP API on one port.

The port is checked and the store opened before the model and before uvicorn starts, so a busy port or
a store held by another process (`embed`, a second `serve`) fails in a second, with one line saying what
to do, not a traceback. Without --model, the model the collection records is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
from pathlib import Path

import click
from click.core import ParameterSource

from scinsearch.commands.options import (
    adapter_option,
    backend_option,
    file_option,
    folder_option,
    idle_reset_option,
    make_settings,
    model_options,
    model_was_given,
    open_searcher,
    setting_option,
    store_options,
)
from scinsearch.errors import ScinSearchError
from scinsearch.images import MAX_PIXELS
from scinsearch.photo_worker import DEFAULT_DECODE_TIMEOUT
from scinsearch.service.settings import (
    DEFAULT_BODY_TIMEOUT_SECONDS,
    DEFAULT_HEADER_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_UPLOAD_BYTES_IN_FLIGHT,
    DEFAULT_MAX_UPLOADS,
)

API_KEY_ENV = "SCINSEARCH_API_KEY"
WIDE_OPEN_HOSTS = ("0.0.0.0", "::", "[::]")


def read_api_key(from_env: str | None, key_file: Path | None, typed_on_command_line: bool) -> str | None:
    """The API key, from the environment or a file; never from the command line, where `ps` and the
    shell history show it to anyone on the machine."""
    if typed_on_command_line:
        raise ScinSearchError(
            "--api-key on the command line is visible to every user of this machine (ps, shell history): "
            f"put the key in {API_KEY_ENV} or in a file given with --api-key-file"
        )
    if from_env and key_file:
        raise ScinSearchError(f"the API key is given twice ({API_KEY_ENV} and --api-key-file): give one")
    if key_file is None:
        return from_env or None
    try:
        key = key_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScinSearchError(f"cannot read the API key file {key_file}: {exc}") from None
    if not key or "\n" in key:
        raise ScinSearchError(f"the API key file {key_file} must hold the key on one line")
    if key_file.stat().st_mode & 0o077:
        click.echo(f"warning: {key_file} can be read by other users: chmod 600 {key_file}", err=True)
    return key


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another program listens on, before the slow start (store, model, compile), the way
    uvicorn will bind it (SO_REUSEADDR, so a port in TIME_WAIT is not taken for busy)."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ScinSearchError(f"cannot listen on {host!r}: {exc.strerror or exc}: check --host") from None
    family, kind, protocol, _, address = addresses[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ScinSearchError(f"port {port} is in use: choose another with --port") from None
            raise ScinSearchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def host_names(values: tuple[str, ...]) -> tuple[str, ...]:
    """--allowed-hosts given repeatedly and/or comma-separated."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


@click.command()
@store_options
@model_options
@backend_option
@adapter_option
@setting_option(
    "--host",
    default="127.0.0.1",
    help="Address to listen on; 0.0.0.0 opens it to the local network (then also set --allowed-hosts).",
)
@setting_option("--port", type=click.IntRange(0, 65535), default=8000)
@setting_option(
    "--allowed-hosts",
    multiple=True,
    help="Host names clients may use (Host header), besides 127.0.0.1, localhost, [::1] and --host; "
    "comma-separated or repeated; '*' allows any (not recommended: DNS rebinding). Others get 400.",
)
# read from the environment only; typed on the command line it is refused
@setting_option("--api-key", envvar=API_KEY_ENV, hidden=True)
@file_option(
    "--api-key-file",
    exists=True,
    envvar="SCINSEARCH_API_KEY_FILE",
    help=f"Require the key in this file (one line) in the X-API-Key header of API calls; or set {API_KEY_ENV}. "
    "Off by default. A key typed on the command line is refused: ps would show it.",
)
@setting_option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    envvar="SCINSEARCH_CORS_ORIGINS",
    help="Allow browser calls from this origin (repeat for several; none by default).",
)
@folder_option(
    "--images-dir",
    envvar="SCINSEARCH_IMAGES_DIR",
    help="Folder the stored image paths are relative to (default: the one `embed` recorded).",
)
@setting_option(
    "--max-upload-mb",
    type=click.FloatRange(min=0.1, max=512),
    default=DEFAULT_MAX_UPLOAD_BYTES / 2**20,
    help="Largest photo upload accepted (413 above, while it is read).",
)
@setting_option(
    "--max-megapixels",
    type=click.FloatRange(min=0.1, max=MAX_PIXELS / 1e6),
    default=MAX_PIXELS / 1e6,
    help="Largest photo accepted, in pixels (413 above, from the header); decoding memory grows with it.",
)
@setting_option(
    "--max-uploads",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_UPLOADS,
    help="Requests with a body (searches) in progress at once; more get 503 with Retry-After.",
)
@setting_option(
    "--max-inflight-mb",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_MAX_UPLOAD_BYTES_IN_FLIGHT / 2**20,
    help="Bytes those requests may hold between them (at least --max-upload-mb); more get 503.",
)
@setting_option(
    "--body-timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_BODY_TIMEOUT_SECONDS,
    help="Seconds a request body may take to arrive (408 after).",
)
@setting_option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_CONNECTIONS,
    help="Open connections at once; beyond, the longest-idle ones are closed to make room.",
)
@setting_option(
    "--header-timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_HEADER_TIMEOUT_SECONDS,
    help="Seconds a connection may take to send its request headers (then it is closed).",
)
@setting_option(
    "--decode-timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_DECODE_TIMEOUT,
    help="Seconds one photo may take to decode (413 after; the decoder process is restarted).",
)
@idle_reset_option(
    envvar="SCINSEARCH_IDLE_RESET_SECONDS",
    help="The kiosk page clears the photo, results and filters after this many seconds without a touch or key "
    "press, so the next patient never sees the last one's (default 180; 0 = never).",
)
@setting_option(
    "--compile",
    "compile_towers",
    type=click.Choice(["auto", "on", "off"]),
    default="off",
    envvar="SCINSEARCH_SERVE_COMPILE",
    help="torch.compile (--backend torch) the image and text towers for one query at a time, at start-up, "
    "before /ready answers (a one-off 20-90 s on a CPU). auto = where a compiler is present, keeping each tower only "
    "if it answers faster than eager (timed at start-up).",
)
@folder_option(
    "--bundle",
    "bundle_folder",
    envvar="SCINSEARCH_BUNDLE",
    help="Serve a kiosk bundle (`scinsearch bundle --out`): its collection, model files and page settings, "
    "after checking every file against its manifest; the store and --model options are then ignored.",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
def serve(
    host,
    port,
    allowed_hosts,
    api_key,
    api_key_file,
    cors_origins,
    images_dir,
    max_upload_mb,
    max_megapixels,
    max_uploads,
    max_inflight_mb,
    body_timeout,
    max_connections,
    header_timeout,
    decode_timeout,
    idle_reset_seconds,
    compile_towers,
    bundle_folder,
    log_level,
    **options,
):
    """Serve the kiosk page (/) and the API (/docs) over one SigLIP model and one store.

    The API key, when wanted, comes from the environment (SCINSEARCH_API_KEY) or a file
    (--api-key-file), never from the command line. Limits: docs/security.md.

    \b
    scinsearch serve --qdrant-path ~/.scinsearch/qdrant --model ./siglip-base-patch16-224
    HF_HUB_OFFLINE=1 scinsearch serve --host 0.0.0.0 --allowed-hosts kiosk.local --api-key-file ~/.kiosk-key
    scinsearch serve --collection scin_dermatology_adapted --adapter models/scin-adapter
    """
    from scinsearch.service import ServiceSettings

    source = click.get_current_context().get_parameter_source("api_key")
    key = read_api_key(api_key, api_key_file, typed_on_command_line=source == ParameterSource.COMMANDLINE)
    settings = make_settings(**options)
    page = {} if idle_reset_seconds is None else {"idle_reset_seconds": idle_reset_seconds}  # else the default
    service = ServiceSettings(
        search=settings,
        host=host,
        port=port,
        api_key=key,
        allowed_hosts=host_names(allowed_hosts),
        cors_origins=tuple(cors_origins),
        images_dir=images_dir,
        max_upload_bytes=int(max_upload_mb * 2**20),
        max_pixels=int(max_megapixels * 1e6),
        max_uploads=max_uploads,
        max_upload_bytes_in_flight=int(max_inflight_mb * 2**20),
        body_timeout_seconds=body_timeout,
        max_connections=max_connections,
        header_timeout_seconds=header_timeout,
        decode_timeout_seconds=decode_timeout,
        compile=compile_towers,
        **page,
    )
    if host in WIDE_OPEN_HOSTS and not service.allowed_hosts:
        click.echo(
            "warning: listening on all interfaces, but only 127.0.0.1, localhost and [::1] are accepted as host "
            "names: add the names or addresses clients use with --allowed-hosts",
            err=True,
        )
    check_port_free(host, port)
    with sigterm_stops_cleanly():
        if bundle_folder is None:
            run_service(service, log_level, model_was_given())
        else:
            serve_bundle(bundle_folder, service, log_level, idle_reset_seconds)


def serve_bundle(bundle_folder: Path, service, log_level: str, idle_reset_seconds: int | None) -> None:
    """Serve a bundle's collection from a working copy, with its page settings unless given here."""
    with bundle_store(bundle_folder) as (bundle, store_folder):
        changes = {"search": bundle.settings(service.search, store_folder)}
        if idle_reset_seconds is None:
            changes["idle_reset_seconds"] = int(bundle.page.get("idle_reset_seconds", service.idle_reset_seconds))
        run_service(service.replace(**changes), log_level)


@contextlib.contextmanager
def sigterm_stops_cleanly():
    """SIGTERM (systemd, `docker stop`, a kiosk shutting down) ends `serve` as cleanly as Ctrl-C. uvicorn stops
    gracefully on it and then raises the signal again; with the default action that kills the process before
    any `finally` runs, which left the bundle's working copy (hundreds of MB) in the temporary folder and the
    store unclosed on every stop. Raised as SystemExit(0) instead, the clean-up runs and the exit is 0."""

    def stop(signum, frame):
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def bundle_store(folder: Path):
    """The verified bundle and a working copy of its collection, removed afterwards (the bundle stays as built)."""
    import shutil

    from scinsearch.bundle import verify_bundle, working_copy

    bundle = verify_bundle(folder)
    copy = working_copy(bundle)
    try:
        click.echo(f"bundle {bundle.folder}: all {bundle.files} files match the manifest", err=True)
        yield bundle, copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def run_service(service, log_level: str, model_given: bool = True) -> None:
    """Open the store, then the model (the collection's own unless `model_given`), and serve until stopped."""
    import uvicorn

    from scinsearch.service import create_app
    from scinsearch.service.connections import guarded_protocol

    settings = service.search
    searcher, store = open_searcher(settings, model_given)
    try:
        adapter = f"; {searcher.adapter.describe()}" if searcher.adapter else ""
        click.echo(f"model: {searcher.embedder.describe()}; store: {settings.store_description()}{adapter}", err=True)
        app = create_app(service, searcher=searcher)
        address = f"http://{service.host}:{service.port}"
        click.echo(f"kiosk page: {address}/   API docs: {address}/docs", err=True)
        uvicorn.run(
            app,
            host=service.host,
            port=service.port,
            log_level=log_level,
            access_log=log_level == "debug",
            http=guarded_protocol(service.max_connections, service.header_timeout_seconds),
        )
    finally:
        searcher.close()
        store.close()


COMMANDS = [serve]
