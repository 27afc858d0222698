"""Fetch one object over HTTPS, verified and retried: the network half of `scinsearch.download`.

A body is streamed to `<file>.part`, checked against Content-Length and the MD5 of `x-goog-hash`,
fsync'ed and only then renamed, so a file at its final name is complete. Connection trouble, 5xx and
short or corrupt bodies are retried with exponential backoff and jitter; 404, 403 and other 4xx are not.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import os
import random
import threading
from pathlib import Path

import httpx

PERMANENT_STATUSES = {400, 401, 403, 404, 405, 410, 451}
CHUNK_BYTES = 1 << 16


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure (connection error, 5xx, short body)."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 20.0
    timeout: float = 60.0  # seconds without progress on one connection

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so parallel workers do not retry in lock-step."""
        return min(self.max_delay, self.first_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class TransientError(Exception):
    """Worth another attempt: connection trouble, a 5xx, a short body, a checksum mismatch."""


class PermanentError(Exception):
    """Not worth another attempt: 404, 403 and other 4xx."""


class LocalWriteError(Exception):
    """The disk, not the network: stops the whole run (the next file would fail the same way)."""


class Cancelled(Exception):
    """The run was interrupted; the current file is dropped, finished files are kept."""


def expected_md5(response: httpx.Response) -> bytes | None:
    """The raw MD5 from `x-goog-hash: crc32c=...,md5=<base64>` (one or several headers), if any."""
    for header in response.headers.get_list("x-goog-hash"):
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            if name.lower() == "md5" and value:
                try:
                    return base64.b64decode(value, validate=True)
                except ValueError:
                    raise TransientError(f"unreadable x-goog-hash md5 {value[:40]!r}") from None
    return None


def stream_once(client: httpx.Client, url: str, dest: Path, on_bytes, stop: threading.Event) -> tuple[int, str]:
    """One attempt: stream to `<dest>.part`, verify size and MD5, rename. -> (size, md5 base64)."""
    part = dest.with_name(dest.name + ".part")
    written = 0

    def count(size: int) -> None:
        nonlocal written
        written += size
        on_bytes(size)

    try:
        with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
            check_status(response)
            length, md5 = response.headers.get("content-length"), expected_md5(response)
            digest = write_body(response, part, count, stop)
        if length is not None and length.isdigit() and written != int(length):
            raise TransientError(f"incomplete body: {written} of {length} bytes")
        if md5 is not None and digest.digest() != md5:
            raise TransientError("MD5 mismatch: the body differs from the server's x-goog-hash")
        with local_write(dest):
            os.replace(part, dest)
        return written, base64.b64encode(digest.digest()).decode()
    except BaseException:
        on_bytes(-written)  # the bytes bar counts kept bytes only
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        raise


def write_body(response: httpx.Response, part: Path, count, stop: threading.Event):
    """Stream the raw body into `part` and fsync it, so that once renamed it cannot be short after a crash."""
    digest = hashlib.md5()
    with local_write(part):
        part.parent.mkdir(parents=True, exist_ok=True)
        with part.open("wb") as handle:
            try:
                for chunk in response.iter_raw(CHUNK_BYTES):
                    if stop.is_set():
                        raise Cancelled()
                    handle.write(chunk)
                    digest.update(chunk)
                    count(len(chunk))
            except httpx.TransportError as exc:
                raise TransientError(f"connection lost mid-body ({describe_error(exc)})") from None
            handle.flush()
            os.fsync(handle.fileno())
    return digest


@contextlib.contextmanager
def local_write(path: Path):
    """Disk trouble (full, read-only) stops the whole run: every next file would fail the same way."""
    try:
        yield
    except OSError as exc:
        raise LocalWriteError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_status(response: httpx.Response) -> None:
    """2xx with a raw body passes; 404, 403 and most 4xx are final; 5xx, 408 and 429 are retried."""
    code = response.status_code
    if 200 <= code < 300:
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise PermanentError(f"server sent content-encoding {response.headers['content-encoding']!r}")
        return
    reason = f"HTTP {code} {response.reason_phrase}".strip()
    if code in PERMANENT_STATUSES or (400 <= code < 500 and code not in (408, 429)):
        raise PermanentError(reason)
    raise TransientError(reason)


def describe_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fetch_object(
    client: httpx.Client, url: str, dest: Path, policy: RetryPolicy, on_bytes, stop: threading.Event
) -> tuple[int, str]:
    """Fetch with retries and backoff; raises PermanentError with the last reason when it gives up."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return stream_once(client, url, dest, on_bytes, stop)
        except TransientError as exc:
            reason = str(exc)
        except httpx.TransportError as exc:  # could not connect, timed out before the body, ...
            reason = describe_error(exc)
        except httpx.HTTPError as exc:  # too many redirects, a malformed URL: retrying cannot help
            raise PermanentError(describe_error(exc)) from None
        if attempt < policy.attempts and not stop.wait(policy.delay(attempt)):
            continue
        if stop.is_set():
            raise Cancelled()
    raise PermanentError(f"{reason} (after {policy.attempts} attempts)")
