"""Shared by the two seed scripts: make `scinsearch` importable from a checkout and apply the
original scripts' data defaults (flat CSV + images folder under ~/data/scin)."""

from __future__ import annotations

import sys
from pathlib import Path

DATA_DEFAULTS = {"--metadata": "~/data/scin/real_labeled_metadata.csv", "--images-dir": "~/data/scin/images"}


def import_cli():
    """The package's CLI, also when the scripts run from a checkout that was never pip-installed."""
    try:
        from scinsearch.cli import main
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from scinsearch.cli import main
    return main


def with_defaults(argv: list[str], defaults: dict[str, str]) -> list[str]:
    """Add the original scripts' defaults for the flags the user did not give.

    The data defaults (--metadata/--images-dir) are skipped when the user chose --scin-dir."""
    given = {arg.split("=", 1)[0] for arg in argv}
    if "-h" in given or "--help" in given:
        return list(argv)
    extra = []
    for flag, value in defaults.items():
        if flag in given or (flag in DATA_DEFAULTS and "--scin-dir" in given):
            continue
        extra += [flag, str(Path(value).expanduser())]
    return list(argv) + extra
