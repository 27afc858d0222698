"""A real `scinsearch embed --workers 2` killed with SIGKILL at a random moment, then run again, ends with
exactly the points and vectors of a run that was never interrupted.

The killed run is a subprocess with the tiny SigLIP and two decode workers. Its progress bar (stderr,
updated on every batch) is the read-only way to see that points are being written while it holds the
store; the kill lands a seeded random number of images into the run, plus a random few milliseconds,
so it may fall anywhere: while a worker decodes, the model runs, or a write is in flight.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scinsearch.cli import main
from scinsearch.settings import Settings
from scinsearch.store import open_store

ROOT = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(rb"embedding:[^|\r\n]*\|[^|\r\n]*\| *(\d+)/(\d+)")
SEED = 11


def embed_arguments(release: Path, model: Path, store: Path) -> list[str]:
    return [
        "embed",
        "--scin-dir",
        str(release),
        "--model",
        str(model),
        "--qdrant-path",
        str(store),
        "--collection",
        "c",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--compile",
        "off",
        "--workers",
        "2",
        "--batch-size",
        "2",
    ]


def stored(path: Path) -> dict[str, tuple[np.ndarray, dict]]:
    store = open_store(Settings(qdrant_path=path, collection="c"))
    try:
        return {p.id: (p.vector, p.payload) for p in store.scroll(with_vectors=True)}
    finally:
        store.close()


def children(pid: int) -> list[int]:
    """The decode workers of a process (Linux /proc), to make sure none outlives the test."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def wait_gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.2)
    return False


def alive(pid: int) -> bool:
    """Any of its threads running or sleeping; a zombie waiting to be reaped holds no files. Every thread:
    the main thread turns zombie first, while the others may still be exiting, the files still open."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return True
        except (OSError, IndexError):  # that thread is gone
            pass
    return False


def kill_after(process: subprocess.Popen, images: int, delay: float, timeout: float = 600) -> tuple[int, list[int]]:
    """SIGKILL `process` once its progress bar shows at least `images` embedded, plus `delay` seconds.
    Returns the progress seen at the kill and the decode workers it had."""
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = os.read(process.stderr.fileno(), 65536)
        if not chunk:
            raise AssertionError(f"embed ended before the kill: {seen.decode(errors='replace')[-2000:]}")
        seen += chunk
        progress = PROGRESS.findall(seen)
        if progress and int(progress[-1][0]) >= images:
            time.sleep(delay)
            workers = children(process.pid)
            process.send_signal(signal.SIGKILL)  # no cleanup, no flush, no lock release
            return int(progress[-1][0]), workers
    raise AssertionError("no progress in time")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not Path("/proc").is_dir(), reason="needs POSIX and /proc")
def test_sigkill_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(
    tmp_path, clean_release, tiny_siglip_dir, capsys
):
    assert main([*embed_arguments(clean_release, tiny_siglip_dir, tmp_path / "whole"), "--quiet"]) == 0
    whole = stored(tmp_path / "whole")
    total = len(whole)
    rng = random.Random(SEED)
    target, delay = rng.randint(8, total // 2), rng.uniform(0, 0.05)

    process = subprocess.Popen(
        [sys.executable, "-m", "scinsearch", *embed_arguments(clean_release, tiny_siglip_dir, tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", TQDM_MININTERVAL="0"),
    )
    workers: list[int] = []
    try:
        progress, workers = kill_after(process, target, delay)
        assert process.wait(timeout=60) == -signal.SIGKILL
        assert len(workers) == 2, "the run had no decode workers"

        # The decode workers were forked with the store's lock file open: orphaned, they hold the lock until
        # they notice the main process is gone (each second; a rerun meanwhile gets the one-line "open in
        # another process" message). They must notice: waiting on their task pipes, they never saw it.
        assert wait_gone(workers, seconds=15), "orphaned decode workers did not exit: the store stays locked"
        survived = stored(tmp_path / "killed")
        assert 0 < len(survived) < total, (progress, len(survived))
        capsys.readouterr()
        assert main([*embed_arguments(clean_release, tiny_siglip_dir, tmp_path / "killed"), "--quiet"]) == 0
        summary = capsys.readouterr().out
        assert f"embedded {total - len(survived)}, already present {len(survived)}, failed 0" in summary
    finally:
        process.kill()
        process.wait()
        for pid in workers:  # only if the test failed before they ended by themselves
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    resumed = stored(tmp_path / "killed")
    assert resumed.keys() == whole.keys()
    for point_id, (vector, payload) in whole.items():
        np.testing.assert_allclose(resumed[point_id][0], vector, atol=1e-5)
        assert resumed[point_id][1] == payload
