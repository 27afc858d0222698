"""The embed job: resumable, nothing embedded twice, broken images named, model mixing refused."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from scinsearch import schema
from scinsearch.dataset import read_release
from scinsearch.errors import ScinSearchError
from scinsearch.pipeline import run_embed
from scinsearch.store import open_store

BROKEN = {"file not found", "empty file", "not an image file"}


def embed(data, embedder, store, **options):
    return run_embed(
        data,
        embedder,
        store,
        batch_size=options.pop("batch_size", 4),
        workers=options.pop("workers", 0),
        progress=False,
        warn=lambda message: None,
        **options,
    )


def test_embeds_each_distinct_image_once_and_names_broken_files(scin_release, spy_embedder, store):
    data = read_release(scin_release)
    summary = embed(data, spy_embedder, store)
    reasons = {reason.split(" (")[0] for _, reason in summary.failed}
    assert BROKEN <= reasons and any(r.startswith("broken image data") for r in reasons)
    assert summary.embedded == len(data.records) - len(summary.failed) == store.count()
    assert spy_embedder.images_embedded == summary.embedded
    assert any("-2243186711511406658.png" in path for path, _ in summary.failed)


def test_rerun_embeds_nothing_twice(scin_release, spy_embedder, store):
    data = read_release(scin_release)
    first = embed(data, spy_embedder, store)
    again = embed(data, spy_embedder, store)
    assert again.embedded == 0 and again.already_present == first.embedded
    assert spy_embedder.images_embedded == first.embedded
    assert store.count() == first.embedded


def test_limit_then_full_run_resumes(scin_release, spy_embedder, store):
    data = read_release(scin_release)
    embed(data, spy_embedder, store, limit=5)
    partial = store.count()
    full = embed(data, spy_embedder, store)
    assert full.already_present == partial
    assert spy_embedder.images_embedded == store.count()


def test_run_killed_half_way_ends_with_exactly_the_right_points(scin_release, spy_embedder, store_settings):
    data = read_release(scin_release)
    store = open_store(store_settings)
    spy_embedder.fail_after = 6
    with pytest.raises(KeyboardInterrupt):
        embed(data, spy_embedder, store, batch_size=3)
    assert 0 < store.count() < len(data.records)
    spy_embedder.fail_after = None
    summary = embed(data, spy_embedder, store, batch_size=3)
    ids = {p.id for p in store.scroll()}
    expected = {r.point_id for r in data.records} - {
        r.point_id for r in data.records if any(str(r.file) == path for path, _ in summary.failed)
    }
    assert ids == expected
    store.close()


def test_parallel_workers_give_the_same_vectors(scin_release, spy_embedder, tmp_path):
    from scinsearch.settings import Settings

    data = read_release(scin_release)
    stores = [open_store(Settings(qdrant_path=tmp_path / name, collection="c")) for name in ("serial", "parallel")]
    embed(data, spy_embedder, stores[0], workers=0)
    embed(data, spy_embedder, stores[1], workers=2)
    vectors = [{p.id: p.vector for p in s.scroll(with_vectors=True)} for s in stores]
    assert vectors[0].keys() == vectors[1].keys()
    for key in vectors[0]:
        np.testing.assert_allclose(vectors[0][key], vectors[1][key], atol=1e-6)
    for s in stores:
        s.close()


def test_other_model_is_refused_unless_recreate(clean_release, spy_embedder, store):
    data = read_release(clean_release)
    embed(data, spy_embedder, store, limit=4)
    spy_embedder.model_name = "another-model"
    with pytest.raises(ScinSearchError, match="would mix models"):
        embed(data, spy_embedder, store)
    summary = embed(data, spy_embedder, store, limit=3, recreate=True)
    assert summary.embedded == 3 and store.count() == 3 and store.info().model == "another-model"


def test_store_failure_is_one_clear_error_and_keeps_what_was_stored(clean_release, spy_embedder, store):
    data = read_release(clean_release)
    embed(data, spy_embedder, store, limit=4)
    real_upsert, calls = store.upsert, []

    def failing_upsert(points):
        calls.append(len(points))
        if len(calls) > 1:
            raise RuntimeError("disk full")
        real_upsert(points)

    store.upsert = failing_upsert
    with pytest.raises(ScinSearchError, match="disk full.*run again to resume"):
        embed(data, spy_embedder, store, batch_size=2)
    # the first run's 4, and the one batch of 2 written before the failure: not one point more or less
    assert {p.id for p in store.scroll()} == {r.point_id for r in data.records[:6]}


PYTHON_TYPES = {
    "keyword": str,
    "text": str,
    "integer": int,
    "bool": bool,
    "dict": dict,
    "keyword[]": list,
    "integer[]": list,
    "checkboxes": list,
}


def test_payload_is_typed_as_the_schema_declares_and_filled(clean_release, spy_embedder, store):
    """Every stored value has its declared type (no NaN, no numbers as text), every required field is
    there, and none is empty on every point. (The values themselves: tests/test_payload_reference.py.)"""
    data = read_release(clean_release)
    embed(data, spy_embedder, store)
    payloads = [point.payload for point in store.scroll()]
    assert len(payloads) == len(data.records)
    for payload in payloads:
        assert set(schema.REQUIRED_FIELDS) <= payload.keys()
        for name, value in payload.items():
            kind = schema.BY_NAME[name].type
            if value is None:
                continue
            assert isinstance(value, PYTHON_TYPES[kind]) and not (kind == "integer" and isinstance(value, bool)), name
            if kind in ("keyword[]", "checkboxes"):
                assert all(isinstance(item, str) and item for item in value), name
            if kind == "integer[]":
                assert all(isinstance(item, int) and not isinstance(item, bool) for item in value), name
            if kind == "dict":
                assert all(isinstance(k, str) and isinstance(w, float) and w >= 0 for k, w in value.items()), name
        assert payload["split"] in schema.SPLITS
    for name in schema.REQUIRED_FIELDS:
        assert any(payload[name] not in (None, "", [], {}) for payload in payloads), f"{name} is empty everywhere"


def test_a_collection_of_another_vector_size_is_refused(clean_release, spy_embedder, store):
    """Same model name, other size (e.g. a checkpoint swapped under the same folder name): refused too."""
    from scinsearch.store import CollectionInfo

    store.create(CollectionInfo(spy_embedder.model_name, 16))
    with pytest.raises(ScinSearchError) as refused:
        embed(read_release(clean_release), spy_embedder, store)
    assert str(refused.value) == (
        "collection 'test' holds 16-d vectors of 'spy-model'; embedding with 'spy-model' (8-d) would mix "
        "models: use another --collection, or --recreate to start it over"
    )
    assert store.count() == 0 and spy_embedder.images_embedded == 0 and store.info().dim == 16


# ------------------------------------------------------------------ throughput plumbing (issue 7)


def count_decodes(monkeypatch) -> list:
    """Count real decodes in this process (workers=0): every call of the decode-and-resize function."""
    from scinsearch import preprocessing

    calls = []
    real = preprocessing.load_square

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(preprocessing, "load_square", counting)
    return calls


def test_pixel_cache_second_model_decodes_nothing(clean_release, spy_embedder, tmp_path, monkeypatch):
    from scinsearch.pixel_cache import PixelCache
    from scinsearch.settings import Settings

    data = read_release(clean_release)
    cache = PixelCache(tmp_path / "pixels")
    decodes = count_decodes(monkeypatch)
    stores = [open_store(Settings(qdrant_path=tmp_path / name, collection="c")) for name in ("first", "second")]
    first = embed(data, spy_embedder, stores[0], cache=cache)
    assert first.decoded == len(decodes) == len(data.records) and first.from_cache == 0
    spy_embedder.model_name = "a-second-model"  # same input size: the same pixels serve it
    second = embed(data, spy_embedder, stores[1], cache=cache)
    assert len(decodes) == len(data.records), "the second model decoded images again"
    assert second.decoded == 0 and second.from_cache == second.embedded == len(data.records)
    assert any("from the cache" in line for line in second.lines())
    vectors = [{p.id: p.vector for p in s.scroll(with_vectors=True)} for s in stores]
    for key in vectors[0]:
        np.testing.assert_array_equal(vectors[0][key], vectors[1][key])
    for s in stores:
        s.close()


def test_pixel_cache_in_worker_processes_and_with_broken_files(scin_release, spy_embedder, tmp_path):
    from scinsearch.pixel_cache import PixelCache
    from scinsearch.settings import Settings

    data = read_release(scin_release)
    cache = PixelCache(tmp_path / "pixels")
    stores = [open_store(Settings(qdrant_path=tmp_path / name, collection="c")) for name in ("first", "second")]
    first = embed(data, spy_embedder, stores[0], cache=cache, workers=2)
    second = embed(data, spy_embedder, stores[1], cache=cache, workers=2)
    assert first.decoded == first.embedded > 0 and second.decoded == 0 and second.from_cache == first.embedded
    assert sorted(second.failed) == sorted(first.failed) and first.failed  # broken files: never cached, still named
    assert not list((tmp_path / "pixels").rglob("*.tmp"))
    for s in stores:
        s.close()


def test_pixel_cache_survives_corrupt_and_stale_entries(tmp_path):
    import os

    from scinsearch.pixel_cache import PixelCache

    image = tmp_path / "a.png"
    image.write_bytes(b"pretend image")
    cache = PixelCache(tmp_path / "pixels")
    pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    cache.put(image, "square8", pixels)
    np.testing.assert_array_equal(cache.get(image, "square8", (8, 8, 3)), pixels)
    assert cache.get(image, "square16", (8, 8, 3)) is None  # another size or filter: another key
    assert cache.get(image, "square8", (16, 16, 3)) is None  # unexpected shape: a miss
    entry = cache.entry(image, "square8")
    entry.write_bytes(entry.read_bytes()[:50])  # a torn file, e.g. a full disk
    assert cache.get(image, "square8", (8, 8, 3)) is None
    cache.put(image, "square8", pixels)
    np.testing.assert_array_equal(cache.get(image, "square8", (8, 8, 3)), pixels)
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed: its old pixels are stale
    assert cache.get(image, "square8", (8, 8, 3)) is None
    assert cache.get(tmp_path / "missing.png", "square8", (8, 8, 3)) is None


def test_model_batches_are_full_whatever_the_decode_chunks(clean_release, spy_embedder, store):
    data = read_release(clean_release)
    summary = embed(data, spy_embedder, store, batch_size=20, workers=2)
    sizes = spy_embedder.embedded_batches
    assert sum(sizes) == summary.embedded == len(data.records)
    assert all(size == 20 for size in sizes[:-1]) and 0 < sizes[-1] <= 20


def test_the_run_prepares_for_the_images_left_to_embed(clean_release, tiny_siglip_dir, store, monkeypatch):
    """The real Embedder decides to compile from the images still to embed (not the data set's size);
    its note reaches the log; a run with nothing to do prepares nothing."""
    import torch

    from scinsearch import embedding

    monkeypatch.setattr(embedding, "COMPILE_MIN_IMAGES", 12)
    monkeypatch.setattr(embedding, "compiler_available", lambda: True)
    attempts = []

    def no_compiler(function, **options):  # an attempt is all this test needs to see
        attempts.append(options)
        raise RuntimeError("no compiler on this kiosk")

    monkeypatch.setattr(torch, "compile", no_compiler)
    embedder = embedding.Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="auto")
    data, notes = read_release(clean_release), []

    def run(limit):
        return run_embed(data, embedder, store, batch_size=4, workers=0, limit=limit, progress=False, warn=notes.append)

    run(10)  # 10 to embed: below 12, eager
    run(16)  # a run of 16 images, but 6 left to embed: still eager
    assert attempts == [] and notes == [] and not embedder.compiled and store.count() == 16
    summary = run(40)  # 24 left: compile is attempted, fails, and the run goes on eagerly
    assert len(attempts) == 1 and summary.embedded == 24 and store.count() == 40
    assert notes == ["torch.compile failed, running eager (RuntimeError: no compiler on this kiosk)"]
    run(40)  # nothing left to embed
    assert len(attempts) == 1 and len(notes) == 1


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX priorities")
def test_cpu_decode_workers_really_run_at_low_priority(clean_release, spy_embedder):
    """make_loader installs the hook, and the worker processes it starts do run at the lowest priority."""
    import torch

    from scinsearch import pipeline

    records = read_release(clean_release).records
    loader = pipeline.make_loader(records, spy_embedder, workers=2, cache=None, chunk=4)
    iterator = iter(loader)
    assert next(iterator).indices == [0, 1, 2, 3]
    workers = [worker.pid for worker in iterator._workers]
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + pipeline.DECODE_NICENESS)
    deadline = time.monotonic() + 20  # the second worker may still be starting (it lowers itself first thing)
    while [os.getpriority(os.PRIO_PROCESS, pid) for pid in workers] != [expected] * 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) == 2 and [os.getpriority(os.PRIO_PROCESS, pid) for pid in workers] == [expected] * 2
    assert os.getpriority(os.PRIO_PROCESS, 0) < expected  # the model's process keeps its priority
    iterator._shutdown_workers()
    spy_embedder.device = torch.device("cuda")  # with a GPU the workers feed it: normal priority
    assert pipeline.make_loader(records, spy_embedder, workers=2, cache=None, chunk=4).worker_init_fn is None


def test_decode_workers_follow_the_cpu_set_not_the_host(monkeypatch):
    """In a container (or under taskset) os.cpu_count() counts the host's cores: the affinity mask decides."""
    from scinsearch import pipeline

    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 128)
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert pipeline.default_workers("cpu") == 16 and pipeline.default_workers("cuda") == 15
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: set(range(100)), raising=False)
    assert pipeline.default_workers("cpu") == pipeline.MAX_WORKERS  # capped


def test_batcher_regroups_chunks_in_order_and_stages_into_alternating_pinned_buffers(monkeypatch):
    import torch

    from scinsearch.pipeline import Batcher, DecodedChunk

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)  # no CUDA here: stand-in for page-locking

    def chunk(start, count):
        pixels = torch.arange(start, start + count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 2, 2, 3)
        return DecodedChunk(list(range(start, start + count)), {"pixels": pixels.contiguous()}, [], 0)

    for pin in (False, True):
        batcher, seen = Batcher(batch_size=5, pin=pin), []
        chunks = (chunk(0, 3), chunk(3, 4), DecodedChunk([], None, [(7, "broken")], 0), chunk(7, 6))
        # consumed as they come, as run_embed does: a staged batch is valid until the next-but-one is staged
        for generator in [*(batcher.add(c) for c in chunks), batcher.flush()]:
            for indices, arrays in generator:
                assert arrays["pixels"][:, 0, 0, 0].tolist() == indices
                seen.append(indices)
        assert seen == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12]]
        if pin:
            buffers = next(iter(batcher.buffers.values()))
            assert len(buffers) == 2  # two page-locked buffers, used in turn, whatever the number of batches


def test_embed_command_cache_dir_compile_and_exact_flags(capsys, tmp_path, clean_release, embed_args):
    from scinsearch.cli import main

    common = embed_args(
        clean_release, tmp_path / "q", "--limit", "6", "--cache-dir", tmp_path / "pixels", "--compile", "off"
    )
    assert main(common + ["--collection", "first"]) == 0
    first = capsys.readouterr()
    assert "embedded 6" in first.out and "from the cache" not in first.out
    assert main(common + ["--collection", "second"]) == 0
    second = capsys.readouterr()
    assert "pixels: 6 from the cache, 0 decoded" in second.out, second.out
    assert main(common + ["--collection", "third", "--exact-preprocessing"]) == 0
    third = capsys.readouterr()
    assert "pixels: 6 from the cache" not in third.out  # exact pixels are other pixels: decoded again
    assert {p.name for p in (tmp_path / "pixels").iterdir()} == {"square32-resample3-fast", "square32-resample3-exact"}
