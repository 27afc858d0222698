"""An optional on-disk cache of preprocessed pixels, so a second model with the same input size does not
decode the images again.

Decoding a SCIN PNG (~810x1080) and resizing it costs ~25-30 ms of a core; loading its 224x224x3
uint8 array back (147 KB) costs well under 1 ms. The cache is off unless a folder is given
(`scinsearch embed --cache-dir DIR`).

Layout: `DIR/<preprocessing key>/<2 hex>/<sha1>.npy`, where the preprocessing key names what the pixels
depend on (square size, resample filter, exact or fast path; not the model) and the sha1 is over the
image file's identity (absolute path, size, modification time in ns). A changed file gets a new key;
stale entries are never read. Files are written to a temporary name and renamed into place, so an
interrupted run leaves no half-written entry under a real name; an entry that does not load as the
expected array (disk trouble, a foreign file) counts as a miss and is written again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from scinsearch.helpers import atomic_write


class PixelCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder).expanduser()

    def __repr__(self) -> str:
        return f"PixelCache({str(self.folder)!r})"

    def entry(self, file: Path, key: str) -> Path | None:
        """Where the pixels of `file` preprocessed as `key` live; None when the file cannot be stat'ed."""
        try:
            stat = os.stat(file)
        except OSError:
            return None
        identity = f"{os.path.abspath(file)}\0{stat.st_size}\0{stat.st_mtime_ns}"
        digest = hashlib.sha1(identity.encode("utf-8", "surrogateescape")).hexdigest()
        return self.folder / key / digest[:2] / f"{digest}.npy"

    def get(self, file: Path, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The cached uint8 array of that shape, or None (absent, unreadable or not what was expected)."""
        path = self.entry(file, key)
        if path is None:
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if array.dtype != np.uint8 or array.shape != tuple(shape):
            return None
        return array

    def put(self, file: Path, key: str, array: np.ndarray) -> None:
        """Store atomically (temporary file + rename). Failing to cache never fails the embedding."""
        path = self.entry(file, key)
        if path is None:
            return
        try:
            with atomic_write(path, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array, dtype=np.uint8), allow_pickle=False)
        except OSError:
            pass
