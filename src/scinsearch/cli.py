"""The `scinsearch` command: a thin layer of click options over the Python API.

Flags and environment variables become one `Settings` object here and nowhere else. Every
`ScinSearchError` becomes one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from scinsearch.errors import ScinSearchError
from scinsearch.settings import DEFAULT_COLLECTION, DEFAULT_MODEL, DEFAULT_QDRANT_PATH, Settings


def store_options(function):
    """Where the vectors live: shared by every command that opens the store."""
    options = [
        click.option("--collection", default=DEFAULT_COLLECTION, show_default=True, envvar="SCINSEARCH_COLLECTION",
                     help="Qdrant collection name."),
        click.option("--qdrant-path", type=click.Path(path_type=Path), default=DEFAULT_QDRANT_PATH,
                     show_default=True, envvar="SCINSEARCH_QDRANT_PATH",
                     help="Folder of the embedded store (Qdrant Edge; one process at a time)."),
        click.option("--qdrant-url", default=None, envvar="QDRANT_URL",
                     help="Qdrant server or cluster URL; replaces the embedded store. ':memory:' runs "
                          "qdrant-client in-process (for trials and tests)."),
        click.option("--qdrant-api-key", default=None, envvar="QDRANT_API_KEY", help="API key of the Qdrant server."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), function)


def model_options(function):
    options = [
        click.option("--model", default=DEFAULT_MODEL, show_default=True, envvar="SCINSEARCH_MODEL",
                     help="SigLIP / SigLIP 2 hub id or local folder (set HF_HUB_OFFLINE=1 to never touch the network)."),
        click.option("--device", default="auto", show_default=True, envvar="SCINSEARCH_DEVICE",
                     help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True, envvar="SCINSEARCH_PRECISION",
                     help="auto = half precision on GPU, bf16 on CPUs that support it natively, else fp32."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), function)


def make_settings(collection: str = DEFAULT_COLLECTION, qdrant_path: Path = DEFAULT_QDRANT_PATH,
                  qdrant_url: str | None = None, qdrant_api_key: str | None = None, **rest) -> Settings:
    """Flags -> Settings. ':memory:' as a URL means qdrant-client's in-process mode."""
    location = None
    if qdrant_url == ":memory:":
        qdrant_url, location = None, ":memory:"
    known = {k: v for k, v in rest.items() if k in Settings.__dataclass_fields__ and v is not None}
    return Settings(collection=collection, qdrant_path=Path(qdrant_path).expanduser(), qdrant_url=qdrant_url,
                    qdrant_api_key=qdrant_api_key, qdrant_location=location, **known)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scinsearch")
def cli():
    """Search SCIN dermatology cases by photo or text with SigLIP and Qdrant.

    \b
    scinsearch download --to ~/data/scin
    scinsearch embed --scin-dir ~/data/scin
    scinsearch search --image photo.jpg
    scinsearch serve
    """


def register_commands() -> None:
    """Each stage keeps its commands in its own module; a missing optional stage is skipped."""
    import importlib
    for module_name in ("embed_cmds", "search_cmds", "service_cmds", "download_cmds", "evaluate_cmds"):
        try:
            module = importlib.import_module(f"scinsearch.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"scinsearch.commands.{module_name}":
                raise
            continue
        for command in module.COMMANDS:
            cli.add_command(command)


register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user-facing errors into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="scinsearch", standalone_mode=False)
    except ScinSearchError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("Interrupted: what was stored is kept; run the same command again to resume.", err=True)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, with a way to see more
        if os.environ.get("SCINSEARCH_DEBUG"):
            raise
        click.echo(f"Error: unexpected {type(exc).__name__}: {exc} (set SCINSEARCH_DEBUG=1 for the traceback)",
                   err=True)
        return 2
    return 0


if __name__ == "__main__":  # `python -m scinsearch.cli`: use the imported module, whose group has the commands
    from scinsearch.cli import main as package_main
    sys.exit(package_main())
