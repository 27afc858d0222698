"""The `scinsearch` command: a thin layer of click options over the Python API.

Each stage's commands live in `scinsearch.commands.*`; flags and environment variables become one
`Settings` object in `commands/options.py` and nowhere else. Every `ScinSearchError` becomes one line
on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import os
import sys

import click

from scinsearch.errors import ScinSearchError

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=HELP_OPTIONS)
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
    """Each stage keeps its commands in its own module (their heavy imports wait until a command runs)."""
    from scinsearch.commands import (
        bundle_cmds,
        calibrate_cmds,
        download_cmds,
        embed_cmds,
        evaluate_cmds,
        explore_cmds,
        finetune_cmds,
        search_cmds,
        service_cmds,
        transfer_cmds,
    )

    for module in (
        embed_cmds,
        search_cmds,
        service_cmds,
        download_cmds,
        evaluate_cmds,
        finetune_cmds,
        transfer_cmds,
        calibrate_cmds,
        bundle_cmds,
        explore_cmds,
    ):
        for command in module.COMMANDS:
            with_help_options(command)
            cli.add_command(command)


def with_help_options(command: click.Command) -> None:
    """`-h` beside `--help` on every command itself, not only through the group: click caches a command's
    help option the first time it is built, so one invoked alone (a test, a script) would otherwise fix
    it at `--help` for the rest of the process."""
    command.context_settings = {**HELP_OPTIONS, **command.context_settings}
    for sub in getattr(command, "commands", {}).values():
        with_help_options(sub)


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
        click.echo(
            f"Error: unexpected {type(exc).__name__}: {exc} (set SCINSEARCH_DEBUG=1 for the traceback)", err=True
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
