"""Download the public SCIN release from its bucket, resumably, with a bounded pool of connections.

Objects are fetched anonymously over HTTPS as `<base URL><object path>` (the bucket
`dx-scin-public-data`, objects under `dataset/`), and laid out on disk as in the bucket
(`<to>/dataset/scin_cases.csv`, `<to>/dataset/images/<id>.png`), which is what `embed --scin-dir` reads.

Why a file on disk can be trusted: every object is streamed to `<file>.part`, its size is checked
against Content-Length and its MD5 against `x-goog-hash: md5=...` (when the server sends one),
it is fsync'ed and only then renamed into place. So a file at its final name is complete, and a second
run skips it without asking the server. A ledger (`<to>/.scinsearch-download.jsonl`, one JSON line per
verified file: path, size, server MD5) catches files changed later (size differs: fetched again) and
keeps the MD5s for anyone who wants to re-check. Files put there by other tools (`gcloud storage cp`)
have no ledger line and are trusted as they are. A leftover `.part` is discarded and fetched again
from the start: images are about 1 MB, so byte-range resume would not pay for its complexity.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import threading
import urllib.parse
from pathlib import Path, PurePosixPath

import httpx

from scinsearch import dataset, fields
from scinsearch.errors import ScinSearchError

DEFAULT_BASE_URL = "https://storage.googleapis.com/dx-scin-public-data/"
CASES_OBJECT = f"dataset/{dataset.CASES_CSV}"
LABELS_OBJECT = f"dataset/{dataset.LABELS_CSV}"
# Referenced by case 1834609919572055750 but absent from the bucket (google-research-datasets/scin issue #1).
KNOWN_MISSING_OBJECTS = frozenset({"dataset/images/-2243186711511406658.png"})
LEDGER_NAME = ".scinsearch-download.jsonl"
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


@dataclasses.dataclass
class DownloadSummary:
    """What a run did; `complete` is False when any object other than a known gap could not be had."""

    to: Path
    base_url: str
    cases_total: int = 0
    cases_selected: int = 0
    downloaded: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    bytes_downloaded: int = 0

    @property
    def known_gaps(self) -> dict[str, str]:
        return {p: r for p, r in self.failed.items() if p in KNOWN_MISSING_OBJECTS and r.startswith("HTTP 404")}

    @property
    def missing(self) -> dict[str, str]:
        """Objects that could not be had and were expected to exist."""
        return {p: r for p, r in self.failed.items() if p not in self.known_gaps}

    @property
    def complete(self) -> bool:
        return not self.missing

    def lines(self) -> list[str]:
        total = len(self.downloaded) + len(self.skipped) + len(self.failed)
        lines = [f"{self.cases_selected} of {self.cases_total} cases, {total} objects, under {self.to}",
                 f"downloaded {len(self.downloaded)} ({human_bytes(self.bytes_downloaded)}), "
                 f"already complete {len(self.skipped)}, not had {len(self.failed)}"]
        for path, reason in sorted(self.known_gaps.items()):
            lines.append(f"  known gap of the release (not an error): {path}: {reason}")
        if self.missing:
            lines.append(f"could not be had ({len(self.missing)}):")
            lines += [f"  {path}: {reason}" for path, reason in sorted(self.missing.items())]
            lines.append("incomplete: run the same command again to fetch only what is missing")
        else:
            lines.append("complete")
        return lines


class TransientError(Exception):
    """Worth another attempt: connection trouble, a 5xx, a short body, a checksum mismatch."""


class PermanentError(Exception):
    """Not worth another attempt: 404, 403 and other 4xx."""


class LocalWriteError(Exception):
    """The disk, not the network: stops the whole run (the next file would fail the same way)."""


class Cancelled(Exception):
    """The run was interrupted; the current file is dropped, finished files are kept."""


def human_bytes(count: int) -> str:
    from tqdm import tqdm
    return tqdm.format_sizeof(count, suffix="B", divisor=1024)


def normalise_base_url(base_url: str) -> str:
    """http(s) URLs only, ending in '/', so that base + object path is the object's URL."""
    parsed = urllib.parse.urlsplit((base_url or "").strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ScinSearchError(f"bad base URL {base_url!r}: expected http(s)://host/path/")
    url = parsed.geturl()
    return url if url.endswith("/") else url + "/"


def safe_object_path(raw: str | None) -> str | None:
    """The CSV's image paths are untrusted: accept only relative `dataset/...` keys that cannot
    leave the download folder (no '..', '.', empty parts, backslashes, control characters)."""
    if not raw or "\\" in raw or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        return None
    parts = raw.split("/")
    if parts[0] != "dataset" or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        return None
    return raw if not PurePosixPath(raw).is_absolute() else None


def object_url(base_url: str, path: str) -> str:
    return base_url + urllib.parse.quote(path, safe="/")


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


def fetch_object(client: httpx.Client, url: str, dest: Path, policy: RetryPolicy, on_bytes,
                 stop: threading.Event) -> tuple[int, str]:
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


class Ledger:
    """Append-only record of verified files; written from the main thread only."""

    def __init__(self, path: Path):
        self.path = path
        self.entries = self.read(path)
        self.handle = None

    @staticmethod
    def read(path: Path) -> dict[str, dict]:
        entries: dict[str, dict] = {}
        if not path.is_file():
            return entries
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                entries[str(entry["path"])] = entry
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: the file on disk is still trusted
        return entries

    def is_complete(self, path: str, dest: Path) -> bool:
        """On disk at its final name (hence verified when written) and, if recorded, of the recorded size."""
        if not dest.is_file():
            return False
        entry = self.entries.get(path)
        return entry is None or entry.get("size") == dest.stat().st_size

    def record(self, path: str, size: int, md5: str) -> None:
        try:
            if self.handle is None:
                self.handle = self.path.open("a", encoding="utf-8")
            self.handle.write(json.dumps({"path": path, "size": size, "md5": md5}) + "\n")
            self.handle.flush()
        except OSError as exc:
            raise ScinSearchError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.entries[path] = {"path": path, "size": size, "md5": md5}

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


class Progress:
    """Two bars, files and bytes (no-ops when disabled); byte updates come from worker threads."""

    def __init__(self, enabled: bool):
        from tqdm import tqdm
        self.lock = threading.Lock()
        self.files = tqdm(total=0, unit="file", desc="files", position=0, dynamic_ncols=True, disable=not enabled)
        self.bytes = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="bytes", position=1,
                          dynamic_ncols=True, disable=not enabled)

    def add_total(self, count: int) -> None:
        self.files.total += count
        self.files.refresh()

    def add_bytes(self, count: int) -> None:
        with self.lock:
            self.bytes.update(count)

    def files_done(self, count: int = 1) -> None:
        if count:
            self.files.update(count)

    def close(self) -> None:
        self.files.close()
        self.bytes.close()


class Downloader:
    """One run: a client with a bounded connection pool, a thread pool of the same size, a ledger."""

    def __init__(self, to: Path, base_url: str, connections: int, policy: RetryPolicy, progress: bool):
        self.to, self.base_url, self.policy = to, base_url, policy
        self.connections = max(1, connections)
        self.ledger = Ledger(to / LEDGER_NAME)
        self.progress = Progress(progress)
        self.stop = threading.Event()
        self.client = httpx.Client(
            timeout=httpx.Timeout(policy.timeout, connect=min(policy.timeout, 15.0)), follow_redirects=True,
            limits=httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections))

    def close(self) -> None:
        self.client.close()
        self.progress.close()
        self.ledger.close()

    def fetch_all(self, paths: list[str], summary: DownloadSummary) -> None:
        """Skip complete files, fetch the rest in parallel; record each outcome in `summary`."""
        todo = [path for path in paths if not self.ledger.is_complete(path, self.to / path)]
        pending = set(todo)
        summary.skipped += [path for path in paths if path not in pending]
        self.progress.add_total(len(paths))
        self.progress.files_done(len(paths) - len(todo))
        with concurrent.futures.ThreadPoolExecutor(self.connections, thread_name_prefix="scin-download") as pool:
            futures = {pool.submit(self.fetch_one, path): path for path in todo}
            try:
                for future in concurrent.futures.as_completed(futures):
                    self.record(futures[future], future, summary)
            except BaseException:
                self.stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def fetch_one(self, path: str) -> tuple[int, str]:
        return fetch_object(self.client, object_url(self.base_url, path), self.to / path, self.policy,
                            self.progress.add_bytes, self.stop)

    def record(self, path: str, future: concurrent.futures.Future, summary: DownloadSummary) -> None:
        self.progress.files_done()
        try:
            size, md5 = future.result()
        except PermanentError as exc:
            summary.failed[path] = str(exc)
            return
        except LocalWriteError as exc:
            raise ScinSearchError(str(exc)) from None
        self.ledger.record(path, size, md5)
        summary.downloaded.append(path)
        summary.bytes_downloaded += size


def prepare_folder(to: Path) -> Path:
    """The download folder, created and checked for writing up front (one clear error, not 10k)."""
    to = Path(to).expanduser()
    try:
        (to / "dataset" / "images").mkdir(parents=True, exist_ok=True)
        probe = to / "dataset" / ".scinsearch-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ScinSearchError(f"cannot write to {to}: {exc.strerror or exc}") from None
    return to


def select_cases(case_ids: list[str], limit: int | None) -> set[str]:
    """`limit` cases chosen by the SHA-256 of their id (smallest first), not file order: the same
    subset every time, spread over the whole release, unchanged if the CSV is reordered."""
    unique = list(dict.fromkeys(case_ids))
    if limit is None or limit >= len(unique):
        return set(unique)
    return set(sorted(unique, key=lambda c: hashlib.sha256(f"scin-subset:{c}".encode()).hexdigest())[:limit])


def image_objects(cases_csv: Path, limit: int | None, summary: DownloadSummary) -> list[str]:
    """The distinct, validated image paths of the selected cases, in file order."""
    cases = dataset.read_csv(cases_csv)
    dataset.require_columns(cases, ["case_id", "image_1_path"], cases_csv)
    rows = [row for row in cases.to_dict("records") if fields.text(row["case_id"])]
    case_ids = [fields.text(row["case_id"]) for row in rows]
    chosen = select_cases(case_ids, limit)
    summary.cases_total, summary.cases_selected = len(set(case_ids)), len(chosen)
    paths: dict[str, None] = {}
    for case_id, row in zip(case_ids, rows):
        if case_id not in chosen:
            continue
        for raw in filter(None, (fields.text(row.get(f"image_{n}_path")) for n in (1, 2, 3))):
            if safe_object_path(raw):
                paths.setdefault(raw, None)
            else:
                summary.failed[raw] = f"unsafe object path in {dataset.CASES_CSV} (case {case_id}): skipped"
    return list(paths)


def download_release(to: Path, base_url: str = DEFAULT_BASE_URL, limit: int | None = None,
                     connections: int = 8, progress: bool = True,
                     retry: RetryPolicy = RetryPolicy()) -> DownloadSummary:
    """Fetch both CSVs whole, then the images of every case (or of `limit` cases, see `select_cases`).

    Raises ScinSearchError when nothing sensible can be done (bad URL, unwritable folder, cases CSV
    unobtainable or unreadable); everything else ends up in the summary."""
    base_url = normalise_base_url(base_url)
    if limit is not None and limit < 0:
        raise ScinSearchError(f"--limit must be zero or more, not {limit}")
    to = prepare_folder(to)
    summary = DownloadSummary(to=to, base_url=base_url)
    downloader = Downloader(to, base_url, connections, retry, progress)
    try:
        downloader.fetch_all([CASES_OBJECT, LABELS_OBJECT], summary)
        if CASES_OBJECT in summary.failed:
            raise ScinSearchError(f"cannot download {object_url(base_url, CASES_OBJECT)}: "
                                  f"{summary.failed[CASES_OBJECT]}")
        downloader.fetch_all(image_objects(to / CASES_OBJECT, limit, summary), summary)
    finally:
        downloader.close()
    return summary
