"""Small helpers every layer shares: atomic files, file hashes, an error's first line, JSON-safe values, tables.

The lowest module of the package: it imports nothing of scinsearch, so any module may use it.

Atomic writes have one policy, here: the new content goes to a temporary file next to the target, is
flushed and fsync'ed, renamed over the target, and the folder is fsync'ed so the rename survives a power
cut too. A failure at any point (an exception, a full disk) removes the temporary file and leaves the
old file as it was; a reader never sees half a file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
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


def commit(temporary: Path, path: Path) -> None:
    """Put a fully written temporary file in place: fsync it, rename it over `path`, fsync the folder."""
    fsync_path(temporary)
    os.replace(temporary, path)
    fsync_path(Path(path).parent)


@contextlib.contextmanager
def atomic_path(path: Path, temporary: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path to write (for writers that take a path: torch, safetensors, Parquet);
    on a clean exit it is fsync'ed and renamed over `path`, on an exception it is removed."""
    path = Path(path)
    temporary = Path(temporary) if temporary is not None else temporary_sibling(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporary
        commit(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", **open_arguments: Any) -> Iterator[IO]:
    """`open(path, mode)`, atomically: the handle writes a temporary file that replaces `path` only when
    the block ends without an exception. Text mode defaults to UTF-8."""
    if "b" not in mode:
        open_arguments.setdefault("encoding", "utf-8")
    with atomic_path(path) as temporary, open(temporary, mode, **open_arguments) as handle:
        yield handle


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
