"""The shared helpers: atomic writes (a failure mid-write keeps the old file; the data and the rename are
fsync'ed), an error's first line, JSON-safe values, markdown tables, and the one ImageError translation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from scinsearch import helpers
from scinsearch.errors import UNSUPPORTED_FORMAT, ScinSearchError
from scinsearch.images import ImageError


def leftovers(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_failure_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), helpers.atomic_write(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text(encoding="utf-8") == "old" and leftovers(tmp_path) == ["record.json"]


def test_a_failing_writer_by_path_leaves_the_old_file(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError), helpers.atomic_path(target) as temporary:
        temporary.write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == ["weights.bin"]


def test_a_write_replaces_the_file_and_fsyncs_the_data_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "table.csv"
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}") if os.path.exists("/proc/self") else "?"))
        return real_fsync(descriptor)

    def replace(source, destination):
        events.append(("replace", str(destination)))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert helpers.write_text_atomically(target, "a,b\n") == target
    assert target.read_text(encoding="utf-8") == "a,b\n" and leftovers(target.parent) == ["table.csv"]
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    if os.path.exists("/proc/self"):
        assert events[0][1].endswith(".tmp") and events[2][1] == str(target.parent)
    helpers.write_bytes_atomically(target, b"x")
    assert target.read_bytes() == b"x"


def test_first_line():
    assert helpers.first_line(ValueError("bad header\n  at line 3\n")) == "bad header"
    assert helpers.first_line(ValueError("")) == "ValueError"
    assert helpers.first_line(KeyError()) == "KeyError"
    assert helpers.first_line(RuntimeError("x" * 500)) == "x" * 200
    assert helpers.first_line(RuntimeError("  padded  \nmore"), limit=3) == "pad"


def test_json_safe_values_survive_strict_json():
    value = {1: np.float32(0.5), "nan": float("nan"), "inf": np.float64("inf"), "rows": (np.int64(3), [np.bool_(True)])}
    value["array"] = np.arange(3)
    safe = helpers.json_safe(value)
    assert safe == {"1": 0.5, "nan": None, "inf": None, "rows": [3, [True]], "array": [0, 1, 2]}
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
    assert type(safe["rows"][0]) is int and type(safe["1"]) is float


def test_markdown_table():
    assert helpers.markdown_table(["a", "b"], [["1", "2"], ["3", "4"]]) == [
        "| a | b |",
        "|---|---|",
        "| 1 | 2 |",
        "| 3 | 4 |",
    ]


def test_an_image_error_becomes_a_user_error_with_its_code():
    error = ImageError("TIFF images are not accepted", UNSUPPORTED_FORMAT).user_error("the photo")
    assert isinstance(error, ScinSearchError) and error.code == UNSUPPORTED_FORMAT
    assert str(error) == "cannot use the photo: TIFF images are not accepted"
    assert str(ImageError("file not found").user_error()) == "cannot use the query image: file not found"
