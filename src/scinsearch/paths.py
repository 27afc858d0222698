"""Untrusted relative paths joined safely onto a folder (pandas-free: the service reads it too)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def relative_parts(relative: str) -> PurePosixPath | None:
    """An untrusted image path as a relative path that cannot leave its folder by its text; None when it
    is absolute, climbs with '..', names no file or holds a NUL (backslashes count as slashes)."""
    if not isinstance(relative, str) or "\x00" in relative:
        return None
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.name:
        return None
    return pure


def resolve_image(root: Path, relative: str) -> Path | None:
    """Join an untrusted relative image path onto `root`; None when it would leave the folder.

    Falls back to the file name alone, for folders that hold the images flat."""
    pure = relative_parts(relative)
    if pure is None:
        return None
    candidates = [root.joinpath(*pure.parts), root / pure.name]
    if pure.parts[:1] == ("dataset",):
        candidates.insert(1, root.joinpath(*pure.parts[1:]))
    return next((c for c in candidates if c.is_file()), candidates[0])


def inside(root: Path, relative: str) -> Path | None:
    """The file an untrusted image path names under `root`, symbolic links resolved, when it stays inside
    `root` (itself resolved); None when its text or a link leads out. What `/images` serves and what
    `import --images-dir` checks."""
    candidate = resolve_image(root, relative)
    if candidate is None:
        return None
    resolved = Path(os.path.realpath(candidate))
    return resolved if resolved.is_relative_to(Path(os.path.realpath(root))) else None
