"""The suite's own housekeeping (tests/conftest.py): memory folders of killed runs are given back, and the
heaviest files are handed out first."""

from __future__ import annotations

import subprocess
import sys
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
