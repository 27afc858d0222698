"""Shared fixtures: built once per session, offline, small (a tiny random SigLIP, a synthetic SCIN).

Also the spy embedder (simonw/llm style): it counts every image it embeds, so tests can prove that
nothing is embedded twice; the clean release embedded once (`clean_index`) and a real searcher on it
(`clean_searcher`); the `embed` command's argument list (`embed_args`); the old scripts' flat CSV
(`flat_csv_header`, `write_flat_csv`).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from csv_reference import OLD_SCRIPT_COLUMNS
from scinsearch.settings import Settings
from scinsearch.store import open_store

if TYPE_CHECKING:
    from scinsearch.embedding import Embedder

# torch, pandas and the rest are imported by the fixtures that use them, not here: pytest-xdist's controller
# loads this file before it starts the workers, and it runs no test (~3.5 s of imports on one core, the other idle).

logging.getLogger("transformers").setLevel(logging.ERROR)
# numba (umap-learn's, in the real-UMAP explore test) compiles its functions on first use: 42 s on a fresh
# install at its default optimisation, about 30 s at none. The test's few points run as fast either way. At
# none, pynndescent's functions cannot be cached (each run's `import umap` takes ~11 s, not 3 s from the cache):
# the right trade for CI, which installs afresh every time (docs/testing.md).
os.environ.setdefault("NUMBA_OPT", "0")


MEMORY_FOLDER = Path("/dev/shm")
MEMORY_PREFIX = "scinsearch-tests-"  # then the run's process id
MEMORY_BASETEMP = pytest.StashKey[str]()
RUN_FAILED = pytest.StashKey[bool]()


MEMORY_NEEDED = 8 * 2**30  # a whole run's folders peak at ~4.5 GiB; tmpfs full = SIGBUS in Edge's mmap


@pytest.hookimpl(tryfirst=True)  # before pytest's own tmp_path plugin reads --basetemp
def pytest_configure(config):
    """Temporary folders in memory (/dev/shm, where there is one with room and no --basetemp was given):
    Qdrant Edge syncs each new collection and each write to disk, which costs 1-3 s per test store on a
    shared disk and 0.1 s in memory. Only with 8 GiB free: a full tmpfs kills the run with a bus error
    (Edge maps its files), so several runs at once fall back to the disk. Always removed at the end
    (set SCINSEARCH_KEEP_TEST_TMP=1 to keep a failing run's folders until the next run starts): memory is not
    given back otherwise."""
    if config.option.basetemp or not (MEMORY_FOLDER.is_dir() and os.access(MEMORY_FOLDER, os.W_OK)):
        return
    remove_folders_of_dead_runs()
    if shutil.disk_usage(MEMORY_FOLDER).free < MEMORY_NEEDED:
        return
    config.option.basetemp = tempfile.mkdtemp(prefix=f"{MEMORY_PREFIX}{os.getpid()}-", dir=MEMORY_FOLDER)
    config.stash[MEMORY_BASETEMP] = config.option.basetemp


def remove_folders_of_dead_runs() -> None:
    """A run that was killed (SIGKILL, a CI time limit) never removes its folders, and tmpfs memory is not
    given back: 18 GB of them once filled /dev/shm here, and later runs slowed down for the lack of page
    cache. Each folder is named after its run's process; those whose process is gone are removed."""
    for folder in MEMORY_FOLDER.glob(f"{MEMORY_PREFIX}*"):
        pid = folder.name.removeprefix(MEMORY_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not process_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Under pytest-xdist, one thread per worker (and per process a test starts): the workers already use
    every core, and each tiny model's operations are microseconds long, so more threads only spin and wait
    for each other across the workers."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


HEAVIEST_FIRST = (  # test files that take longest in a parallel run (docs/testing.md), slowest first
    "test_kiosk_browser.py",
    "test_explore.py",
    "test_gpu_bench_imports.py",
    "test_bundle.py",
    "test_hostile_service.py",
    "test_explore_browser.py",
    "test_decode_guard.py",
    "test_openvino_tower.py",
    "test_hostile_decoding.py",
    "test_service_lock.py",
    "test_reference_vectors.py",
    "test_finetune_evaluate.py",
    "test_evaluation_verdicts.py",
    "test_crash_recovery.py",
    "test_kiosk_backend.py",
    "test_kiosk_browser_ops.py",
    "test_layout.py",
)


def pytest_collection_modifyitems(config, items):
    """The heaviest test files first: pytest-xdist hands whole files (`--dist loadfile`) to whichever worker
    is free, in this order (`--no-loadscope-reorder`), so the workers finish together instead of one running
    a long file alone at the end. The order inside each file is kept."""
    rank = {name: position for position, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_testnodedown(node, error):
    """A pytest-xdist worker that dies says only "node down: Not properly terminated". A segfault usually
    prints its traceback (faulthandler), but a kill signal, `os._exit` or a fault faulthandler cannot catch
    (OpenVINO's unmapped signal stack, docs/testing.md) leaves nothing, so say how the worker ended: its exit
    status, as `embed`'s decode guard does for its own workers."""
    popen = getattr(getattr(node.gateway, "_io", None), "popen", None)
    if error is None or popen is None:
        return
    try:
        status = popen.wait(timeout=5)
    except Exception:  # still running (only its channel failed), or not ours to wait for
        return
    from scinsearch.decoding import describe_exit

    print(f"\n[{node.gateway.id}] the worker process ended: {describe_exit(status)}", flush=True)


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[RUN_FAILED] = exitstatus != 0


def pytest_unconfigure(config):
    folder = config.stash.get(MEMORY_BASETEMP, None)
    if folder is None:
        return
    if config.stash.get(RUN_FAILED, True) and os.environ.get("SCINSEARCH_KEEP_TEST_TMP") == "1":
        print(f"\ntemporary folders of this run (in memory): {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    """A tiny random SigLIP (vision + text) with a real SentencePiece tokenizer, in a local folder."""
    from scinsearch import testing

    return testing.build_tiny_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")


@pytest.fixture(scope="session")
def tiny_siglip2_fixres_dir(tmp_path_factory) -> Path:
    """A tiny random SigLIP 2 at a fixed resolution: SigLIP's architecture with Gemma's tokenizer."""
    from scinsearch import testing

    return testing.build_tiny_siglip2_fixres(tmp_path_factory.mktemp("models") / "tiny-siglip2-fixres")


@pytest.fixture(scope="session")
def tiny_siglip2_dir(tmp_path_factory) -> Path:
    """A tiny random SigLIP 2 NaFlex model with its real processor."""
    from scinsearch import testing

    return testing.build_tiny_siglip2(tmp_path_factory.mktemp("models") / "tiny-siglip2")


@pytest.fixture(scope="session")
def tiny_embedder(tiny_siglip_dir) -> Embedder:
    from scinsearch.embedding import Embedder

    return Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def scin_release(tmp_path_factory) -> Path:
    """A synthetic release in the official layout, with the real release's traps and broken files.
    Read-only for tests: copy it before changing it."""
    from scinsearch import testing

    return testing.write_release(tmp_path_factory.mktemp("scin") / "scin", cases=14)


@pytest.fixture(scope="session")
def clean_release(tmp_path_factory) -> Path:
    """A bigger synthetic release without broken files (for search and evaluation)."""
    from scinsearch import testing

    return testing.write_release(tmp_path_factory.mktemp("scin-clean") / "scin", cases=40, broken_files=False)


class SpyEmbedder:
    """Stands in for `Embedder`: deterministic vectors from pixel colour, and a log of what it saw."""

    model_name = "spy-model"
    dim = 8
    precision_name = "fp32"
    backend = "torch"

    def __init__(self):
        import torch

        from scinsearch.embedding import Preprocessor

        self.device = torch.device("cpu")
        self.preprocessor = Preprocessor("fixed", 8, 3, 1 / 255, (0.5,) * 3, (0.5,) * 3)
        self.embedded_batches: list[int] = []
        self.fail_after: int | None = None

    @property
    def images_embedded(self) -> int:
        return sum(self.embedded_batches)

    def embed_batch(self, batch) -> np.ndarray:
        if self.fail_after is not None and self.images_embedded >= self.fail_after:
            raise KeyboardInterrupt  # simulates a run killed half way
        pixels = np.asarray(batch["pixels"], dtype=np.float32)
        self.embedded_batches.append(len(pixels))
        means = pixels.reshape(len(pixels), -1, 3).mean(axis=1) / 255.0
        vectors = np.concatenate([means, 1 - means, means[:, :2] * 0.5], axis=1) + 0.01
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def embed_images(self, images):
        from scinsearch.embedding import collate
        from scinsearch.images import open_rgb

        return self.embed_batch(collate([self.preprocessor(open_rgb(i)) for i in images]))


@pytest.fixture
def spy_embedder() -> SpyEmbedder:
    return SpyEmbedder()


@pytest.fixture(params=["edge", "memory"])
def store_settings(request, tmp_path) -> Settings:
    """Every store test runs on both backends: Qdrant Edge and qdrant-client's `:memory:` mode
    (the same client code a server URL uses)."""
    if request.param == "edge":
        return Settings(qdrant_path=tmp_path / "qdrant", collection="test")
    return Settings(qdrant_location=":memory:", collection="test")


@pytest.fixture
def store(store_settings):
    opened = open_store(store_settings)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def clean_index(tiny_embedder, clean_release):
    """The clean release embedded once with the tiny SigLIP: (collection info, points with vectors), for
    tests to copy into their own stores with `fill_store`."""
    from scinsearch.dataset import read_release
    from scinsearch.pipeline import run_embed

    store = open_store(Settings(qdrant_location=":memory:", collection="index"))
    run_embed(read_release(clean_release), tiny_embedder, store, workers=0, progress=False, warn=lambda m: None)
    points = list(store.scroll(with_vectors=True))
    info = store.info()
    store.close()
    return info, points


def fill_store(store, index) -> None:
    """Write `clean_index`'s collection into an open store."""
    info, points = index
    store.create(info)
    store.upsert(points)
    store.finish_writes()


@pytest.fixture(scope="module")
def clean_searcher(tmp_path_factory, clean_index, tiny_embedder):
    """A real Searcher over an embedded store (Qdrant Edge) holding the clean release; one store per test
    module, so a module may add points of its own (`clean_searcher.store`)."""
    from scinsearch.search import Searcher

    settings = Settings(
        qdrant_path=tmp_path_factory.mktemp("clean-store"), collection="clean", model=tiny_embedder.model_name
    )
    store = open_store(settings)
    fill_store(store, clean_index)
    opened = Searcher(settings, embedder=tiny_embedder, store=store)
    yield opened
    opened.close()
    store.close()


@pytest.fixture(scope="session")
def embed_args(tiny_siglip_dir):
    """`embed_args(release, store, *more, model=None)`: the `scinsearch embed` arguments the tests share (the
    tiny SigLIP unless `model` is given, on the CPU, no decode workers, quiet), as strings, with `more`
    appended. `store` is an Edge folder, or ":memory:" for qdrant-client's in-process mode."""

    def build(release, store, *more, model=None) -> list[str]:
        where = ["--qdrant-url", store] if store == ":memory:" else ["--qdrant-path", store]
        common = ["embed", "--scin-dir", release, "--model", model or tiny_siglip_dir, *where]
        return [str(a) for a in [*common, "--device", "cpu", "--workers", "0", "--quiet", *more]]

    return build


@pytest.fixture(scope="session")
def flat_csv_header() -> list[str]:
    """The columns of the old scripts' flat CSV (real_labeled_metadata.csv), from tests/csv_reference.py."""
    return list(OLD_SCRIPT_COLUMNS)


@pytest.fixture(scope="session")
def write_flat_csv(flat_csv_header):
    """`write_flat_csv(release, path, rows=12, same=None, extra_rows=())`: the first `rows` images of a
    synthetic release as the old scripts' flat CSV; `same` sets columns to one value in every row, and
    `extra_rows` (lists of cells) are written after them."""

    def write(release: Path, path: Path, rows: int = 12, same: dict | None = None, extra_rows=()) -> Path:
        from scinsearch.dataset import read_release

        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(flat_csv_header)
            for record in read_release(release).records[:rows]:
                p = record.payload
                cells = dict(
                    zip(
                        flat_csv_header,
                        [
                            record.image_id,
                            record.file.name,
                            p["case_id"],
                            p["condition"] or "",
                            repr(p["all_conditions"]),
                            repr(p["weighted_labels"]),
                            p["age_group"],
                            p["sex_at_birth"],
                            p["fitzpatrick_skin_type"] or "",
                            p["condition_label"] if p["condition_label"] is not None else "",
                            p["split"],
                            p["description"],
                        ],
                    )
                )
                writer.writerow([{**cells, **(same or {})}[column] for column in flat_csv_header])
            writer.writerows(extra_rows)
        return path

    return write


@pytest.fixture
def graph_config(monkeypatch):
    """Edge builds and uses its HNSW graph (and int8 copies) from a few KB of vectors instead of ~10 MB (test
    configuration; the store keeps its production thresholds otherwise, and the shard its m / ef_construct)."""
    import qdrant_edge

    real_config = qdrant_edge.EdgeConfig

    def small_thresholds(**options):
        hnsw = options["hnsw_config"]
        options["hnsw_config"] = qdrant_edge.HnswIndexConfig(
            m=hnsw.m, ef_construct=hnsw.ef_construct, full_scan_threshold=1
        )
        options["optimizers"] = qdrant_edge.EdgeOptimizersConfig(indexing_threshold=1)
        return real_config(**options)

    monkeypatch.setattr(qdrant_edge, "EdgeConfig", small_thresholds)
