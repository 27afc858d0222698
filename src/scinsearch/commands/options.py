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


LOCATION_OPTIONS = (
    click.option(
        "--qdrant-path",
        type=click.Path(path_type=Path),
        default=DEFAULT_QDRANT_PATH,
        show_default=True,
        envvar="SCINSEARCH_QDRANT_PATH",
        help="Folder of the embedded store (Qdrant Edge; one process at a time).",
    ),
    click.option(
        "--qdrant-url",
        default=None,
        envvar="QDRANT_URL",
        help="Qdrant server or cluster URL; replaces the embedded store. ':memory:' runs "
        "qdrant-client in-process (for trials and tests).",
    ),
    click.option("--qdrant-api-key", default=None, envvar="QDRANT_API_KEY", help="API key of the Qdrant server."),
    click.option(
        "--qdrant-timeout",
        type=click.IntRange(min=1),
        default=60,
        show_default=True,
        envvar="SCINSEARCH_QDRANT_TIMEOUT",
        help="Seconds a request to a Qdrant server may take.",
    ),
)
store_options = option_group(
    click.option(
        "--collection",
        default=DEFAULT_COLLECTION,
        show_default=True,
        envvar="SCINSEARCH_COLLECTION",
        help="Qdrant collection name.",
    ),
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

server_options = option_group(
    click.option(
        "--shards",
        "shard_number",
        type=click.IntRange(min=1),
        default=None,
        envvar="SCINSEARCH_SHARDS",
        help="Server: shards of a new collection, spread over the cluster's nodes (server default 1).",
    ),
    click.option(
        "--replication-factor",
        type=click.IntRange(min=1),
        default=None,
        envvar="SCINSEARCH_REPLICATION_FACTOR",
        help="Server: copies of each shard, on different nodes (server default 1).",
    ),
    click.option(
        "--write-consistency",
        "write_consistency_factor",
        type=click.IntRange(min=1),
        default=None,
        envvar="SCINSEARCH_WRITE_CONSISTENCY",
        help="Server: copies that must confirm a write (server default 1; at most the replication factor).",
    ),
    click.option(
        "--on-disk-vectors",
        is_flag=True,
        envvar="SCINSEARCH_ON_DISK_VECTORS",
        help="Server: keep the original vectors on disk (memory-mapped), not in RAM.",
    ),
    click.option(
        "--on-disk-payload",
        is_flag=True,
        envvar="SCINSEARCH_ON_DISK_PAYLOAD",
        help="Server: keep the payloads on disk, not in RAM.",
    ),
    click.option(
        "--hnsw-m",
        type=click.IntRange(0, 512),
        default=None,
        envvar="SCINSEARCH_HNSW_M",
        help="Server and embedded store: HNSW edges per node (default 16; more: better recall, more memory; "
        "0: no graph).",
    ),
    click.option(
        "--hnsw-ef-construct",
        type=click.IntRange(4, 4096),
        default=None,
        envvar="SCINSEARCH_HNSW_EF_CONSTRUCT",
        help="Server and embedded store: neighbours considered while building HNSW (default 100; more: better "
        "graph, slower build).",
    ),
    click.option(
        "--quantization",
        type=click.Choice(QUANTIZATIONS),
        default="none",
        show_default=True,
        envvar="SCINSEARCH_QUANTIZATION",
        help="Server and embedded store: int8 keeps scalar-quantised copies of the vectors in RAM (4x smaller) "
        "beside the originals, which rescore the best candidates.",
    ),
)
"""How a new collection is made on a Qdrant server or cluster (`ServerOptions`, docs/storage.md)."""

model_options = option_group(
    click.option(
        "--model",
        default=DEFAULT_MODEL,
        show_default=True,
        envvar="SCINSEARCH_MODEL",
        help="SigLIP / SigLIP 2 hub id or local folder (set HF_HUB_OFFLINE=1 to never touch the network). "
        "search, serve and evaluate use the model the collection records when it is not given.",
    ),
    click.option(
        "--device",
        default="auto",
        show_default=True,
        envvar="SCINSEARCH_DEVICE",
        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.",
    ),
    click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
        default="auto",
        show_default=True,
        envvar="SCINSEARCH_PRECISION",
        help="auto = half precision on GPU, bf16 on CPUs that support it natively, else fp32.",
    ),
)
"""Which model, on which device, at which precision."""

backend_option = click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="torch",
    show_default=True,
    envvar="SCINSEARCH_BACKEND",
    help="What runs the model: torch, or openvino (the CPU only; bf16 or fp32; not SigLIP 2 NaFlex models), "
    "1.2-1.3x compiled torch on CPUs with native bf16. An optional extra: pip install 'scinsearch[openvino]'.",
)
"""`embed` and `serve`: the towers through torch or OpenVINO (`scinsearch.openvino_tower`)."""

data_options = option_group(
    click.option(
        "--scin-dir",
        type=click.Path(path_type=Path),
        default=None,
        envvar="SCINSEARCH_SCIN_DIR",
        help="The official release: the folder holding dataset/ (or dataset/ itself).",
    ),
    click.option(
        "--metadata",
        type=click.Path(path_type=Path),
        default=None,
        help="Flat one-row-per-image CSV (real_labeled_metadata.csv), instead of --scin-dir.",
    ),
    click.option(
        "--images-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Folder the --metadata image_path values are relative to.",
    ),
)
"""Which images: the official release, or the old scripts' flat CSV and its image folder."""

quiet_option = click.option("--quiet", is_flag=True, help="No progress bar.")


def adapter_option(function):
    """--adapter: the folder `scinsearch finetune` wrote; the collection must be the one `finetune apply` made."""
    return click.option(
        "--adapter",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        envvar="SCINSEARCH_ADAPTER",
        help="Fine-tuned adapter folder (`scinsearch finetune`): queries go through it. The collection must be "
        "the one `scinsearch finetune apply` made with it.",
    )(function)


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


def folder_option(*declarations: str, help: str, **options):
    """A `--x DIR` option naming a folder (a Path; a file there is refused): written once for every command."""
    return click.option(
        *declarations, type=click.Path(path_type=Path, file_okay=False), help=help, **{"default": None, **options}
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
