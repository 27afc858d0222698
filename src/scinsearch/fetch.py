"""Fetch one object over HTTPS, verified and retried: the network half of `scinsearch.download`.

A body is streamed to `<file>.part` (created exclusively: never through a link planted there), checked
against Content-Length and the MD5 of `x-goog-hash`, fsync'ed and only then renamed, so a file at its
final name is complete. What could be checked is
returned with it (`VERIFIED_*`): a server that sends neither header gives nothing to check a body
against, except that a PNG must end with its IEND chunk (a cut-off image is caught even then).
Connection trouble, 5xx and short or corrupt bodies are retried with exponential backoff and jitter;
404, 403 and other 4xx are not. A redirect from HTTPS to plain HTTP is refused (the body could be
swapped on the way), and each object has an overall deadline, all attempts together.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import random
import threading
import time
from pathlib import Path

import httpx

from scinsearch.helpers import atomic_write, first_line

PERMANENT_STATUSES = {400, 401, 403, 404, 405, 410, 451}
MAX_REDIRECTS = 5
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with
# What a downloaded file was checked against (recorded in the ledger, counted in the summary).
VERIFIED_SIZE, VERIFIED_MD5, VERIFIED_PNG_END = "size", "md5", "png-end"


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure (connection error, 5xx, short body)."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 20.0
    timeout: float = 60.0  # seconds without progress on one connection
    deadline: float = 600.0  # seconds for one object, every attempt and backoff included (~1 MB: 1.7 KB/s)

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter, so parallel workers do not retry in lock-step."""
        return min(self.max_delay, self.first_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class TransientError(Exception):
    """Worth another attempt: connection trouble, a 5xx, a short body, a checksum mismatch."""


class PermanentError(Exception):
    """Not worth another attempt: 404, 403 and other 4xx."""


class LocalWriteError(Exception):
    """The disk, not the network: stops the whole run (the next file would fail the same way)."""


class DeadlineExceeded(TransientError):
    """The object's overall deadline passed (the next attempt, if any, finds no time left)."""


class Cancelled(Exception):
    """The run was interrupted; the current file is dropped, finished files are kept."""


def refuse_downgrade(response: httpx.Response) -> None:
    """httpx response hook (it sees every response, redirects included, before one is followed):
    a redirect from HTTPS to anything else is refused."""
    if response.has_redirect_location and response.request.url.scheme == "https":
        target = response.request.url.join(response.headers["location"])
        if target.scheme != "https":
            raise PermanentError(f"refused a redirect from HTTPS to {target.scheme.upper()} ({target.host})")


def make_client(policy: RetryPolicy, connections: int, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The download client: a bounded connection pool, timeouts, at most MAX_REDIRECTS, never to plain HTTP."""
    return httpx.Client(
        timeout=httpx.Timeout(policy.timeout, connect=min(policy.timeout, 15.0)),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        event_hooks={"response": [refuse_downgrade]},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        transport=transport,
    )


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


def stream_once(
    client: httpx.Client, url: str, dest: Path, on_bytes, stop: threading.Event, deadline: float
) -> tuple[int, str, tuple[str, ...]]:
    """One attempt: stream to `<dest>.part`, verify what can be verified, rename.
    -> (size, md5 base64, what was verified: VERIFIED_* names, possibly none)."""
    part = dest.with_name(dest.name + ".part")
    written = 0

    def count(size: int) -> None:
        nonlocal written
        written += size
        on_bytes(size)

    try:
        with client.stream(
            "GET", url, headers={"Accept-Encoding": "identity"}, timeout=attempt_timeout(client, deadline)
        ) as response:
            check_status(response)
            length, md5 = response.headers.get("content-length"), expected_md5(response)
            # `<dest>.part`, created exclusively; on a clean exit fsync'ed and renamed (the rename made
            # durable), on any exception removed.
            with local_write(dest), atomic_write(dest, "wb", temporary=part) as handle:
                digest, tail = write_body(response, handle, count, stop, deadline)
                verified = check_body(dest, written, length, md5, digest, tail)
        return written, base64.b64encode(digest.digest()).decode(), tuple(verified)
    except BaseException:
        on_bytes(-written)  # the bytes bar counts kept bytes only
        raise


def check_body(dest: Path, written: int, length: str | None, md5: bytes | None, digest, tail: bytes) -> list[str]:
    """What the body could be checked against (VERIFIED_*), or TransientError when a check fails."""
    verified = []
    if length is not None and length.strip().isdigit():
        if written != int(length):
            raise TransientError(f"incomplete body: {written} of {length.strip()} bytes")
        verified.append(VERIFIED_SIZE)
    if md5 is not None:
        if digest.digest() != md5:
            raise TransientError("MD5 mismatch: the body differs from the server's x-goog-hash")
        verified.append(VERIFIED_MD5)
    if not verified and dest.suffix.lower() == ".png":
        if tail != PNG_END:
            raise TransientError("cut off: the body does not end as a PNG does (and no size or MD5 came with it)")
        verified.append(VERIFIED_PNG_END)
    return verified


def attempt_timeout(client: httpx.Client, deadline: float) -> httpx.Timeout:
    """The client's timeouts, shortened so that no wait outlasts the object's deadline."""
    left = max(0.1, deadline - time.monotonic())
    timeout = client.timeout
    return httpx.Timeout(
        connect=min(timeout.connect or left, left),
        read=min(timeout.read or left, left),
        write=timeout.write,
        pool=timeout.pool,
    )


def write_body(response: httpx.Response, handle, count, stop: threading.Event, deadline: float):
    """Stream the raw body into `handle` (the `.part` file; `helpers.commit` fsyncs it before the rename,
    so a renamed file cannot be short after a crash). -> (its MD5, its last bytes)."""
    digest = hashlib.md5()
    tail = b""
    try:
        # each piece as it arrives (`iter_raw(n)` would gather n bytes first: a body trickling in then
        # outlasts the deadline, checked only between pieces, by as long as n bytes take to come)
        for chunk in response.iter_raw():
            if stop.is_set():
                raise Cancelled()
            if time.monotonic() > deadline:
                raise DeadlineExceeded()
            handle.write(chunk)
            digest.update(chunk)
            tail = (tail + chunk)[-len(PNG_END) :]
            count(len(chunk))
    except httpx.TransportError as exc:
        raise TransientError(f"connection lost mid-body ({describe_error(exc)})") from None
    return digest, tail


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
    text = first_line(exc, limit=1000) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fetch_object(
    client: httpx.Client, url: str, dest: Path, policy: RetryPolicy, on_bytes, stop: threading.Event
) -> tuple[int, str, tuple[str, ...]]:
    """Fetch with retries and backoff within `policy.deadline`; raises PermanentError with the last reason
    when it gives up. -> (size, md5 base64, what was verified)."""
    deadline = time.monotonic() + policy.deadline
    for attempt in range(1, policy.attempts + 1):
        try:
            return stream_once(client, url, dest, on_bytes, stop, deadline)
        except DeadlineExceeded:
            reason = "body too slow"
        except TransientError as exc:
            reason = str(exc)
        except httpx.TransportError as exc:  # could not connect, timed out before the body, ...
            reason = describe_error(exc)
        except httpx.HTTPError as exc:  # too many redirects, a malformed URL: retrying cannot help
            raise PermanentError(describe_error(exc)) from None
        delay = policy.delay(attempt)
        if time.monotonic() + delay >= deadline:
            raise PermanentError(f"{reason}; gave up at the {policy.deadline:g} s deadline for one object")
        if attempt < policy.attempts and not stop.wait(delay):
            continue
        if stop.is_set():
            raise Cancelled()
    raise PermanentError(f"{reason} (after {policy.attempts} attempts)")
