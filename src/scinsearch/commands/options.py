"""Options shared by the commands, and the one place flags and environment become `Settings`.

Kept apart from `scinsearch.cli` (which registers the commands) so that command modules can import
it without an import cycle.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import click
from click.core import ParameterSource

from scinsearch.settings import (
    BACKENDS,
    DEFAULT_COLLECTION,
    DEFAULT_MODEL,
    DEFAULT_QDRANT_PATH,
    QUANTIZATIONS,
    ServerOptions,
    Settings,
)

SERVER_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(ServerOptions))


def option_group(*options):
    """One decorator for several click options, listed in the order `--help` shows them."""

    def decorate(function):
        return functools.reduce(lambda f, option: option(f), reversed(options), function)

    return decorate


def setting_option(flag: str, *names: str, envvar: str | None = None, **options):
    """An option the environment may also set: SCINSEARCH_<FLAG> (the flag's words in capitals, joined by
    underscores) unless `envvar` names another variable. A value option defaults to None; a default other
    than None is shown in --help."""
    if envvar is None:
        envvar = "SCINSEARCH_" + flag.lstrip("-").replace("-", "_").upper()
    if not any(options.get(kind) for kind in ("is_flag", "multiple", "required")):
        options.setdefault("default", None)
        if options["default"] is not None:
            options.setdefault("show_default", True)
    return click.option(flag, *names, envvar=envvar, **options)


def path_option(*declarations: str, help: str, exists: bool = False, file_okay=True, dir_okay=True, **options):
    """A `--x PATH` option (a Path; None when not given, unless it is required): written once for every
    command. A required one has no default: click passes a default None through instead of refusing."""
    if not options.get("required"):
        options.setdefault("default", None)
    kind = click.Path(path_type=Path, exists=exists, file_okay=file_okay, dir_okay=dir_okay)
    return click.option(*declarations, type=kind, help=help, **options)


def file_option(*declarations: str, help: str, **options):
    """A `--x FILE` option (a Path; a folder there is refused)."""
    return path_option(*declarations, help=help, dir_okay=False, **options)


def folder_option(*declarations: str, help: str, **options):
    """A `--x DIR` option (a Path; a file there is refused)."""
    return path_option(*declarations, help=help, file_okay=False, **options)


LOCATION_OPTIONS = (
    setting_option(
        "--qdrant-path",
        type=click.Path(path_type=Path),
        default=DEFAULT_QDRANT_PATH,
        help="Folder of the embedded store (Qdrant Edge; one process at a time).",
    ),
    setting_option(
        "--qdrant-url",
        envvar="QDRANT_URL",
        help="Qdrant server or cluster URL; replaces the embedded store. ':memory:' runs "
        "qdrant-client in-process (for trials and tests).",
    ),
    setting_option("--qdrant-api-key", envvar="QDRANT_API_KEY", help="API key of the Qdrant server."),
    setting_option(
        "--qdrant-timeout",
        type=click.IntRange(min=1),
        default=60,
        help="Seconds a request to a Qdrant server may take.",
    ),
)
store_options = option_group(
    setting_option("--collection", default=DEFAULT_COLLECTION, help="Qdrant collection name."),
    *LOCATION_OPTIONS,
)
"""Where the vectors live: shared by every command that opens the store."""

collections_options = option_group(
    click.option(
        "--collection",
        "collections",
        multiple=True,
        required=True,
        help="Qdrant collection name; repeat it (the first is the one the others are compared against).",
    ),
    *LOCATION_OPTIONS,
)
"""Several collections of one store (a repeated `--collection`, the tuple `collections`): `scinsearch compare`."""

AT_LEAST_ONE = click.IntRange(min=1)
server_options = option_group(
    setting_option(
        "--shards",
        "shard_number",
        type=AT_LEAST_ONE,
        help="Server: shards of a new collection, spread over the cluster's nodes (server default 1).",
    ),
    setting_option(
        "--replication-factor",
        type=AT_LEAST_ONE,
        help="Server: copies of each shard, on different nodes (server default 1).",
    ),
    setting_option(
        "--write-consistency",
        "write_consistency_factor",
        type=AT_LEAST_ONE,
        help="Server: copies that must confirm a write (server default 1; at most the replication factor).",
    ),
    setting_option(
        "--on-disk-vectors", is_flag=True, help="Server: keep the original vectors on disk (memory-mapped), not in RAM."
    ),
    setting_option("--on-disk-payload", is_flag=True, help="Server: keep the payloads on disk, not in RAM."),
    setting_option(
        "--hnsw-m",
        type=click.IntRange(0, 512),
        help="Server and embedded store: HNSW edges per node (default 16; more: better recall, more memory; "
        "0: no graph).",
    ),
    setting_option(
        "--hnsw-ef-construct",
        type=click.IntRange(4, 4096),
        help="Server and embedded store: neighbours considered while building HNSW (default 100; more: better "
        "graph, slower build).",
    ),
    setting_option(
        "--quantization",
        type=click.Choice(QUANTIZATIONS),
        default="none",
        help="Server and embedded store: int8 keeps scalar-quantised copies of the vectors in RAM (4x smaller) "
        "beside the originals, which rescore the best candidates.",
    ),
)
"""How a new collection is made on a Qdrant server or cluster (`ServerOptions`, docs/storage.md)."""

model_options = option_group(
    setting_option(
        "--model",
        default=DEFAULT_MODEL,
        help="SigLIP / SigLIP 2 hub id or local folder (set HF_HUB_OFFLINE=1 to never touch the network). "
        "search, serve and evaluate use the model the collection records when it is not given.",
    ),
    setting_option("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
    setting_option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
        default="auto",
        help="auto = half precision on GPU, bf16 on CPUs that support it natively, else fp32.",
    ),
)
"""Which model, on which device, at which precision."""

backend_option = setting_option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="torch",
    help="What runs the model: torch, or openvino (the CPU only; bf16 or fp32; not SigLIP 2 NaFlex models), "
    "1.2-1.3x compiled torch on CPUs with native bf16. An optional extra: pip install 'scinsearch[openvino]'.",
)
"""`embed` and `serve`: the towers through torch or OpenVINO (`scinsearch.openvino_tower`)."""

data_options = option_group(
    path_option(
        "--scin-dir",
        envvar="SCINSEARCH_SCIN_DIR",
        help="The official release: the folder holding dataset/ (or dataset/ itself).",
    ),
    path_option("--metadata", help="Flat one-row-per-image CSV (real_labeled_metadata.csv), instead of --scin-dir."),
    path_option("--images-dir", help="Folder the --metadata image_path values are relative to."),
)
"""Which images: the official release, or the old scripts' flat CSV and its image folder."""

quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")

adapter_option = folder_option(
    "--adapter",
    envvar="SCINSEARCH_ADAPTER",
    help="Fine-tuned adapter folder (`scinsearch finetune`): queries go through it. The collection must be "
    "the one `scinsearch finetune apply` made with it.",
)
"""--adapter: the folder `scinsearch finetune` wrote; the collection must be the one `finetune apply` made."""


class IncompleteRun(click.ClickException):
    """A run that kept going past failures and ended without all of its work done: its summary is printed,
    then `Error: <message>` and exit code 1 (in click's standalone mode and through `scinsearch.cli.main`)."""

    exit_code = 1


def make_settings(
    collection: str = DEFAULT_COLLECTION,
    qdrant_path: Path = DEFAULT_QDRANT_PATH,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    **rest,
) -> Settings:
    """Flags -> Settings. ':memory:' as a URL means qdrant-client's in-process mode; the server options
    (`server_options`) become one `ServerOptions`."""
    location = None
    if qdrant_url == ":memory:":
        qdrant_url, location = None, ":memory:"
    server = ServerOptions(**{k: v for k, v in rest.items() if k in SERVER_OPTION_NAMES and v is not None})
    known = {k: v for k, v in rest.items() if k in Settings.__dataclass_fields__ and v is not None}
    return Settings(
        collection=collection,
        qdrant_path=Path(qdrant_path).expanduser(),
        qdrant_url=qdrant_url,
        qdrant_api_key=qdrant_api_key,
        qdrant_location=location,
        server=server,
        **known,
    )


def idle_reset_option(help: str, **options):
    """--idle-reset-seconds: the kiosk page's idle reset (`serve`, and the page settings of `bundle`)."""
    return click.option("--idle-reset-seconds", type=click.IntRange(0, 86_400), default=None, help=help, **options)


def model_was_given() -> bool:
    """Did the user name a model (--model or SCINSEARCH_MODEL)? If not, a command reading a collection uses
    the model the collection records, not the default."""
    return click.get_current_context().get_parameter_source("model") not in (ParameterSource.DEFAULT, None)


def open_searcher(settings: Settings, model_given: bool = True):
    """(searcher, store): the store first (fails fast when locked or missing), then the model: the one the
    collection records unless `model_given` (a different one given is refused). The caller closes both."""
    from scinsearch.search import Searcher
    from scinsearch.store import open_store

    store = open_store(settings)
    try:
        info = None if model_given else store.info()
        if info is not None:
            settings = settings.replace(model=info.model)
        return Searcher(settings, store=store), store
    except BaseException:
        store.close()
        raise
