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


def with_data_defaults(argv: list[str]) -> list[str]:
    """Add --metadata/--images-dir defaults unless the user gave them or chose --scin-dir."""
    given = {arg.split("=", 1)[0] for arg in argv}
    if "--scin-dir" in given or "-h" in given or "--help" in given:
        return list(argv)
    extra = []
    for flag, value in DATA_DEFAULTS.items():
        if flag not in given:
            extra += [flag, str(Path(value).expanduser())]
    return list(argv) + extra
