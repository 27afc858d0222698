"""A real `scinsearch serve` under attack (issue 10, "Done when"; privacy from issue 11).

One subprocess runs the `scinsearch serve` command (the CLI's own `main`, with a Python audit hook
installed first that reports every file opened for writing, every rename, mkdir and temporary file,
and every program started, to a pipe). It serves a tiny SigLIP over a small embedded store on a free
port of 127.0.0.1, with an API key from the environment, TMPDIR, HOME and the working directory
pointed at empty folders, and a fake `gs` first on PATH that records any call. Then a corpus is
thrown at it: a file in every format Pillow can write, the allowed ones cut short, an EPS comment
bomb, a PSD, a 16-bit and a float giant, zero bytes, polyglots, a PNG header claiming 30,000^2
pixels, oversize and slow bodies, a huge JSON body with and without the key, more uploads than it
takes at once. For every batch of requests:

- each answer is a 4xx (503 under overload), never a 500 and never silence; valid photos get 200;
- /health answers within 200 ms, probed again and again while each request is in flight;
- the server opened no file for writing, made no temporary file or folder and started no program
  (the audit hook: this sees a temporary file even if it is deleted again), and no file appeared or
  changed in its working directory, HOME, TMPDIR, the test's folders or the store;
- the fake `gs` was never called; the server's peak memory grew less than the stated bound
  (`ServiceSettings.memory_bound`; `images.decode_memory_bound` for one 16-bit giant).
Last, /tmp (shared with other programs, so not required to stay unchanged) holds no new file with
any sample of the bytes uploaded during the module. Privacy: a photo with a marker in its metadata
is searched (multipart and raw); its bytes never show up in the server's stdout or stderr.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import hostile_corpus as corpus
from hostile_http import send
from hostile_server import Server, Watch, holding_any, names_under, samples_of, serve_a_tiny_collection
from scinsearch.images import allowed_formats, decode_memory_bound
from scinsearch.service.settings import ServiceSettings

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc for the server's memory")

KEY = "hostile-test-key-0042"
MAX_UPLOAD_MB = 8
MAX_INFLIGHT_MB = 24
MAX_UPLOADS = 3
BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_siglip_dir):
    arguments = [
        *("--log-level", "debug", "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-inflight-mb", str(MAX_INFLIGHT_MB)),
        *("--max-uploads", str(MAX_UPLOADS), "--body-timeout", str(BODY_TIMEOUT)),
    ]
    settings = ServiceSettings(
        max_upload_bytes=MAX_UPLOAD_MB * 2**20, max_upload_bytes_in_flight=MAX_INFLIGHT_MB * 2**20
    )
    running = serve_a_tiny_collection(
        tmp_path_factory, tiny_siglip_dir, arguments, {"SCINSEARCH_API_KEY": KEY}, settings
    )
    running.basetemp = tmp_path_factory.getbasetemp()
    running.tmp_before = temporary_names(running)
    yield running
    running.stop()


def keyed(headers: dict) -> dict:
    return {"X-API-Key": KEY, **headers}


def multipart(data: bytes, filename: str = "photo.png") -> tuple[dict, bytes]:
    boundary = "b0undary-hostile"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="{filename}"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return keyed({"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(body))}), body


def raw(data: bytes, content_type: str = "image/jpeg") -> tuple[dict, bytes]:
    return keyed({"Content-Type": content_type, "Content-Length": str(len(data))}), data


def photo_search(server: Server, form: tuple[dict, bytes]):
    return lambda: send(server.port, "POST", "/search", *form, timeout=30)


# The tests ------------------------------------------------------------------------------------------------


def test_the_fake_gs_would_be_found_and_records_calls(server, tmp_path):
    found = shutil.which("gs", path=server.env["PATH"])
    assert found == str(server.folders["bin"] / "gs")
    record = tmp_path / "probe"
    subprocess.run([found, "-dBATCH"], env={**server.env, "GS_RECORD": str(record)}, check=False)
    assert record.read_text().strip() == "gs -dBATCH"


def test_every_format_pillow_writes_and_the_allowed_ones_cut_short(server):
    watch = Watch(server)
    allowed = set(allowed_formats())
    with watch.checks(server.settings.memory_bound()):
        for name, data in corpus.every_writable_format().items():
            expected = {200} if name in allowed else {400, 415}
            watch.request(f"format {name}", data, expected, photo_search(server, multipart(data, f"x.{name}")))
        for name in ("JPEG", "PNG", "WEBP", "AVIF"):
            if name not in allowed:
                continue
            for cut, data in corpus.truncations(corpus.encoded(corpus.photo(), name)).items():
                watch.request(f"{name} {cut}", data, {400}, photo_search(server, raw(data)))


def test_bombs_giants_polyglots_and_empty_files(server):
    watch = Watch(server)
    eps = corpus.eps_comment_bomb(4)
    with watch.checks(server.settings.memory_bound()):
        for form in (multipart(eps), raw(eps, "image/png")):
            answer = watch.request("EPS comment bomb", eps, {415}, photo_search(server, form))
            assert answer.seconds < 2.0, f"the EPS bomb took {answer.seconds:.1f} s to refuse"
        psd = corpus.psd_header()
        watch.request("PSD", psd, {415}, photo_search(server, multipart(psd)))
        tiff = corpus.float_tiff()
        watch.request("float TIFF giant", tiff, {415}, photo_search(server, raw(tiff, "image/tiff")))
        bomb = corpus.png_claiming(30_000, 30_000)
        watch.request("PNG claiming 30000^2", bomb, {413}, photo_search(server, multipart(bomb)))
        for name, data in corpus.polyglots().items():
            watch.request(f"polyglot {name}", data, {400, 415}, photo_search(server, multipart(data)))
        watch.request("zero bytes, multipart", b"", {400}, photo_search(server, multipart(b"")))
        watch.request("zero bytes, raw", b"", {400}, photo_search(server, raw(b"")))
        watch.request("not an image", b"MZ\x90\0" * 64, {400}, photo_search(server, raw(b"MZ\x90\0" * 64)))


def test_a_sixteen_bit_giant_stays_within_the_memory_bound_per_image(server):
    watch = Watch(server)
    giant = corpus.sixteen_bit_png()
    with watch.checks(decode_memory_bound() + 4 * len(giant)):
        watch.request("16-bit 8000x8000 PNG", giant, {200}, photo_search(server, raw(giant, "image/png")))


def test_oversize_and_slow_bodies_and_overload(server):
    watch = Watch(server)
    limit = MAX_UPLOAD_MB * 2**20
    big = os.urandom(limit + 2**20)
    with watch.checks(server.settings.memory_bound()):
        declared = watch.request("oversize, declared", big, {413}, photo_search(server, raw(big)))
        assert declared.seconds < 2.0
        chunked = [
            f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (big[i : i + 2**20] for i in range(0, len(big), 2**20))
        ]
        watch.request(
            "oversize, streamed",
            big,
            {413},
            lambda: send(
                server.port,
                "POST",
                "/search",
                keyed({"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"}),
                chunked + [b"0\r\n\r\n"],
                timeout=30,
            ),
        )
        slow_headers = keyed({"Content-Type": "image/jpeg", "Content-Length": "500000"})

        def slow():
            return send(server.port, "POST", "/search", slow_headers, [b"\xff\xd8" * 50] * 60, pause=0.1, timeout=30)

        answer = watch.request("slow body", b"", {408}, slow)
        assert BODY_TIMEOUT <= answer.seconds < BODY_TIMEOUT + 2
        stalled = [threading.Thread(target=slow) for _ in range(MAX_UPLOADS)]
        for thread in stalled:
            thread.start()
        time.sleep(0.5)
        photo = corpus.encoded(corpus.photo(), "PNG")
        over = watch.request("one upload too many", photo, {503}, photo_search(server, raw(photo, "image/png")))
        assert over.seconds < 1.0 and over.headers.get("retry-after", "").isdigit()
        for thread in stalled:
            thread.join()
        watch.request("after the overload", photo, {200}, photo_search(server, raw(photo, "image/png")))


def test_huge_json_body_with_and_without_the_key(server):
    watch = Watch(server)
    huge = {"Content-Type": "application/json", "Content-Length": str(200 * 2**20)}
    text = b'{"text": "' + b"a" * (4 * 2**20) + b'"}'
    pieces = [
        f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (text[i : i + 65536] for i in range(0, len(text), 65536))
    ]
    with watch.checks(server.settings.memory_bound()):
        for path in ("/search/text", "/search"):
            answer = watch.request(
                f"200 MB to {path}, no key", b"", {401}, lambda p=path: send(server.port, "POST", p, huge, timeout=10)
            )
            assert answer.seconds < 1.0
        answer = watch.request(
            "200 MB JSON, key", b"", {413}, lambda: send(server.port, "POST", "/search/text", keyed(huge), timeout=10)
        )
        assert answer.seconds < 1.0
        chunked = keyed({"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        watch.request(
            "4 MB JSON streamed, key",
            text,
            {413},
            lambda: send(server.port, "POST", "/search/text", chunked, pieces + [b"0\r\n\r\n"], timeout=10),
        )
        watch.request(
            "text search",
            b"",
            {200},
            lambda: send(server.port, "POST", "/search/text", *raw(b'{"text": "itchy red ring"}', "application/json")),
        )


def test_a_searched_photo_leaves_no_trace_in_output_or_on_disk(server):
    """Issue 11: a photo carrying a marker is searched twice; its bytes never reach the server's stdout,
    stderr or any file."""
    watch = Watch(server)
    photo = corpus.marked_png()
    assert corpus.PRIVACY_MARKER in photo
    printed_before = len(server.output)
    with watch.checks(server.settings.memory_bound()):
        watch.request("marked photo, multipart", photo, {200}, photo_search(server, multipart(photo)))
        watch.request("marked photo, raw", photo, {200}, photo_search(server, raw(photo, "image/png")))
        time.sleep(0.3)  # let the last log lines arrive
    printed = bytes(server.output[printed_before:])
    assert b"POST /search" in printed  # the output is being captured (access log at debug level)
    marker = corpus.PRIVACY_MARKER
    for form in (marker, marker.hex().encode(), marker.decode().encode("utf-16-le")):
        assert form not in bytes(server.output)
    for piece in (photo[40:72], photo[-40:-8]):
        assert (
            piece not in printed and piece.hex().encode() not in printed and repr(piece)[2:-1].encode() not in printed
        )


def temporary_names(server) -> set[str]:
    """The files under /tmp and under this run's temporary folders, wherever they are (tests/conftest.py puts
    them in /dev/shm where it can): the server's TMPDIR, HOME and working directory are among them. Other
    pytest runs' folders (/tmp/pytest-of-USER, often the bulk of /tmp) are not walked, unless this run's
    folders are in there."""
    sessions = Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    return names_under(Path("/tmp"), skip=sessions) | names_under(server.basetemp)


def test_last_no_upload_landed_anywhere_under_tmp(server):
    """Runs after the others (file order): every new file under /tmp and the test run's folders since the
    server was ready is searched for samples of everything uploaded to it (and the privacy marker)."""
    assert len(server.uploaded) > 50, "run the whole module: this test checks what the others uploaded"
    new = temporary_names(server) - server.tmp_before
    samples = samples_of(server.uploaded) + [corpus.PRIVACY_MARKER]
    largest = (MAX_UPLOAD_MB + 1) * 2**20
    assert holding_any(new, samples, largest) == []
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="hostile-probe-") as probe:  # the sweep does find a copy
        probe.write(b"header" + server.uploaded[0] + b"trailer")
        probe.flush()
        assert len(holding_any({probe.name}, samples, largest)) == 1
