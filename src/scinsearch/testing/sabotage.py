"""A preprocessor that kills or hangs the process decoding chosen files, as a decoder that segfaults, runs out
of memory or loops would: to test that an embed run survives it."""

from __future__ import annotations

import dataclasses
import faulthandler
import os
import signal
import threading
import time
from pathlib import Path

import numpy

from scinsearch.decoding import WORKER_HEADROOM_BYTES
from scinsearch.images import decode_memory_bound
from scinsearch.preprocessing import Preprocessor

LOCK = threading.Lock()  # `lock_on`: held by the main process while a worker starts, as another thread might


@dataclasses.dataclass(frozen=True)
class SabotagedPreprocessor(Preprocessor):
    """A preprocessor whose decoding of the files named by stem kills its process with `signal_number`
    (`crash_on`), never returns (`hang_on`) or waits while the file `hold` exists (at most HOLD_SECONDS)
    and then succeeds (`pause_on`: a fine file a test can catch in flight, then release by removing `hold`,
    so that later decodes of it take no time), or asks for `HOG_BYTES` more address space than decoding
    any image may need (`hog_on`: a decoder gone wild), or takes `LOCK` (`lock_on`: a worker forked while
    another thread held a lock waits for it forever). `start_delay`: each process it is sent to takes that
    many seconds more to start (a loaded machine); `start_signal`: each such process is killed by that
    signal as it starts, before any file (a bystander the out-of-memory killer picked). Test-only: the
    product never builds one."""

    HOLD_SECONDS = 60.0
    crash_on: frozenset = frozenset()
    hang_on: frozenset = frozenset()
    pause_on: frozenset = frozenset()
    hog_on: frozenset = frozenset()
    lock_on: frozenset = frozenset()
    hold: str = ""  # for pause_on
    signal_number: int = signal.SIGKILL
    start_delay: float = 0.0
    start_signal: int = 0

    def __setstate__(self, state: dict) -> None:
        """Unpickled as a new process starts (a decode worker, a lone probe): that start is slowed or killed."""
        time.sleep(state.get("start_delay", 0.0))
        if state.get("start_signal"):
            os.kill(os.getpid(), state["start_signal"])
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @classmethod
    def around(cls, preprocessor: Preprocessor, **sabotage) -> SabotagedPreprocessor:
        return cls(**{f.name: getattr(preprocessor, f.name) for f in dataclasses.fields(Preprocessor)}, **sabotage)

    def load(self, source):
        stem = Path(source).stem
        if stem in self.crash_on:
            faulthandler.disable()  # pytest's traceback dump would only clutter the test output
            os.kill(os.getpid(), self.signal_number)
            time.sleep(60)  # a signal that does not end the process at once
        if stem in self.hang_on:
            time.sleep(3600)
        if stem in self.pause_on:
            deadline = time.monotonic() + self.HOLD_SECONDS
            while os.path.exists(self.hold) and time.monotonic() < deadline:
                time.sleep(0.01)
        if stem in self.lock_on:
            with LOCK:
                pass
        if stem in self.hog_on:  # reserved, never touched: only an address-space cap stops it
            numpy.empty(decode_memory_bound() + WORKER_HEADROOM_BYTES + 2**30, dtype=numpy.uint8)
        return super().load(source)
