"""A real `scinsearch serve` against decoder time bombs, memory bombs and idle sockets (issue 23).

One server (the machinery of tests/test_hostile_service.py: audit hook, private folders, peak memory)
runs with a short decode deadline, a small connection limit and a short header deadline, and gets:
- a progressive JPEG repeating a refinement scan as often as the scan limit allows, so that it decodes
  for longer than the deadline: refused at the deadline (the decoder process is killed and replaced),
  while a text search answers within a few seconds and /health within 200 ms;
- the same photo from a client that hangs up mid-decode: the decode is stopped at once;
- a JPEG flood of comment segments and the 8000x8000 lossless WebP: refused from their structure, the
  server's and the decoder's peak memory within the documented bounds; and (the decoder alone) a WebP at
  the canvas limit decodes within `images.decode_memory_bound`;
- more idle sockets than the connection limit, and a client that never finishes its headers: /health
  still answers, and the slow client is cut off at the header deadline.
The files are built in memory at the smallest size that shows each effect.
"""

from __future__ import annotations

import functools
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

import hostile_corpus as corpus
from hostile_http import health_seconds, send
from hostile_server import Watch, serve_a_tiny_collection
from scinsearch.image_structure import MAX_JPEG_SCANS
from scinsearch.images import decode_memory_bound
from scinsearch.photo_worker import PhotoDecoder
from scinsearch.preprocessing import Preprocessor
from scinsearch.service.settings import ServiceSettings

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc for the processes' memory")

# Well under the slow JPEG's decode: ~1.3 s on a quiet Xeon with AVX-512 (a 1.5 s deadline let it through
# there), ~5.6 s on two shared cores.
DECODE_TIMEOUT = 0.75
MAX_CONNECTIONS = 6
HEADER_TIMEOUT = 2.0
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_siglip_dir):
    arguments = [
        *("--log-level", "info", "--decode-timeout", str(DECODE_TIMEOUT)),
        *("--max-connections", str(MAX_CONNECTIONS), "--header-timeout", str(HEADER_TIMEOUT)),
    ]
    running = serve_a_tiny_collection(tmp_path_factory, tiny_siglip_dir, arguments, {}, ServiceSettings())
    yield running
    running.stop()


@functools.lru_cache(maxsize=1)
def slow_jpeg() -> bytes:
    """6000x6000, as many scans as the limit allows: 1.3 s (quiet, AVX-512) to several seconds of decoding, 320 KB."""
    return corpus.repeated_scan_jpeg((6000, 6000), scans_in_all=MAX_JPEG_SCANS)


def raw(data: bytes, content_type: str = "image/jpeg") -> tuple[dict, bytes]:
    return {"Content-Type": content_type, "Content-Length": str(len(data))}, data


def text_search(port: int):
    body = b'{"text": "itchy red ring"}'
    return send(port, "POST", "/search/text", {**JSON, "Content-Length": str(len(body))}, body, timeout=20)


def test_a_photo_decoding_past_the_deadline_is_stopped_and_blocks_no_search(server):
    decoder = server.decoder_pid()
    form = raw(slow_jpeg())
    assert text_search(server.port).status == 200  # the text tower warm, for a fair timing below
    answers = {}
    upload = threading.Thread(
        target=lambda: answers.setdefault("photo", send(server.port, "POST", "/search", *form, timeout=30))
    )
    upload.start()
    time.sleep(0.5)
    text = text_search(server.port)
    health = health_seconds(server.port)
    upload.join()
    photo = answers["photo"]
    assert text.status == 200 and text.seconds < 3.0, (text.status, text.seconds)
    assert health < 0.2
    assert photo.status == 413 and f"longer than {DECODE_TIMEOUT:g} s" in photo.json()["detail"], photo.body
    assert photo.seconds < DECODE_TIMEOUT + 2.0, photo.seconds
    server.decoder_pid(wait=30, other_than=decoder)  # killed and replaced
    fine = corpus.encoded(corpus.photo((96, 72)), "JPEG")
    assert send(server.port, "POST", "/search", *raw(fine), timeout=60).status == 200


def test_a_client_that_hangs_up_stops_its_decode(server):
    decoder = server.decoder_pid()
    marker = len(server.output)
    headers, body = raw(slow_jpeg())
    head = "POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        time.sleep(0.3)  # the decode is under way
    deadline = time.monotonic() + DECODE_TIMEOUT
    while b"client went away" not in server.output[marker:] and time.monotonic() < deadline:
        time.sleep(0.05)
    log = bytes(server.output[marker:]).decode(errors="replace")
    assert "photo decoder stopped: its client went away" in log, log
    assert "overran" not in log
    server.decoder_pid(wait=30, other_than=decoder)  # a fresh decoder took the stopped one's place


def test_structure_bombs_are_refused_within_the_memory_bounds(server):
    watch = Watch(server)
    flood = corpus.comment_flood_jpeg(200_000)  # 800 KB; the attack used 4 million (16 MB)
    webp = corpus.lossless_webp(8000)
    decoder = server.decoder_pid()
    Path(f"/proc/{decoder}/clear_refs").write_text("5")
    decoder_before = server.memory("VmRSS", decoder)
    with watch.checks(server.settings.memory_bound()):
        answer = watch.request("comment flood", flood, {413}, lambda: send(server.port, "POST", "/search", *raw(flood)))
        assert answer.seconds < 2.0 and "marker segments" in answer.json()["detail"]
        answer = watch.request(
            "8000^2 lossless WebP", webp, {413}, lambda: send(server.port, "POST", "/search", *raw(webp, "image/webp"))
        )
        assert "WebP" in answer.json()["detail"]
    assert server.decoder_pid() == decoder
    grown = server.memory("VmHWM", decoder) - decoder_before
    assert grown < decode_memory_bound(), f"the decoder's peak memory grew by {grown / 2**20:.0f} MiB"


def test_a_webp_at_the_canvas_limit_decodes_within_the_memory_bound():
    """The photo decoder alone (no server: a loaded machine must not turn this into a deadline test)."""
    at_limit = corpus.lossless_webp(4000)  # 16 MP: the canvas limit at the default 64 MP
    decoder = PhotoDecoder(Preprocessor("fixed", 16, 3, 1 / 255, (0.5,) * 3, (0.5,) * 3), timeout=120)
    try:
        decoder.start()
        status = Path(f"/proc/{decoder.pid}/status")
        before = vm_field(status, "VmRSS")
        Path(f"/proc/{decoder.pid}/clear_refs").write_text("5")
        assert decoder.prepare(at_limit).arrays["pixels"].shape == (16, 16, 3)
        grown = vm_field(status, "VmHWM") - before
    finally:
        decoder.close()
    assert grown < decode_memory_bound(), f"the decoder's peak memory grew by {grown / 2**20:.0f} MiB"


def vm_field(status: Path, field: str) -> int:
    line = next(line for line in status.read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def test_idle_sockets_cannot_starve_health(server):
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS + 4)]
    try:
        time.sleep(0.3)
        for _ in range(3):
            answer = send(server.port, "GET", "/health", timeout=5)
            assert answer.status == 200 and answer.seconds < 1.0, answer
    finally:
        for sock in idle:
            sock.close()


def test_a_client_that_never_finishes_its_headers_is_cut_off(server):
    with socket.create_connection(("127.0.0.1", server.port)) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        slow.settimeout(HEADER_TIMEOUT + 3)
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the server, with no answer
        assert HEADER_TIMEOUT - 0.5 < time.monotonic() - started < HEADER_TIMEOUT + 1
