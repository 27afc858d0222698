"""A file that kills or hangs its decode worker: the run finishes, the file is named, everything else is
stored; the rerun skips it at once (it is remembered beside the images) and says so."""

from __future__ import annotations

import shutil
import signal

import pytest

from scinsearch.dataset import ImageRecord, read_release
from scinsearch.decoding import RECORDS_MODULE, DecodeImages, DecodePool, worker_context
from scinsearch.pipeline import run_embed
from scinsearch.settings import Settings
from scinsearch.testing import SabotagedPreprocessor
from scinsearch.testing import sabotage as sabotage_module
from scinsearch.undecodable import RECORD_NAME

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


@pytest.fixture
def release(clean_release, tmp_path):
    """A copy: the run writes its record of undecodable files beside the images."""
    return shutil.copytree(clean_release, tmp_path / "scin")


@pytest.fixture
def data(release):
    return read_release(release)


@pytest.fixture
def store_settings(tmp_path) -> Settings:
    """conftest's `store`, on the embedded store only: the decode guard is the same whatever the store."""
    return Settings(qdrant_path=tmp_path / "q", collection="c")


def embed(data, embedder, store, **options):
    options = {"batch_size": 4, "workers": 2, "progress": False, "warn": lambda message: None, **options}
    return run_embed(data, embedder, store, **options)


def sabotage(embedder, **how) -> None:
    embedder.preprocessor = SabotagedPreprocessor.around(embedder.preprocessor, **how)


def stored_ids(store) -> set[str]:
    return {point.id for point in store.scroll()}


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGSEGV], ids=["oom-kill", "segfault"])
def test_a_file_that_kills_its_worker_is_named_skipped_and_remembered(
    release, data, store, spy_embedder, signal_number
):
    culprit = data.records[7]
    sabotage(spy_embedder, crash_on=frozenset({culprit.image_id}), signal_number=signal_number)
    summary = embed(data, spy_embedder, store)
    assert [path for path, _ in summary.failed] == [str(culprit.file)]
    reason = summary.failed[0][1]
    assert "crashes on it" in reason and signal.Signals(signal_number).name in reason, reason
    assert stored_ids(store) == {r.point_id for r in data.records} - {culprit.point_id}
    assert not summary.complete and any(RECORD_NAME in line for line in summary.lines())
    assert (release / RECORD_NAME).is_file()

    rerun = embed(data, spy_embedder, store, workers=1)
    assert rerun.already_present == len(data.records) - 1 and rerun.embedded == 0
    assert [path for path, _ in rerun.failed] == [str(culprit.file)] and rerun.skipped_as_recorded == 1
    assert "earlier run" in rerun.failed[0][1] and not rerun.complete
    assert any("skipped at once" in line for line in rerun.lines())


def test_a_file_that_hangs_its_worker_times_out_the_same_way(data, store, spy_embedder):
    culprit = data.records[3]
    sabotage(spy_embedder, hang_on=frozenset({culprit.image_id}))
    summary = embed(data, spy_embedder, store, decode_timeout=1.0)
    assert [path for path, _ in summary.failed] == [str(culprit.file)]
    assert "hangs on it" in summary.failed[0][1] and "overran the 1 s deadline" in summary.failed[0][1]
    assert stored_ids(store) == {r.point_id for r in data.records} - {culprit.point_id}
    rerun = embed(data, spy_embedder, store, decode_timeout=1.0)
    assert [path for path, _ in rerun.failed] == [str(culprit.file)] and rerun.skipped_as_recorded == 1


def test_the_lone_retry_is_timed_from_its_decode_not_from_its_process_start(data, store, spy_embedder):
    """The culprit is decoded again alone in a fresh process to confirm it. On a loaded machine that start
    alone can take longer than a short --decode-timeout: the crash was then reported, and recorded for
    later runs, as a hang; a fine file that overran once was recorded as hanging the decoder."""
    culprit = data.records[2]
    sabotage(spy_embedder, crash_on=frozenset({culprit.image_id}), start_delay=1.5)
    summary = embed(data, spy_embedder, store, decode_timeout=1.0)
    assert [path for path, _ in summary.failed] == [str(culprit.file)]
    assert "crashes on it" in summary.failed[0][1], summary.failed


def test_a_lone_retry_that_dies_before_reaching_its_file_gives_no_verdict(data, spy_embedder):
    """A retry that never started was already no verdict; one killed while starting (the out-of-memory
    killer picking it, as a bystander) blamed the file: "crashes on it", recorded and skipped by later runs."""
    preprocessor = SabotagedPreprocessor.around(spy_embedder.preprocessor, start_signal=signal.SIGKILL)
    pool = DecodePool(DecodeImages(data.records, preprocessor), workers=1, chunk=4, timeout=5.0)
    assert pool.probe(0) is None


def test_a_decode_worker_cannot_take_more_memory_than_decoding_one_image_needs(data, store, spy_embedder):
    """Issue 23: each decode worker's address space is capped; a decoder asking for more fails that file."""
    culprit = data.records[5]
    sabotage(spy_embedder, hog_on=frozenset({culprit.image_id}))
    summary = embed(data, spy_embedder, store)
    assert [path for path, _ in summary.failed] == [str(culprit.file)]
    assert "MemoryError" in summary.failed[0][1], summary.failed
    assert stored_ids(store) == {r.point_id for r in data.records} - {culprit.point_id}


def test_without_the_record_the_rerun_finds_the_culprit_again(release, data, store, spy_embedder):
    culprits = [data.records[2], data.records[9]]
    sabotage(spy_embedder, crash_on=frozenset(r.image_id for r in culprits))
    for _ in range(2):
        summary = embed(data, spy_embedder, store, remember_undecodable=False, workers=3)
        assert sorted(path for path, _ in summary.failed) == sorted(str(r.file) for r in culprits)
        assert all("crashes on it" in reason for _, reason in summary.failed)
    assert stored_ids(store) == {r.point_id for r in data.records} - {r.point_id for r in culprits}
    assert not (release / RECORD_NAME).exists()


def test_a_changed_file_is_tried_again(data, store, spy_embedder):
    culprit = data.records[4]
    sabotage(spy_embedder, crash_on=frozenset({culprit.image_id}))
    embed(data, spy_embedder, store)
    spy_embedder.preprocessor = SabotagedPreprocessor.around(spy_embedder.preprocessor)  # the decoder is fixed
    culprit.file.write_bytes(culprit.file.read_bytes())  # ...and the file re-downloaded: the record no longer applies
    import os

    os.utime(culprit.file, ns=(culprit.file.stat().st_atime_ns, culprit.file.stat().st_mtime_ns + 10**9))
    summary = embed(data, spy_embedder, store)
    assert summary.complete and summary.embedded == 1 and culprit.point_id in stored_ids(store)


def test_a_worker_killed_by_a_bystander_problem_redoes_its_chunk(
    release, data, store, spy_embedder, monkeypatch, tmp_path
):
    """The out-of-memory killer may pick a worker whose file is fine: the probe clears it, nothing is lost."""
    from scinsearch import decoding

    probed = []
    real_probe = decoding.DecodePool.probe

    def probe_after_a_random_kill(self, index):
        probed.append(index)
        return real_probe(self, index)

    killed = []
    real_collect = decoding.DecodePool.collect
    bystander = data.records[len(data.records) // 2]
    hold = tmp_path / "hold"
    hold.touch()
    sabotage(spy_embedder, pause_on=frozenset({bystander.file.stem}), hold=str(hold))  # a fine file, held in flight

    def collect_and_kill_once(self, queue, done):
        for worker in self.pool:
            index = int(self.journal[2 * worker.slot + 1])
            if not killed and index >= 0 and self.decode.records[index].image_id == bystander.image_id:
                worker.process.kill()  # while it sleeps on the bystander: the journal cannot move on
                worker.process.join()
                killed.append(index)
                hold.unlink()  # from now on the bystander decodes at once: in the probe and in the redone chunk
        real_collect(self, queue, done)

    monkeypatch.setattr(decoding.DecodePool, "probe", probe_after_a_random_kill)
    monkeypatch.setattr(decoding.DecodePool, "collect", collect_and_kill_once)
    summary = embed(data, spy_embedder, store)
    assert killed and probed == killed
    assert summary.complete and not summary.failed and stored_ids(store) == {r.point_id for r in data.records}
    assert not (release / RECORD_NAME).exists()


@pytest.mark.timeout(90)  # a regression to fork hangs here: fail in 90 s, not the suite's 300 s
def test_a_lock_held_in_the_main_process_does_not_reach_the_workers(data, store, spy_embedder):
    """A worker forked from the main process inherits every lock another of its threads held at that moment
    (Qdrant Edge's, torch's, a test runner's), and waits forever for one it needs: workers come from a fork
    server instead, so the run finishes with nothing failed."""
    sabotage(spy_embedder, lock_on=frozenset(record.image_id for record in data.records))
    with sabotage_module.LOCK:  # as another thread of the main process might hold it while workers start
        summary = embed(data, spy_embedder, store, decode_timeout=5.0)
    assert summary.failed == [] and summary.complete
    assert stored_ids(store) == {record.point_id for record in data.records}


def test_workers_find_the_records_module_in_a_fork_server_that_has_one_thread():
    """Each worker unpickles its records on start; when only the fork server had imported the decoding
    module, every worker imported `scinsearch.dataset` and pandas again (~0.7 s of CPU per worker). And the
    fork server forks the workers: with pandas preloaded it ran pyarrow's allocator thread beside its own."""
    assert ImageRecord.__module__ == RECORDS_MODULE
    context = worker_context()
    ours, theirs = context.Pipe(duplex=False)
    # `exec` and a pipe: unpickling this process needs nothing the fork server might lack; its parent is the server
    report = (
        "import os, sys; channel.send((sorted({'scinsearch.dataset', 'pandas'} & set(sys.modules)), "
        "len(os.listdir(f'/proc/{os.getppid()}/task'))))"
    )
    process = context.Process(target=exec, args=(report, {"channel": theirs}))
    process.start()
    theirs.close()
    assert ours.poll(60), "the worker sent nothing"
    assert ours.recv() == (["scinsearch.dataset"], 1)  # the records' module, no pandas; one thread in the server
    process.join(10)
