"""Creating a collection in the embedded store: a crash at any step leaves the old collection or the new
one, never a mix; a collection another process created after this store was opened is never deleted."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scinsearch.errors import ScinSearchError
from scinsearch.store import CollectionInfo
from scinsearch.store import edge as edge_module
from scinsearch.store.edge import EdgeStore
from test_store import points

ROOT = Path(__file__).resolve().parents[1]
OLD, NEW = CollectionInfo("model-old", 4), CollectionInfo("model-new", 4)


CRASHING_RECREATE = textwrap.dedent("""
    import os, sys
    from scinsearch.store import CollectionInfo
    from scinsearch.store import edge as module

    path, step = sys.argv[1], sys.argv[2]

    def die(*args, **kwargs):
        os._exit(3)  # no clean-up, no flush, no lock release: as if the power went


    def die_after(real):
        def wrapper(*args, **kwargs):
            real(*args, **kwargs)
            die()
        return wrapper


    def die_on_record(real):
        def wrapper(source, target):
            if str(target).endswith("collection.json"):
                die()
            return real(source, target)
        return wrapper


    if step == "starting to build":
        module.EdgeStore._build_shard = die
    elif step == "built, not yet committed":
        module.EdgeStore._build_shard = die_after(module.EdgeStore._build_shard)
    elif step == "committing":
        os.replace = die_on_record(os.replace)  # the record is written by helpers.atomic_path
    elif step == "committed, old shard not yet removed":
        module.shutil.rmtree = die
    store = module.EdgeStore(path, "c")
    store.create(CollectionInfo("model-new", 4), recreate=True)
    raise SystemExit("the crash did not happen")
""")
BEFORE_THE_SWAP = ["starting to build", "built, not yet committed", "committing"]
AFTER_THE_SWAP = ["committed, old shard not yet removed"]


def filled_store(path) -> None:
    store = EdgeStore(path, "c")
    store.create(OLD)
    store.upsert(points())
    store.finish_writes()
    store.close()


def on_reopening(path) -> tuple[str, int, EdgeStore]:
    store = EdgeStore(path, "c")
    return store.info().model, store.count(), store


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX")
@pytest.mark.parametrize("step", BEFORE_THE_SWAP + AFTER_THE_SWAP)
def test_a_crash_while_recreating_leaves_the_old_or_the_new_collection(tmp_path, step):
    filled_store(tmp_path)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_RECREATE, str(tmp_path), step],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    assert crashed.returncode == 3, crashed.stderr
    model, count, reopened = on_reopening(tmp_path)
    if step in BEFORE_THE_SWAP:
        assert (model, count) == ("model-old", 12)
        assert {p.id for p in reopened.scroll()} == {p.id for p in points()}
    else:
        assert (model, count) == ("model-new", 0)
    shards = [entry.name for entry in (tmp_path / "c").iterdir() if entry.name.startswith("shard")]
    assert shards == [reopened.shard_dir.name]  # what the crash left behind is gone
    assert not [entry for entry in (tmp_path / "c").iterdir() if entry.name.endswith(".tmp")]
    reopened.create(NEW, recreate=True)  # and the store works on
    reopened.upsert(points(3))
    reopened.close()
    assert on_reopening(tmp_path)[:2] == ("model-new", 3)


def test_a_collection_created_after_this_store_was_opened_is_used_not_deleted(tmp_path):
    late = EdgeStore(tmp_path, "c")  # the collection does not exist yet: nothing to lock
    assert late.info() is None
    first = EdgeStore(tmp_path, "c")
    first.create(OLD)
    first.upsert(points())
    first.finish_writes()
    first.close()
    late.create(OLD)  # the same model: resume into it
    assert late.count() == 12 and late.info().model == "model-old"
    late.close()


def test_a_collection_created_meanwhile_with_another_model_is_refused(tmp_path):
    late = EdgeStore(tmp_path, "c")
    other = EdgeStore(tmp_path, "c")
    other.create(OLD)
    other.upsert(points())
    other.close()
    with pytest.raises(ScinSearchError, match="created meanwhile by another process, with 'model-old'"):
        late.create(NEW)
    late.close()
    assert on_reopening(tmp_path)[:2] == ("model-old", 12)


def test_stores_of_the_earlier_layout_still_open_and_recreate(tmp_path):
    """Before the record named its shard, the shard was `<collection>/shard/`."""
    filled_store(tmp_path)
    folder = tmp_path / "c"
    metadata = (folder / "collection.json").read_text()
    (shard,) = [entry for entry in folder.iterdir() if entry.name.startswith("shard-")]
    os.rename(shard, folder / "shard")
    import json

    record = json.loads(metadata)
    del record[edge_module.SHARD_KEY]
    (folder / "collection.json").write_text(json.dumps(record))
    model, count, store = on_reopening(tmp_path)
    assert (model, count) == ("model-old", 12)
    store.create(NEW, recreate=True)
    store.close()
    assert on_reopening(tmp_path)[:2] == ("model-new", 0) and not (folder / "shard").exists()


def test_a_record_naming_a_folder_outside_the_collection_is_refused(tmp_path):
    filled_store(tmp_path)
    record = tmp_path / "c" / "collection.json"
    record.write_text(record.read_text().replace('"shard-', '"../../shard-'))
    with pytest.raises(ScinSearchError, match="invalid shard folder"):
        EdgeStore(tmp_path, "c")
