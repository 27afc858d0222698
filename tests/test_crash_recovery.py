"""A run killed with SIGKILL half way, then started again, ends with exactly the right points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scinsearch.dataset import read_release
from scinsearch.settings import Settings
from scinsearch.store import open_store

ROOT = Path(__file__).resolve().parents[1]

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import SpyEmbedder
    from scinsearch.dataset import read_release
    from scinsearch.pipeline import run_embed
    from scinsearch.settings import Settings
    from scinsearch.store import open_store

    store = open_store(Settings(qdrant_path={path!r}, collection="c"))
    real_upsert = store.upsert

    def upsert_then_die(points):
        real_upsert(points)
        if store.count() >= 8:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush, no lock release

    store.upsert = upsert_then_die
    run_embed(read_release({release!r}), SpyEmbedder(), store, batch_size=4, workers=0, progress=False)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_then_rerun(tmp_path, clean_release, spy_embedder):
    script = KILLED_RUN.format(tests=str(ROOT / "tests"), path=str(tmp_path / "q"), release=str(clean_release))
    killed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = open_store(Settings(qdrant_path=tmp_path / "q", collection="c"))  # lock released by the kernel
    survived = store.count()
    assert survived == 8
    from scinsearch.pipeline import run_embed

    data = read_release(clean_release)
    summary = run_embed(data, spy_embedder, store, batch_size=4, workers=0, progress=False)
    assert summary.already_present == survived
    assert {p.id for p in store.scroll()} == {r.point_id for r in data.records}
    store.close()
