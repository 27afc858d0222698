"""Remember the files that crash or hang the image decoder, so that a rerun skips them at once.

`scinsearch.decoding` finds such a file by decoding it alone in a fresh process; without a record the
next run would lose a worker (and, for a hang, the whole deadline) on it again. The record lives beside
the images it describes (`<image root>/.scinsearch-undecodable.jsonl`, next to the download ledger),
one JSON line per file: its absolute path, size, modification time, the Pillow version and the
reason. A file that changed since, or a newer Pillow, is tried again; deleting a line (or the file)
tries that file again. Failing to write the record never fails a run: the file is then found again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import PIL

from scinsearch.helpers import open_append

RECORD_NAME = ".scinsearch-undecodable.jsonl"


def identity(file: Path) -> dict | None:
    """What makes an entry apply: this file, unchanged, and the decoder that failed on it."""
    try:
        stat = os.stat(file)
    except OSError:
        return None
    return {
        "path": os.path.abspath(file),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "pillow": PIL.__version__,
    }


class UndecodableFiles:
    """The record of one image folder: read once, appended to as culprits are found."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / RECORD_NAME
        self.entries: dict[str, dict] = {}
        self.unwritable: str | None = None  # why the record could not be written, if it could not
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
                self.entries[str(entry["path"])] = entry
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash

    def reason(self, file: Path) -> str | None:
        """Why `file` was found undecodable before, if it was and is still the same file."""
        current = identity(file)
        entry = self.entries.get(current["path"]) if current else None
        if entry is None or any(entry.get(key) != value for key, value in current.items()):
            return None
        return str(entry.get("reason", "it crashed the decoder"))

    def add(self, file: Path, reason: str) -> bool:
        """Append `file`; False (and `unwritable` set) when the record cannot be written."""
        entry = identity(file)
        if entry is None:
            return False
        entry["reason"] = reason
        try:
            with open_append(self.path) as handle:
                handle.write(json.dumps(entry) + "\n")
        except OSError as exc:
            self.unwritable = exc.strerror or str(exc)
            return False
        self.entries[entry["path"]] = entry
        return True
