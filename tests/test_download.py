"""`scinsearch download` against a fake bucket on 127.0.0.1 that injects faults per object.

Nothing here reaches the internet: the bucket is `testing.write_release`, served by a threaded
`http.server` that sends `x-goog-hash` like GCS and counts every request, so tests can prove what was
(not) fetched again.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import http.server
import json
import shutil
import socket
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from scinsearch import download as dl
from scinsearch import fetch as http_fetch
from scinsearch import testing
from scinsearch.commands import download_cmds
from scinsearch.commands.download_cmds import download
from scinsearch.errors import ScinSearchError

FAST = dl.RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.02, timeout=5)


class FakeBucket:
    """What the server serves and how it misbehaves: `faults[path]` is one of
    '404', '500-once', '503' (always), 'drop-once' (half the body, then the connection closes), 'bad-md5',
    'no-hash' (no x-goog-hash), 'bare' (neither x-goog-hash nor Content-Length: the body ends when the
    connection closes), 'bare-cut-once' (bare, and half the body the first time), 'trickle' (a few
    bytes every 50 ms)."""

    def __init__(self, root: Path):
        self.root = root
        self.faults: dict[str, str] = {}
        self.requests: Counter = Counter()
        self.lock = threading.Lock()
        self.url = ""

    def reset(self, root: Path) -> None:
        self.root = root
        self.faults.clear()
        self.requests.clear()

    def count(self, path: str) -> int:
        with self.lock:
            self.requests[path] += 1
            return self.requests[path]


class BucketHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        bucket: FakeBucket = self.server.bucket
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        nth = bucket.count(path)
        fault = bucket.faults.get(path)
        file = bucket.root / path
        if fault == "404" or ".." in path.split("/") or not file.is_file():
            return self.send_error(404)
        if (fault == "500-once" and nth == 1) or fault == "503":
            return self.send_error(500 if fault == "500-once" else 503)
        body = file.read_bytes()
        md5 = hashlib.md5(b"something else" if fault == "bad-md5" else body).digest()
        bare = fault in ("bare", "bare-cut-once")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if bare:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        if fault not in ("no-hash", "bare", "bare-cut-once"):
            self.send_header("x-goog-hash", "crc32c=AAAAAA==")
            self.send_header("x-goog-hash", "md5=" + base64.b64encode(md5).decode())
        self.end_headers()
        if (fault == "drop-once" or fault == "bare-cut-once") and nth == 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "trickle":
            try:
                for start in range(0, len(body), 64):
                    self.wfile.write(body[start : start + 64])
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client gave up
                self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def release_root(tmp_path_factory) -> Path:
    """Read-only: 9 cases, ~18 images, with the real release's missing image and broken files."""
    return testing.write_release(tmp_path_factory.mktemp("bucket") / "bucket", cases=12)


@pytest.fixture(scope="module")
def server(release_root):
    bucket = FakeBucket(release_root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BucketHandler)
    httpd.daemon_threads = True
    httpd.bucket = bucket
    bucket.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)  # quick shutdown
    thread.start()
    yield bucket
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def bucket(server, release_root) -> FakeBucket:
    """The shared server, with no faults and zeroed request counts."""
    server.reset(release_root)
    return server


@pytest.fixture
def fast_retries(monkeypatch):
    """The CLI builds its own RetryPolicy: make its backoff milliseconds."""
    monkeypatch.setattr(dl.RetryPolicy, "delay", lambda self, attempt: 0.01)


def referenced_images(root: Path, case_ids: set[str] | None = None) -> list[str]:
    """Distinct image paths of the cases CSV, read independently of the code under test."""
    paths: dict[str, None] = {}
    with (root / "dataset" / "scin_cases.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if case_ids is None or row["case_id"] in case_ids:
                for n in (1, 2, 3):
                    if row[f"image_{n}_path"]:
                        paths.setdefault(row[f"image_{n}_path"], None)
    return list(paths)


def image_objects(root: Path) -> list[str]:
    return [p for p in referenced_images(root) if p != testing.MISSING_IMAGE]


def fetch(bucket: FakeBucket, to: Path, **options) -> dl.DownloadSummary:
    options = {"progress": False, "retry": FAST, "connections": 4, **options}
    return dl.download_release(to, base_url=bucket.url, **options)


def run_cli(bucket: FakeBucket, to: Path, *extra: str):
    return CliRunner().invoke(download, ["--to", str(to), "--base-url", bucket.url, "--quiet", *extra])


def assert_same_bytes(release_root: Path, to: Path, paths) -> None:
    for path in paths:
        assert (to / path).read_bytes() == (release_root / path).read_bytes(), path


def no_part_files(to: Path) -> bool:
    return not list(to.rglob("*.part"))


def test_full_download_mirrors_the_bucket(bucket, release_root, tmp_path):
    result = run_cli(bucket, tmp_path / "scin", "--connections", "4")
    assert result.exit_code == 0, result.output
    expected = image_objects(release_root)
    assert_same_bytes(release_root, tmp_path / "scin", expected + [dl.CASES_OBJECT, dl.LABELS_OBJECT])
    assert "known gap of the release" in result.output and testing.MISSING_IMAGE in result.output
    assert bucket.requests[testing.MISSING_IMAGE] == 1  # a 404 is never retried
    assert no_part_files(tmp_path / "scin")
    assert len(dl.Ledger.read(tmp_path / "scin" / dl.LEDGER_NAME)) == len(expected) + 2
    assert "complete" in result.output.splitlines()[-1]


def test_second_run_fetches_nothing(bucket, tmp_path):
    first = fetch(bucket, tmp_path)
    bucket.requests.clear()
    second = fetch(bucket, tmp_path)
    assert sorted(second.skipped) == sorted(first.downloaded) and not second.downloaded
    assert set(bucket.requests) == {testing.MISSING_IMAGE}  # only the object that is not there


def test_limit_picks_the_same_cases_every_time(bucket, release_root, tmp_path):
    first = fetch(bucket, tmp_path / "a", limit=3)
    second = fetch(bucket, tmp_path / "b", limit=3, connections=1)
    assert first.cases_selected == 3 and first.cases_total == 12
    assert sorted(first.downloaded) == sorted(second.downloaded)
    images = sorted(p for p in first.downloaded + list(first.failed) if p.startswith("dataset/images/"))
    chosen = dl.select_cases(list(csv_case_ids(release_root)), 3)
    assert images == sorted(referenced_images(release_root, chosen))
    assert (tmp_path / "a" / dl.LABELS_OBJECT).read_bytes() == (release_root / dl.LABELS_OBJECT).read_bytes()


def csv_case_ids(root: Path):
    with (root / dl.CASES_OBJECT).open(newline="", encoding="utf-8") as handle:
        return [row["case_id"] for row in csv.DictReader(handle)]


def test_select_cases_is_a_stable_hash_order():
    ids = [str(n) for n in range(100)]
    assert dl.select_cases(ids, 10) == dl.select_cases(list(reversed(ids)), 10)
    assert len(dl.select_cases(ids, 10)) == 10 and dl.select_cases(ids, None) == set(ids)


def test_404_is_reported_and_the_exit_code_is_1(bucket, release_root, tmp_path):
    missing = image_objects(release_root)[2]
    bucket.faults[missing] = "404"
    result = run_cli(bucket, tmp_path)
    assert result.exit_code == 1
    assert f"{missing}: HTTP 404" in result.output and "could not be had (1)" in result.output
    assert bucket.requests[missing] == 1 and not (tmp_path / missing).exists()


def test_incomplete_download_exits_1_through_the_real_entry_point(bucket, release_root, tmp_path, capsys):
    from scinsearch.cli import main

    bucket.faults[image_objects(release_root)[0]] = "404"
    assert main(["download", "--to", str(tmp_path), "--base-url", bucket.url, "--quiet"]) == 1
    assert "Error: download incomplete" in capsys.readouterr().err


def test_500_succeeds_on_retry(bucket, release_root, tmp_path, fast_retries):
    flaky = image_objects(release_root)[1]
    bucket.faults[flaky] = "500-once"
    result = run_cli(bucket, tmp_path)
    assert result.exit_code == 0, result.output
    assert bucket.requests[flaky] == 2
    assert_same_bytes(release_root, tmp_path, [flaky])


def test_connection_dropped_mid_body_is_retried(bucket, release_root, tmp_path):
    dropped = max(image_objects(release_root), key=lambda p: (release_root / p).stat().st_size)
    bucket.faults[dropped] = "drop-once"
    summary = fetch(bucket, tmp_path)
    assert summary.complete, summary.lines()
    assert bucket.requests[dropped] == 2
    assert_same_bytes(release_root, tmp_path, [dropped])


def test_md5_mismatch_is_reported_and_the_file_not_kept(bucket, release_root, tmp_path):
    corrupt = image_objects(release_root)[3]
    bucket.faults[corrupt] = "bad-md5"
    summary = fetch(bucket, tmp_path)
    assert not summary.complete and "MD5 mismatch" in summary.missing[corrupt]
    assert bucket.requests[corrupt] == FAST.attempts
    assert not (tmp_path / corrupt).exists() and no_part_files(tmp_path)


def test_resume_skips_complete_files_and_restarts_part_files(bucket, release_root, tmp_path):
    images = image_objects(release_root)
    complete, leftover = images[:4] + [dl.CASES_OBJECT], images[4]
    for path in complete:  # complete files, e.g. from an earlier run or gcloud (no ledger line)
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(release_root / path, tmp_path / path)
    (tmp_path / (leftover + ".part")).write_bytes(b"half a file")
    summary = fetch(bucket, tmp_path)
    assert summary.complete, summary.lines()
    assert not any(bucket.requests[path] for path in complete)
    assert bucket.requests[leftover] == 1 and sorted(summary.skipped) == sorted(complete)
    assert_same_bytes(release_root, tmp_path, images) and no_part_files(tmp_path)


def test_a_file_changed_since_it_was_recorded_is_fetched_again(bucket, release_root, tmp_path):
    fetch(bucket, tmp_path)
    truncated = image_objects(release_root)[0]
    (tmp_path / truncated).write_bytes(b"cut short")
    bucket.requests.clear()
    summary = fetch(bucket, tmp_path)
    assert summary.downloaded == [truncated]
    assert_same_bytes(release_root, tmp_path, [truncated])


def test_rerun_after_failures_fetches_only_the_rest(bucket, release_root, tmp_path):
    down = image_objects(release_root)[5:7]
    bucket.faults.update({path: "503" for path in down})
    first = fetch(bucket, tmp_path)
    assert sorted(first.missing) == sorted(down) and "HTTP 503" in first.missing[down[0]]
    bucket.faults.clear()
    bucket.requests.clear()
    second = fetch(bucket, tmp_path)
    assert second.complete and sorted(second.downloaded) == sorted(down)
    assert set(bucket.requests) == set(down) | {testing.MISSING_IMAGE}


def test_interrupted_run_loses_nothing(bucket, release_root, tmp_path, monkeypatch):
    recorded = []
    real_record = dl.Ledger.record

    def record_then_interrupt(self, path, *details):
        real_record(self, path, *details)
        recorded.append(path)
        if len(recorded) == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the images

    monkeypatch.setattr(dl.Ledger, "record", record_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch(bucket, tmp_path, connections=2)
    monkeypatch.undo()
    on_disk = [p for p in image_objects(release_root) if (tmp_path / p).exists()]
    assert set(recorded) - {dl.CASES_OBJECT, dl.LABELS_OBJECT} <= set(on_disk)
    assert_same_bytes(release_root, tmp_path, on_disk) and no_part_files(tmp_path)
    bucket.requests.clear()
    summary = fetch(bucket, tmp_path)
    assert summary.complete and not any(bucket.requests[p] for p in on_disk + recorded)
    assert_same_bytes(release_root, tmp_path, image_objects(release_root))


def test_unsafe_image_paths_are_reported_never_requested(bucket, release_root, tmp_path):
    evil_root = tmp_path / "evil-bucket"
    shutil.copytree(release_root, evil_root)
    cases = (evil_root / dl.CASES_OBJECT).read_text(encoding="utf-8")
    unsafe = ["../../outside.png", "/etc/passwd", "dataset/../../x.png", "images/x.png", "dataset\\images\\y.png"]
    for good, bad in zip(image_objects(release_root), unsafe):
        cases = cases.replace(good, bad, 1)
    (evil_root / dl.CASES_OBJECT).write_text(cases, encoding="utf-8")
    bucket.reset(evil_root)
    summary = fetch(bucket, tmp_path / "out")
    for bad in unsafe:
        assert "unsafe object path" in summary.missing[bad]
    assert not any("x.png" in path or "passwd" in path for path in bucket.requests)
    assert not (tmp_path / "outside.png").exists() and summary.downloaded


@pytest.mark.parametrize(
    "raw, ok",
    [
        ("dataset/images/-2243186711511406658.png", True),
        ("dataset/scin_cases.csv", True),
        ("../dataset/x.png", False),
        ("/dataset/x.png", False),
        ("dataset/./x.png", False),
        ("dataset//x.png", False),
        ("dataset/images/\nx.png", False),
        ("dataset", False),
        ("", False),
    ],
)
def test_safe_object_path(raw, ok):
    assert (dl.safe_object_path(raw) == raw) is ok


def test_progress_bars_do_not_break_the_run(bucket, tmp_path):
    result = CliRunner().invoke(download, ["--to", str(tmp_path), "--base-url", bucket.url, "--limit", "2"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("base_url", ["ftp://example.org/", "not a url", "http://"])
def test_bad_base_url_is_one_line(base_url, tmp_path):
    result = CliRunner().invoke(download, ["--to", str(tmp_path), "--base-url", base_url, "--quiet"])
    assert result.exit_code == 1 and result.output.startswith("Error: bad base URL")


def test_unwritable_folder_is_one_line(bucket, tmp_path):
    (tmp_path / "a-file").write_text("x")
    result = run_cli(bucket, tmp_path / "a-file" / "scin")
    assert result.exit_code == 1 and result.output.startswith("Error: cannot write to")
    assert not bucket.requests


def test_unreachable_server_is_one_line(tmp_path):
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(
        download, ["--to", str(tmp_path), "--base-url", f"http://127.0.0.1:{port}/", "--quiet", "--retries", "1"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot download") and len(result.output.strip().splitlines()) == 1


def test_garbage_cases_csv_is_a_user_error(bucket, tmp_path):
    bad_root = tmp_path / "bad-bucket"
    (bad_root / "dataset").mkdir(parents=True)
    (bad_root / dl.CASES_OBJECT).write_text("<html>not a csv</html>\n")
    (bad_root / dl.LABELS_OBJECT).write_text("case_id\n")
    bucket.reset(bad_root)
    with pytest.raises(ScinSearchError, match="lacks the column"):
        fetch(bucket, tmp_path / "out")


def test_a_malformed_row_of_the_cases_csv_loses_that_case_only(bucket, release_root, tmp_path):
    copy = shutil.copytree(release_root, tmp_path / "bucket-copy")
    cases = copy / dl.CASES_OBJECT
    lines = cases.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(2, "1234,with,too,few,fields\n")
    cases.write_text("".join(lines), encoding="utf-8")
    bucket.reset(copy)
    summary = fetch(bucket, tmp_path / "out")
    assert summary.complete and summary.cases_total == len(lines) - 2
    assert summary.lines()[0].startswith("warning: scin_cases.csv line 3: 5 fields where the header has")
    assert_same_bytes(copy, tmp_path / "out", image_objects(copy))


def test_expected_md5_reads_combined_and_repeated_headers():
    import httpx

    digest = hashlib.md5(b"x").digest()
    b64 = base64.b64encode(digest).decode()
    combined = httpx.Response(200, headers=[("x-goog-hash", f"crc32c=AAAAAA==,md5={b64}")])
    repeated = httpx.Response(200, headers=[("x-goog-hash", "crc32c=AAAAAA=="), ("x-goog-hash", f"md5={b64}")])
    assert http_fetch.expected_md5(combined) == digest == http_fetch.expected_md5(repeated)
    assert http_fetch.expected_md5(httpx.Response(200)) is None


def test_command_default_base_url_matches_the_api():
    assert download_cmds.DEFAULT_BASE_URL == dl.DEFAULT_BASE_URL


def test_prepare_after_a_limited_download_lists_only_that_subset(bucket, tmp_path):
    from scinsearch.prepare import prepare_metadata

    summary = fetch(bucket, tmp_path, limit=2)
    table = prepare_metadata(tmp_path, tmp_path / "meta.csv")
    images = {p for p in summary.downloaded if p.startswith("dataset/images/")}
    with (tmp_path / "meta.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {f"dataset/images/{row['image_path']}" for row in rows} == images and table.rows == len(images)


# ------------------------------------------------------------------ what was verified (issue 10, item 12)


def ledger_lines(to: Path) -> dict[str, dict]:
    return {entry["path"]: entry for entry in map(json.loads, (to / dl.LEDGER_NAME).read_text().splitlines())}


def test_each_file_says_what_it_was_verified_against(bucket, release_root, tmp_path):
    images = image_objects(release_root)
    bucket.faults.update({images[0]: "no-hash", images[1]: "bare", dl.LABELS_OBJECT: "bare"})
    summary = fetch(bucket, tmp_path)
    assert summary.complete
    ledger = ledger_lines(tmp_path)
    assert ledger[images[0]]["verified"] == ["size"]
    assert ledger[images[1]]["verified"] == ["png-end"]
    assert ledger[dl.LABELS_OBJECT]["verified"] == []  # a CSV without size or MD5: nothing to check it against
    assert ledger[images[2]]["verified"] == ["size", "md5"] and ledger[dl.CASES_OBJECT]["verified"] == ["size", "md5"]
    text = "\n".join(summary.lines())
    assert f"by size and md5: {len(images) - 1}" in text and "by size: 1" in text and "by png-end: 1" in text
    assert f"NOT verified (the server sent no size and no MD5): 1\n  unverified: {dl.LABELS_OBJECT}" in text
    assert_same_bytes(release_root, tmp_path, images)


def test_a_cut_off_body_without_length_or_hash_is_caught_for_images(bucket, release_root, tmp_path):
    image = image_objects(release_root)[3]
    bucket.faults[image] = "bare-cut-once"
    summary = fetch(bucket, tmp_path)
    assert summary.complete and bucket.requests[image] == 2  # the half body was refused, the retry kept
    assert_same_bytes(release_root, tmp_path, [image]) and no_part_files(tmp_path)
    assert ledger_lines(tmp_path)[image]["verified"] == ["png-end"]


def test_each_object_has_an_overall_deadline(bucket, release_root, tmp_path):
    image = image_objects(release_root)[0]
    bucket.faults[image] = "trickle"
    policy = dl.RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.02, timeout=5, deadline=1.0)
    started = time.monotonic()
    summary = fetch(bucket, tmp_path, retry=policy)
    # soon after the deadline: the slow body (~5 s at this pace) is not waited out
    assert time.monotonic() - started < 3
    assert image in summary.missing and "1 s deadline" in summary.missing[image]
    assert not (tmp_path / image).exists() and no_part_files(tmp_path)


def test_a_redirect_from_https_to_http_is_refused(tmp_path):
    import httpx

    from scinsearch.fetch import make_client

    body = b"swapped on the way"

    def ok(content: bytes) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(content), headers={"Content-Length": str(len(content))})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            return httpx.Response(302, headers={"Location": "http://mirror.example/dataset/x.csv"})
        return ok(body)

    client = make_client(FAST, 1, transport=httpx.MockTransport(handler))
    with pytest.raises(http_fetch.PermanentError, match="refused a redirect from HTTPS to HTTP"):
        http_fetch.fetch_object(
            client, "https://bucket.example/dataset/x.csv", tmp_path / "x.csv", FAST, lambda n: None, threading.Event()
        )
    assert not (tmp_path / "x.csv").exists() and not list(tmp_path.iterdir())
    # an HTTPS to HTTPS redirect (a mirror moving its files) is followed
    secure = make_client(
        FAST,
        1,
        transport=httpx.MockTransport(
            lambda r: (
                httpx.Response(301, headers={"Location": "https://cdn.example/x"})
                if r.url.host == "bucket.example"
                else ok(body)
            )
        ),
    )
    size, _, verified = http_fetch.fetch_object(
        secure, "https://bucket.example/x.csv", tmp_path / "x.csv", FAST, lambda n: None, threading.Event()
    )
    assert (tmp_path / "x.csv").read_bytes() == body and size == len(body) and verified == ("size",)
