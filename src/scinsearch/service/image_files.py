"""Serve SCIN's own images (never a patient's) from the folder the collection was embedded from.

The path comes from the stored payload, not from the URL: the URL only names an image id, which is
looked up in the store. The payload's relative path is still treated as untrusted: it is joined with
`paths.inside` (refuses `..` and absolute paths) and the resolved file, symlinks followed, must lie
inside the images folder (itself resolved). The folder is the operator's: `serve --images-dir`, or the
one recorded by `embed` or `import --images-dir` on this machine; an imported file's own `image_root` is
never taken (issue 23). Thumbnails are made in memory and kept in a small LRU cache.
"""

from __future__ import annotations

import collections
import io
import re
import threading
from pathlib import Path

from fastapi import HTTPException

from scinsearch.images import ImageError, open_rgb
from scinsearch.paths import inside

MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
ID_PATTERN = re.compile(r"^-?[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # SCIN ids are signed 64-bit integers


def valid_id(identifier: str) -> bool:
    """Ids are plain tokens; anything with a slash, '..', or control characters is not one."""
    return bool(ID_PATTERN.match(identifier)) and ".." not in identifier


class ImageFiles:
    """Finds and serves the stored image of a payload, full size or as a JPEG thumbnail."""

    def __init__(self, root: Path | None, thumbnail_size: int, cache_size: int = 256):
        self.root = Path(root).expanduser().resolve() if root else None
        self.thumbnail_size = thumbnail_size
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def path_for(self, payload: dict) -> Path:
        """The file of a stored image, guaranteed inside the images folder; 404 otherwise."""
        if self.root is None:
            raise HTTPException(404, "image files are not available: start the service with --images-dir")
        relative = payload.get("image_path")
        if not isinstance(relative, str) or not relative:
            raise HTTPException(404, "this image has no file path")
        resolved = inside(self.root, relative)
        if resolved is None or not resolved.is_file():
            raise HTTPException(404, "image file not found")
        if resolved.suffix.lower() not in MEDIA_TYPES:
            raise HTTPException(404, "image file is not a PNG or JPEG")
        return resolved

    def media_type(self, path: Path) -> str:
        return MEDIA_TYPES[path.suffix.lower()]

    def thumbnail(self, path: Path) -> bytes:
        """A JPEG no larger than `thumbnail_size` on its long side, EXIF orientation applied."""
        key = str(path)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            image = open_rgb(path)
        except ImageError as exc:
            raise HTTPException(404, f"stored image cannot be read: {exc}") from None
        image.thumbnail((self.thumbnail_size, self.thumbnail_size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return data
