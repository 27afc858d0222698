"""A query photo decoded under a deadline and a memory cap, in a warm worker process that can be
stopped: the service's photo decoder.

Why a process: a decode inside the server cannot be stopped once libjpeg or libwebp is running, and
hostile files exist that no structural check can price exactly (issue 23: a progressive JPEG that
repeats a refinement scan costs a full pass over the image per ~100 bytes). Here one worker process,
started with the service and kept warm, decodes one photo at a time: it opens the header once, decodes
once, and hands back only what the model needs (the preprocessed pixels) and the photo's quality
checks, never the full-size picture. Its address space is capped (`resource.RLIMIT_AS`: what it holds
after start-up plus `images.decode_memory_bound`), so a decoder that asks for more gets a MemoryError
(413), not the kiosk's memory. A photo that takes longer than the deadline, or whose client has gone
away, gets the worker killed; a fresh one is started in the background. The photo travels over a
pipe, never through a file. The worker imports no torch (`scinsearch.preprocessing`), and is started
with `spawn`, never a fork of the server and its threads.

The embed run guards its own decoding the same way in `scinsearch.decoding` (a pool of workers with a
deadline, the same `limit_address_space`); this is its one-photo, request-sized counterpart.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from scinsearch import quality
from scinsearch.errors import BROKEN_IMAGE, IMAGE_TOO_LARGE, NOT_READY, ScinSearchError
from scinsearch.helpers import first_line
from scinsearch.images import MAX_PIXELS, ImageError, decode_memory_bound
from scinsearch.preprocessing import Preprocessor

DEFAULT_DECODE_TIMEOUT = 10.0  # seconds: SCIN's photos decode in ~0.03 s, a 64-MP JPEG in ~1 s
START_TIMEOUT = 120.0  # seconds a fresh worker may take to import and warm up
POLL_SECONDS = 0.05  # how often a waiting request looks at its client and the clock
log = logging.getLogger("scinsearch.service")


@dataclasses.dataclass
class PreparedPhoto:
    """What the model and the quality report need of a photo: its preprocessed arrays (one image,
    no batch axis) and its photo checks."""

    arrays: dict[str, np.ndarray]
    checks: list[quality.QualityCheck]


class DecodeCancelled(ScinSearchError):
    """The client went away while its photo was being decoded: the decode was stopped."""


def prepare_photo(
    preprocessor: Preprocessor, source: bytes | Path | Image.Image, max_pixels: int = MAX_PIXELS
) -> PreparedPhoto:
    """Decode once (header parsed once), preprocess, and run the photo checks on the same picture."""
    decoded = preprocessor.decode(source, max_pixels)
    return PreparedPhoto(preprocessor(decoded.image), quality.photo_checks(decoded.image, decoded.taken_size))


def limit_address_space(extra: int) -> None:
    """Cap this process's address space at what it maps now plus `extra` bytes (Linux; elsewhere a no-op).
    Measured after start-up, so the cap is about decoding, whatever the imports reserved."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return
    mapped = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:")), None)
    if mapped is None:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = mapped + extra if hard == resource.RLIM_INFINITY else min(mapped + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def warm_up_photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (180, 140, 120)).save(buffer, format="JPEG")
    return buffer.getvalue()


def serve_decodes(preprocessor: Preprocessor, max_pixels: int, channel) -> None:
    """The worker: warm up, cap its memory, then answer photos (bytes) with ("ok", PreparedPhoto) or
    ("error", reason, code) until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    try:
        prepare_photo(preprocessor, warm_up_photo(), max_pixels)  # imports and lazy set-up, before the cap
    except Exception as exc:  # a real photo will say what is wrong
        log.warning("photo decoder warm-up failed: %s", first_line(exc))
    limit_address_space(decode_memory_bound(max_pixels))
    channel.send(("ready", os.getpid()))
    while True:
        try:
            raw = channel.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", prepare_photo(preprocessor, raw, max_pixels))
        except ImageError as exc:
            reply = ("error", str(exc), exc.code)
        except MemoryError:
            reply = ("error", "not enough memory to decode this image", IMAGE_TOO_LARGE)
        except Exception as exc:  # whatever a decoder raises is the file's fault
            reply = ("error", f"broken image data ({first_line(exc, limit=120)})", BROKEN_IMAGE)
        channel.send(reply)


class PhotoDecoder:
    """One warm worker process decoding photos one at a time, each within `timeout` seconds."""

    START_METHOD = "spawn"  # a fresh interpreter: never a fork of the server's threads and model

    def __init__(
        self, preprocessor: Preprocessor, max_pixels: int = MAX_PIXELS, timeout: float = DEFAULT_DECODE_TIMEOUT
    ):
        self.preprocessor, self.max_pixels, self.timeout = preprocessor, max_pixels, timeout
        self.context = multiprocessing.get_context(self.START_METHOD)
        self.lock = threading.Lock()  # one photo in the worker at a time
        self.process = None
        self.channel = None
        self.closed = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the worker (if it is not running) and wait until it has warmed up."""
        with self.lock:
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self.closed or (self.process is not None and self.process.is_alive()):
            return
        ours, theirs = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=serve_decodes,
            args=(self.preprocessor, self.max_pixels, theirs),
            name="scinsearch-photo",
            daemon=True,
        )
        process.start()
        theirs.close()
        if not ours.poll(START_TIMEOUT):
            process.kill()
            process.join()
            raise ScinSearchError("the photo decoder did not start: retry in a few seconds", NOT_READY)
        ours.recv()
        self.process, self.channel = process, ours

    def prepare(self, raw: bytes, cancelled: threading.Event | None = None) -> PreparedPhoto:
        """The photo decoded and preprocessed in the worker; ImageError for a photo refused, too slow
        (the worker is killed at the deadline) or too big for the memory cap; DecodeCancelled when
        `cancelled` is set meanwhile (the worker is killed at once). Blocking: call it in a thread."""
        with self.lock:
            if cancelled is not None and cancelled.is_set():
                raise DecodeCancelled("the client went away")
            self._ensure_started()
            self.channel.send_bytes(raw)
            deadline = time.monotonic() + self.timeout
            while not self.channel.poll(POLL_SECONDS):
                if cancelled is not None and cancelled.is_set():
                    self._replace("its client went away")
                    raise DecodeCancelled("the client went away")
                if time.monotonic() > deadline:
                    self._replace(f"it overran the {self.timeout:g} s deadline")
                    raise ImageError(f"the photo took longer than {self.timeout:g} s to decode", IMAGE_TOO_LARGE)
                if not self.process.is_alive():
                    self._replace("it died")
                    raise ImageError("the decoder crashed on this photo")
            try:
                reply = self.channel.recv()
            except (EOFError, OSError):
                self._replace("it died")
                raise ImageError("the decoder crashed on this photo") from None
        if reply[0] == "ok":
            return reply[1]
        raise ImageError(reply[1], reply[2])

    def _replace(self, why: str) -> None:
        """Kill the worker (lock held) and start a fresh one in the background."""
        log.warning("photo decoder stopped: %s", why)
        self._stop()
        threading.Thread(target=self.start, name="scinsearch-photo-restart", daemon=True).start()

    def _stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.channel.close()
        self.process, self.channel = None, None

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self._stop()
