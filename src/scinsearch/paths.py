"""Untrusted relative paths joined safely onto a folder (pandas-free: the service reads it too)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath


def resolve_image(root: Path, relative: str) -> Path | None:
    """Join an untrusted relative image path onto `root`; None when it would leave the folder.

    Falls back to the file name alone, for folders that hold the images flat."""
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.name:
        return None
    candidates = [root.joinpath(*pure.parts), root / pure.name]
    if pure.parts[:1] == ("dataset",):
        candidates.insert(1, root.joinpath(*pure.parts[1:]))
    return next((c for c in candidates if c.is_file()), candidates[0])
