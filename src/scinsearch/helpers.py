"""Small helpers every layer shares: atomic files, file hashes, an error's first line, JSON-safe values, tables.

The lowest module of the package: it imports nothing of scinsearch, so any module may use it.

Atomic writes have one policy, here: the new content goes to a temporary file next to the target, is
flushed and fsync'ed, renamed over the target, and the folder is fsync'ed so the rename survives a power
cut too. A failure at any point (an exception, a full disk) removes the temporary file and leaves the
old file as it was; a reader never sees half a file under the final name. The temporary file is created
exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`): a file or a symbolic link planted under its name makes the
creation fail, it is never written through (issue 23).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import stat
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any


def fsync_path(path: Path) -> None:
    """Flush a file's (or, on POSIX, a folder's) content to the disk; a folder that cannot be opened
    for it (Windows) is skipped: there the rename itself has to do."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        if Path(path).is_dir():
            return
        raise
    try:
        os.fsync(descriptor)
    except OSError:
        if not Path(path).is_dir():
            raise
    finally:
        os.close(descriptor)


def temporary_sibling(path: Path) -> Path:
    """A hidden, unique name in the target's folder (same file system, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


# A new file, never an existing one: O_EXCL refuses any name that exists, a link (even a dangling one)
# included, and O_NOFOLLOW says so twice on systems where O_EXCL alone does not.
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
CREATE_ATTEMPTS = 16  # fresh random names tried before giving up (a clash means someone plants names)


def create_new(path: Path) -> int:
    """Create `path` for writing and return its descriptor; FileExistsError when anything has the name."""
    return os.open(path, NEW_FILE_FLAGS, 0o666)


def create_temporary(path: Path, temporary: Path | None = None) -> tuple[Path, int]:
    """Create the temporary file of a write to `path`, exclusively: (its path, an open descriptor).

    A random hidden sibling by default, tried again under a new name if one is taken. A fixed name
    (`temporary`: a download's `<file>.part`) is ours by convention: a leftover under it is unlinked (a
    link is removed, never followed) and the name created anew; a name planted again meanwhile fails."""
    if temporary is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        return Path(temporary), create_new(temporary)
    for _ in range(CREATE_ATTEMPTS):
        candidate = temporary_sibling(Path(path))
        try:
            return candidate, create_new(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path}")


def commit(temporary: Path, path: Path) -> None:
    """Put a fully written temporary file in place: fsync it, rename it over `path`, fsync the folder."""
    fsync_path(temporary)
    os.replace(temporary, path)
    fsync_path(Path(path).parent)


@contextlib.contextmanager
def atomic_descriptor(path: Path, temporary: Path | None = None) -> Iterator[tuple[Path, int]]:
    """The temporary file of a write to `path`, created exclusively (`create_temporary`), as (path, open
    descriptor); on a clean exit it is fsync'ed and renamed over `path`, on an exception it is removed.
    The caller owns the descriptor (closes it, or hands it to `os.fdopen`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary, descriptor = create_temporary(path, temporary)
    try:
        yield temporary, descriptor
        commit(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: Path, temporary: Path | None = None) -> Iterator[Path]:
    """Yield the path of a new, empty temporary file to write (for writers that take a path: torch,
    safetensors, Parquet); on a clean exit it is fsync'ed and renamed over `path`, on an exception removed."""
    with atomic_descriptor(path, temporary) as (created, descriptor):
        os.close(descriptor)
        yield created


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", temporary: Path | None = None, **open_arguments: Any) -> Iterator[IO]:
    """`open(path, mode)`, atomically: the handle writes a temporary file (created exclusively) that
    replaces `path` only when the block ends without an exception. Text mode defaults to UTF-8."""
    if "b" not in mode:
        open_arguments.setdefault("encoding", "utf-8")
    with atomic_descriptor(path, temporary) as (_, descriptor), os.fdopen(descriptor, mode, **open_arguments) as handle:
        yield handle


def open_append(path: Path, **open_arguments: Any) -> IO:
    """`open(path, "a")` for a log the project keeps (a ledger): a link under its name is refused
    (O_NOFOLLOW), and so is anything but a regular file (O_NONBLOCK has no effect on one)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    descriptor = os.open(path, flags, 0o666)  # O_NONBLOCK: a FIFO planted there fails instead of waiting
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    open_arguments.setdefault("encoding", "utf-8")
    return os.fdopen(descriptor, "a", **open_arguments)


def write_text_atomically(path: Path, text: str) -> Path:
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content, read a megabyte at a time (memory stays flat for any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


WARNINGS_SHOWN = 20  # warnings printed one by one; the rest are counted (a hostile table makes millions)


def summarised(warnings: Sequence[str], shown: int = WARNINGS_SHOWN) -> list[str]:
    """The first `shown` warnings, then one line counting the rest."""
    lines = list(warnings[:shown])
    if len(warnings) > shown:
        lines.append(f"... and {len(warnings) - shown:,} more")
    return lines


def first_line(exc: BaseException | str, limit: int = 200) -> str:
    """The first line of an error's message (at most `limit` characters), or its type's name when it
    has none: for one-line errors built from a library's multi-line ones."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return text.splitlines()[0][:limit]


def json_safe(value: Any) -> Any:
    """A value strict JSON can hold: numpy scalars and arrays to Python, tuples to lists, keys to text,
    NaN and infinities to null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a GitHub markdown table."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(row) + " |" for row in rows],
    ]


def read_json_object(path: Path, max_bytes: int | None = None) -> dict:
    """A JSON file that must hold an object (a record, a manifest). OSError or ValueError (too large, not
    JSON, not an object) for the caller to turn into its own one-line error."""
    if max_bytes is not None and Path(path).stat().st_size > max_bytes:
        raise ValueError(f"larger than {max_bytes:,} bytes")
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document
