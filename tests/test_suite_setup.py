"""The suite's own housekeeping (tests/conftest.py): memory folders of killed runs are given back, and the
heaviest files are handed out first, and a worker that dies ends the run with its test named instead of
hanging it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import conftest


def test_folders_of_runs_that_died_are_removed_and_others_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "MEMORY_FOLDER", tmp_path)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(finished.stdout), conftest.os.getpid()
    for name in (f"scinsearch-tests-{dead}-abc", f"scinsearch-tests-{alive}-def", "scinsearch-tests-x", "other-1"):
        (tmp_path / name / "store").mkdir(parents=True)
    conftest.remove_folders_of_dead_runs()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "other-1",
        f"scinsearch-tests-{alive}-def",
        "scinsearch-tests-x",
    ]


def test_the_heaviest_files_come_first_and_each_file_keeps_its_order():
    def item(file: str, name: str):
        return SimpleNamespace(path=Path("tests") / file, name=name)

    heaviest, next_heaviest = conftest.HEAVIEST_FIRST[:2]
    items = [item("test_a.py", "1"), item(next_heaviest, "2"), item(heaviest, "3"), item("test_a.py", "4")]
    items += [item(heaviest, "5")]
    conftest.pytest_collection_modifyitems(None, items)
    assert [entry.name for entry in items] == ["3", "5", "2", "1", "4"]
    assert all((Path(__file__).parent / name).is_file() for name in conftest.HEAVIEST_FIRST)


ROOT = Path(__file__).resolve().parents[1]


def make_test_options() -> list[str]:
    """The pytest options of `make test`, read from the Makefile."""
    (line,) = [line for line in (ROOT / "Makefile").read_text().splitlines() if "-m pytest" in line]
    return line.split("-m pytest", 1)[1].split()


def test_a_worker_that_dies_ends_the_run_naming_its_test(tmp_path):
    """pytest-xdist 3.8 replaces a dead worker and then waits forever under --dist loadfile (its issues
    #1323, #1371): a suite whose worker was killed hung CI until its time limit, naming no test."""
    (tmp_path / "test_dies.py").write_text(
        textwrap.dedent("""
            import os, signal
            def test_killed():
                os.kill(os.getpid(), signal.SIGKILL)
            def test_after():
                pass
        """)
    )
    for number in range(5):  # more files than `make test` ever starts workers (4 at most): the case that hangs
        (tmp_path / f"test_fine_{number}.py").write_text("def test_fine():\n    pass\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *make_test_options(), "-p", "no:cacheprovider", "-c", "/dev/null"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stdout[-2000:]
    assert "crashed while running 'test_dies.py::test_killed'" in run.stdout


def test_a_dead_worker_is_reported_with_how_it_ended(capsys):
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.send_signal(signal.SIGKILL)
    node = SimpleNamespace(gateway=SimpleNamespace(id="gw7", _io=SimpleNamespace(popen=killed)))
    conftest.pytest_testnodedown(node, error="Not properly terminated")
    assert "[gw7] the worker process ended: killed by SIGKILL" in capsys.readouterr().out
