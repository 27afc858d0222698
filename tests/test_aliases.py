"""`embed --alias`: a new versioned collection, the alias switched only after a verified run (issue 15).

Run against qdrant-client's local mode (`:memory:`), which implements aliases like the server does;
a reader holding the alias name watches from inside the embed run.
"""

from __future__ import annotations

import dataclasses

import pytest

from scinsearch.cli import main
from scinsearch.dataset import read_release
from scinsearch.errors import ScinSearchError
from scinsearch.search import Searcher
from scinsearch.search_filters import SearchOptions
from scinsearch.settings import Settings
from scinsearch.store.client import ClientStore
from scinsearch.transfer.versions import embed_into_alias, version_lines

RUN = dict(batch_size=4, workers=0, progress=False, warn=lambda message: None)


@pytest.fixture
def server():
    store = ClientStore(Settings(qdrant_location=":memory:", collection="scin"))
    yield store
    store.close()


def watch(embedder, reader, seen: list) -> None:
    """Record what a reader of the alias sees each time the embedder is handed a batch."""
    embed_batch = embedder.embed_batch

    def watched(batch):
        info = reader.info()
        seen.append((info.model if info else None, reader.count()))
        return embed_batch(batch)

    embedder.embed_batch = watched


def test_readers_see_the_old_version_until_the_new_one_is_finished_and_verified(scin_release, spy_embedder, server):
    data = read_release(scin_release)
    summary, version, previous = embed_into_alias(data, spy_embedder, server, "scin", **RUN)
    assert (version, previous) == ("scin_v1", None) and server.aliases() == {"scin": "scin_v1"}
    first_count = summary.embedded
    assert first_count > 0

    reader, seen = server.sibling("scin"), []
    spy_embedder.model_name = "spy-model-2"  # a new model: the case aliases exist for
    watch(spy_embedder, reader, seen)
    summary, version, previous = embed_into_alias(data, spy_embedder, server, "scin", **RUN)
    assert (version, previous) == ("scin_v2", "scin_v1")
    assert len(seen) > 1 and set(seen) == {("spy-model", first_count)}  # never a half-built collection
    assert reader.info().model == "spy-model-2" and reader.count() == summary.embedded
    assert server.sibling("scin_v1").count() == first_count  # the previous version is kept

    lines = version_lines(server, "scin")
    assert lines[0] == "alias 'scin' -> scin_v2"
    assert f"    scin_v1: {first_count} points, spy-model (8-d)" in lines
    assert f"  * scin_v2: {first_count} points, spy-model-2 (8-d)" in lines


def test_an_interrupted_run_keeps_the_alias_and_the_next_run_resumes_its_version(scin_release, spy_embedder, server):
    data = read_release(scin_release)
    embed_into_alias(data, spy_embedder, server, "scin", **RUN)
    spy_embedder.model_name = "spy-model-2"
    spy_embedder.fail_after = spy_embedder.images_embedded + 8
    with pytest.raises(KeyboardInterrupt):
        embed_into_alias(data, spy_embedder, server, "scin", **RUN)
    partial = server.sibling("scin_v2").count()
    assert server.aliases() == {"scin": "scin_v1"} and 0 < partial
    assert version_lines(server, "scin")[-1].endswith(f"scin_v2: {partial} points, spy-model-2 (8-d)")

    spy_embedder.fail_after = None
    summary, version, _ = embed_into_alias(data, spy_embedder, server, "scin", **RUN)
    assert version == "scin_v2" and summary.already_present == partial
    assert server.aliases() == {"scin": "scin_v2"} and "scin_v3" not in server.collection_names()


def test_a_run_that_fails_verification_does_not_move_the_alias(tmp_path, scin_release, spy_embedder, server):
    data = read_release(scin_release)
    embed_into_alias(data, spy_embedder, server, "scin", **RUN)
    missing = [dataclasses.replace(r, file=tmp_path / "gone.png") for r in data.records]
    spy_embedder.model_name = "spy-model-2"
    with pytest.raises(ScinSearchError, match="scin_v2 holds 0 points.*the alias was not moved"):
        embed_into_alias(dataclasses.replace(data, records=missing), spy_embedder, server, "scin", **RUN)
    assert server.aliases() == {"scin": "scin_v1"}


def test_searching_by_the_alias_follows_the_switch(scin_release, spy_embedder, server):
    data = read_release(scin_release)
    embed_into_alias(data, spy_embedder, server, "scin", **RUN)
    photo = data.records[0].file
    with Searcher(Settings(collection="scin"), embedder=spy_embedder, store=server.sibling("scin")) as searcher:
        before = searcher.search_image(photo, options=SearchOptions(top_k=3, per_case=False))
    assert before.results and before.results[0].score == pytest.approx(1.0, abs=1e-5)
    embed_into_alias(data, spy_embedder, server, "scin", recreate=True, **RUN)  # same model, rebuilt
    assert server.aliases() == {"scin": "scin_v2"}
    with Searcher(Settings(collection="scin"), embedder=spy_embedder, store=server.sibling("scin")) as searcher:
        after = searcher.search_image(photo, options=SearchOptions(top_k=3, per_case=False))
    assert [r.image_id for r in after.results] == [r.image_id for r in before.results]


def test_a_collection_of_the_alias_name_is_refused(scin_release, spy_embedder, server):
    server.sibling("scin").client.create_collection("scin", vectors_config=None)
    with pytest.raises(ScinSearchError, match="'scin' is a collection, not an alias"):
        embed_into_alias(read_release(scin_release), spy_embedder, server, "scin", **RUN)


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--alias needs a Qdrant server (--qdrant-url): the embedded Qdrant Edge store has no aliases"),
        (["--qdrant-url", ":memory:", "--collection", "other"], "give --alias or --collection, not both"),
    ],
)
def test_alias_mistakes_are_one_line_before_anything_is_loaded(capsys, tmp_path, scin_release, extra, message):
    code = main(
        ["embed", "--scin-dir", str(scin_release), "--qdrant-path", str(tmp_path / "q"), "--alias", "scin", *extra]
    )
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "q").exists()
