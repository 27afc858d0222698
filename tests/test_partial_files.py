"""Partial files are created exclusively (issue 23): a link planted under a partial file's name is never
written through, whoever writes it (export, download, prepare, the fine-tune record, any atomic write).

Each test plants a symbolic link to a victim file where the writer puts its partial file, runs the
writer, and checks that the victim is untouched and the output is a regular file with the new content.
For writers whose temporary name is random, the name is made predictable (as an attacker who guessed it).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from scinsearch import download, fetch, helpers
from scinsearch.finetune.record import write_json
from scinsearch.prepare import prepare_metadata
from scinsearch.store import CollectionInfo, StoredPoint
from scinsearch.store.edge import EdgeStore
from scinsearch.transfer import export_parquet

SECRET = b"the victim's own content"


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def plant(link: Path, victim: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    return link


def assert_untouched(victim: Path, output: Path) -> None:
    assert victim.read_bytes() == SECRET, "written through the planted link"
    assert output.is_file() and not output.is_symlink()


@pytest.fixture
def guessed_names(monkeypatch, victim):
    """The first temporary name of every atomic write is one an attacker planted a link under."""
    real, planted = helpers.temporary_sibling, []

    def guessed(path: Path) -> Path:
        name = path.with_name(f".{path.name}.guessed.tmp")
        if name in planted:
            return real(path)
        planted.append(plant(name, victim))
        return name

    monkeypatch.setattr(helpers, "temporary_sibling", guessed)
    return planted


def test_export_to_parquet_never_writes_through_a_planted_partial_file(tmp_path, victim, guessed_names):
    store = EdgeStore(tmp_path / "q", "c")
    store.create(CollectionInfo("model-a", 4))
    vector = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    store.upsert([StoredPoint("00000000-0000-4000-8000-000000000001", {"image_id": "a"}, vector)])
    out = tmp_path / "out" / "scin.parquet"
    plant(out.with_name("scin.parquet.partial"), victim)  # the name export used before
    export_parquet(store, out, progress=False)
    store.close()
    assert_untouched(victim, out)
    assert guessed_names and pd.read_parquet(out)["image_id"].tolist() == ["a"]


def test_the_fine_tune_record_and_any_atomic_write_never_write_through_a_planted_link(tmp_path, victim, guessed_names):
    record = write_json(tmp_path / "adapter" / "record.json", {"loss": 1.0})
    assert_untouched(victim, record)
    assert json.loads(record.read_text()) == {"loss": 1.0}
    for writer in (helpers.write_bytes_atomically, helpers.write_text_atomically):
        out = writer(tmp_path / f"{writer.__name__}.out", "new" if "text" in writer.__name__ else b"new")
        assert_untouched(victim, out)
    assert len(guessed_names) == 3


def test_prepare_never_writes_through_a_planted_link(scin_release, tmp_path, victim, guessed_names):
    out = tmp_path / "flat.csv"
    prepare_metadata(scin_release, out)
    assert_untouched(victim, out)
    assert out.read_text(encoding="utf-8").startswith("image_id,")


def test_a_fixed_name_that_is_planted_again_is_refused_not_followed(tmp_path, victim, monkeypatch):
    """`<file>.part` is ours by name: a leftover is removed; a link planted between that and the creation
    makes the creation fail (O_EXCL), it is never followed."""
    real_unlink = helpers.os.unlink

    def unlink_then_replant(path):
        real_unlink(path)
        plant(Path(path), victim)

    (tmp_path / "x.png.part").write_bytes(b"a leftover of a run that was killed")
    monkeypatch.setattr(helpers.os, "unlink", unlink_then_replant)
    with (
        pytest.raises(FileExistsError),
        helpers.atomic_write(tmp_path / "x.png", "wb", temporary=tmp_path / "x.png.part"),
    ):
        pass
    assert victim.read_bytes() == SECRET and not (tmp_path / "x.png").exists()


def test_download_never_writes_through_a_planted_part_file(tmp_path, victim):
    body = b"\x89PNG the image body"
    client = fetch.make_client(
        fetch.RetryPolicy(attempts=1),
        1,
        transport=httpx.MockTransport(
            lambda r: httpx.Response(200, stream=httpx.ByteStream(body), headers={"Content-Length": str(len(body))})
        ),
    )
    dest = tmp_path / "dataset" / "images" / "1.png"
    plant(dest.with_name("1.png.part"), victim)
    size, _, verified = fetch.fetch_object(
        client,
        "https://bucket.example/dataset/images/1.png",
        dest,
        fetch.RetryPolicy(),
        lambda n: None,
        threading.Event(),
    )
    assert_untouched(victim, dest)
    assert dest.read_bytes() == body and size == len(body) and verified == (fetch.VERIFIED_SIZE,)
    assert not dest.with_name("1.png.part").exists()


def test_the_download_folder_check_and_ledger_never_follow_a_link(tmp_path, victim):
    to = tmp_path / "scin"
    plant(to / "dataset" / ".scinsearch-write-test", victim)  # the write check's old fixed name
    download.prepare_folder(to)
    assert victim.read_bytes() == SECRET
    ledger = download.Ledger(plant(to / ".scinsearch-download.jsonl", victim))
    with pytest.raises(Exception, match="cannot write"):
        ledger.record("dataset/images/1.png", 3, "md5", ("size",))
    ledger.close()
    assert victim.read_bytes() == SECRET
