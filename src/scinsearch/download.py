"""Download the public SCIN release from its bucket, resumably, with a bounded pool of connections.

Objects are fetched anonymously over HTTPS as `<base URL><object path>` (the bucket
`dx-scin-public-data`, objects under `dataset/`), and laid out on disk as in the bucket
(`<to>/dataset/scin_cases.csv`, `<to>/dataset/images/<id>.png`), which is what `embed --scin-dir` reads.

Why a file on disk can be trusted: every object is streamed to `<file>.part`, its size is checked
against Content-Length and its MD5 against `x-goog-hash: md5=...` (GCS sends both; a PNG that comes
with neither must at least end with its IEND chunk), it is fsync'ed and only then renamed into place.
So a file at its final name is complete, and a second run skips it without asking the server. A ledger
(`<to>/.scinsearch-download.jsonl`, one JSON line per file: path, size, MD5, and `verified`: what it
was checked against, `size`, `md5`, `png-end`, or nothing) catches files changed later (size differs:
fetched again) and keeps the MD5s for anyone who wants to re-check; the summary counts what was
verified how and names every file that could not be verified at all. Files put there by other tools
(`gcloud storage cp`) have no ledger line and are trusted as they are. A leftover `.part` is discarded and fetched again
from the start: images are about 1 MB, so byte-range resume would not pay for its complexity. The `.part`
is created anew each time, exclusively (a link planted under its name is removed, never written through),
and the ledger is opened without following a link (`helpers.create_temporary`, `helpers.open_append`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import threading
import urllib.parse
from pathlib import Path, PurePosixPath

from scinsearch import cells, dataset
from scinsearch.errors import ScinSearchError
from scinsearch.fetch import LocalWriteError, PermanentError, RetryPolicy, fetch_object, make_client
from scinsearch.helpers import create_temporary, open_append, summarised
from scinsearch.schema import KNOWN_MISSING_OBJECTS

DEFAULT_BASE_URL = "https://storage.googleapis.com/dx-scin-public-data/"
CASES_OBJECT = f"dataset/{dataset.CASES_CSV}"
LABELS_OBJECT = f"dataset/{dataset.LABELS_CSV}"
LEDGER_NAME = ".scinsearch-download.jsonl"


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
    verified: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # downloaded path -> checks
    warnings: list[str] = dataclasses.field(default_factory=list)  # e.g. malformed rows of the cases CSV

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
        lines = [f"warning: {warning}" for warning in summarised(self.warnings)]
        lines += [
            f"{self.cases_selected} of {self.cases_total} cases, {total} objects, under {self.to}",
            f"downloaded {len(self.downloaded)} ({human_bytes(self.bytes_downloaded)}), "
            f"already complete {len(self.skipped)}, not had {len(self.failed)}",
        ]
        lines += self.verification_lines()
        for path, reason in sorted(self.known_gaps.items()):
            lines.append(f"  known gap of the release (not an error): {path}: {reason}")
        if self.missing:
            lines.append(f"could not be had ({len(self.missing)}):")
            lines += [f"  {path}: {reason}" for path, reason in sorted(self.missing.items())]
            lines.append("incomplete: run the same command again to fetch only what is missing")
        else:
            lines.append("complete")
        return lines

    def verification_lines(self) -> list[str]:
        """How this run's downloads were verified, e.g. 'verified by size and md5: 17'; unverified ones by name."""
        if not self.verified:
            return []
        counts: dict[tuple[str, ...], int] = {}
        for checks in self.verified.values():
            counts[checks] = counts.get(checks, 0) + 1
        parts = [
            f"by {' and '.join(checks)}: {n}" for checks, n in sorted(counts.items(), key=lambda i: -i[1]) if checks
        ]
        lines = ["verified " + ", ".join(parts)] if parts else []
        unverified = sorted(path for path, checks in self.verified.items() if not checks)
        if unverified:
            lines.append(f"NOT verified (the server sent no size and no MD5): {len(unverified)}")
            lines += [f"  unverified: {path}" for path in unverified]
        return lines


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

    def record(self, path: str, size: int, md5: str, verified: tuple[str, ...]) -> None:
        entry = {"path": path, "size": size, "md5": md5, "verified": list(verified)}
        try:
            if self.handle is None:
                self.handle = open_append(self.path)
            self.handle.write(json.dumps(entry) + "\n")
            self.handle.flush()
        except OSError as exc:
            raise ScinSearchError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.entries[path] = entry

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


class Progress:
    """Two bars, files and bytes (no-ops when disabled); byte updates come from worker threads."""

    def __init__(self, enabled: bool):
        from tqdm import tqdm

        self.lock = threading.Lock()
        self.files = tqdm(total=0, unit="file", desc="files", position=0, dynamic_ncols=True, disable=not enabled)
        self.bytes = tqdm(
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="bytes",
            position=1,
            dynamic_ncols=True,
            disable=not enabled,
        )

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
        self.client = make_client(policy, self.connections)

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

    def fetch_one(self, path: str) -> tuple[int, str, tuple[str, ...]]:
        return fetch_object(
            self.client,
            object_url(self.base_url, path),
            self.to / path,
            self.policy,
            self.progress.add_bytes,
            self.stop,
        )

    def record(self, path: str, future: concurrent.futures.Future, summary: DownloadSummary) -> None:
        self.progress.files_done()
        try:
            size, md5, verified = future.result()
        except PermanentError as exc:
            summary.failed[path] = str(exc)
            return
        except LocalWriteError as exc:
            raise ScinSearchError(str(exc)) from None
        self.ledger.record(path, size, md5, verified)
        summary.downloaded.append(path)
        summary.verified[path] = verified
        summary.bytes_downloaded += size


def prepare_folder(to: Path) -> Path:
    """The download folder, created and checked for writing up front (one clear error, not 10k)."""
    to = Path(to).expanduser()
    try:
        (to / "dataset" / "images").mkdir(parents=True, exist_ok=True)
        probe, descriptor = create_temporary(to / "dataset" / ".scinsearch-write-test")  # never through a link
        os.close(descriptor)
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
    cases = dataset.read_csv(cases_csv, summary.warnings)
    dataset.require_columns(cases, ["case_id", "image_1_path"], cases_csv)
    rows = [row for row in cases.to_dict("records") if cells.text(row["case_id"])]
    case_ids = [cells.text(row["case_id"]) for row in rows]
    chosen = select_cases(case_ids, limit)
    summary.cases_total, summary.cases_selected = len(set(case_ids)), len(chosen)
    paths: dict[str, None] = {}
    for case_id, row in zip(case_ids, rows):
        if case_id not in chosen:
            continue
        for raw in filter(None, (cells.text(row.get(f"image_{n}_path")) for n in (1, 2, 3))):
            if safe_object_path(raw):
                paths.setdefault(raw, None)
            else:
                summary.failed[raw] = f"unsafe object path in {dataset.CASES_CSV} (case {case_id}): skipped"
    return list(paths)


def download_release(
    to: Path,
    base_url: str = DEFAULT_BASE_URL,
    limit: int | None = None,
    connections: int = 8,
    progress: bool = True,
    retry: RetryPolicy = RetryPolicy(),
) -> DownloadSummary:
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
            raise ScinSearchError(
                f"cannot download {object_url(base_url, CASES_OBJECT)}: {summary.failed[CASES_OBJECT]}"
            )
        downloader.fetch_all(image_objects(to / CASES_OBJECT, limit, summary), summary)
    finally:
        downloader.close()
    return summary
