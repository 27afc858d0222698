"""`--backend openvino` (`scinsearch.openvino_tower`): the towers through OpenVINO on the CPU.

The vectors are checked against an independent reference, the plain transformers recipe
(`get_image_features(...).pooler_output` and `get_text_features`, divided by their norms, from a second
copy of the checkpoint), and against the torch backend, in memory, through `scinsearch embed` and through
the service. The refusals (another device, fp16, a SigLIP 2 NaFlex model, the package missing) are one
line each. The tiny SigLIP converts in a few seconds: one embedder serves the module.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from scinsearch import openvino_tower
from scinsearch.errors import ScinSearchError

try:
    openvino = openvino_tower.import_openvino()  # as scinsearch imports it: with its telemetry off
except ScinSearchError:
    pytest.skip("needs the openvino extra (in the test extra too)", allow_module_level=True)

from scinsearch.cli import main  # noqa: E402
from scinsearch.commands import embed_cmds, service_cmds  # noqa: E402
from scinsearch.dataset import read_release  # noqa: E402
from scinsearch.embedding import Embedder, cpu_supports_bf16  # noqa: E402
from scinsearch.search import Searcher  # noqa: E402
from scinsearch.search_filters import SearchFilters  # noqa: E402
from scinsearch.service import ServiceSettings, create_app  # noqa: E402
from scinsearch.settings import Settings  # noqa: E402
from scinsearch.store import open_store  # noqa: E402

MIN_COSINE = 0.999
IMAGES = 8
TEXTS = ["Itchy RED ring on the Arm", "a photo of eczema", "dark raised bumpy patch on the leg"]


@pytest.fixture(scope="module")
def ov_embedder(tiny_siglip_dir) -> Embedder:
    """The tiny SigLIP on OpenVINO, loaded the way the commands load it (precision auto: bf16 where native)."""
    return Embedder.from_settings(Settings(model=str(tiny_siglip_dir), device="cpu", backend="openvino"))


@pytest.fixture(scope="module")
def image_paths(clean_release):
    return [record.file for record in read_release(clean_release).records[:IMAGES]]


@pytest.fixture(scope="module")
def reference(tiny_siglip_dir):
    """A second, independent copy of the checkpoint, loaded the plain transformers way, in fp32."""
    from transformers import AutoModel, AutoProcessor

    logging.getLogger("transformers").setLevel(logging.ERROR)
    return AutoModel.from_pretrained(tiny_siglip_dir, dtype=torch.float32).eval(), AutoProcessor.from_pretrained(
        tiny_siglip_dir
    )


def unit(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


def cosines(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))


# In memory ------------------------------------------------------------------------------------------------


def test_image_vectors_match_the_plain_transformers_recipe(ov_embedder, reference, image_paths, tiny_embedder):
    model, processor = reference
    with torch.inference_mode():  # one image at a time, as the old scripts did
        inputs = [processor(images=[Image.open(p).convert("RGB")], return_tensors="pt") for p in image_paths]
        expected = np.concatenate([unit(model.get_image_features(**i).pooler_output) for i in inputs])
    ours = ov_embedder.embed_images(image_paths)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalised as the torch path
    assert cosines(ours, expected).min() >= MIN_COSINE, np.round(cosines(ours, expected), 5).tolist()
    assert cosines(ours, tiny_embedder.embed_images(image_paths)).min() >= MIN_COSINE  # the torch backend's
    # one conversion serves every batch size: one image at a time gives the batch's vectors
    single = np.concatenate([ov_embedder.embed_images([p]) for p in image_paths[:3]])
    np.testing.assert_allclose(single, ours[:3], atol=2e-3)


def test_the_towers_really_run_on_openvino(ov_embedder):
    native = cpu_supports_bf16() and openvino_tower.native_bf16(openvino_tower.shared_core())
    assert ov_embedder.precision_name == ("bf16" if native else "fp32")
    assert ov_embedder.towers.image.hint == ov_embedder.towers.text.hint == ("bf16" if native else "f32")
    assert ov_embedder.describe().endswith(", OpenVINO") and ov_embedder.backend == "openvino"
    assert not ov_embedder.compiled  # torch.compile is not involved
    calls = []
    towers = ov_embedder.towers.image, ov_embedder.towers.text
    try:
        ov_embedder.towers.image = lambda pixels: calls.append("image") or towers[0](pixels)
        ov_embedder.towers.text = lambda ids: calls.append("text") or towers[1](ids)
        ov_embedder.embed_images([Image.new("RGB", (40, 30), (200, 120, 100))])
        ov_embedder.embed_texts(["a red rash"])
    finally:
        ov_embedder.towers.image, ov_embedder.towers.text = towers
    assert calls == ["image", "text"]


def test_text_vectors_match_the_plain_transformers_recipe(ov_embedder, reference):
    model, processor = reference
    tokens = processor.tokenizer([t.lower() for t in TEXTS], padding="max_length", max_length=64, return_tensors="pt")
    with torch.inference_mode():
        expected = unit(model.get_text_features(input_ids=tokens["input_ids"]).pooler_output)
    assert cosines(ov_embedder.embed_texts(TEXTS), expected).min() >= MIN_COSINE


def test_serve_compile_does_not_apply(ov_embedder):
    assert ov_embedder.prepare_queries("off") == ""
    assert "does not apply" in ov_embedder.prepare_queries("on") and not ov_embedder.compiled_text
    assert ov_embedder.prepare(16, 5000) == "" and not ov_embedder.compiled


# Refusals: one line each ---------------------------------------------------------------------------------


def run_embed_cli(capsys, arguments) -> tuple[int, str]:
    code = main(arguments)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--device", "cuda"], "Error: --backend openvino runs on the CPU only, not on 'cuda'"),
        (["--device", "cuda:1"], "Error: --backend openvino runs on the CPU only, not on 'cuda:1'"),
        (["--precision", "fp16"], "Error: --backend openvino runs bf16 or fp32 on the CPU, not fp16"),
    ],
)
def test_other_devices_and_fp16_are_refused(flags, message, embed_args, scin_release, tmp_path, capsys):
    code, last = run_embed_cli(capsys, embed_args(scin_release, tmp_path / "q", "--backend", "openvino", *flags))
    assert code == 1 and last.startswith(message), last


def test_device_auto_means_the_cpu_and_bf16_needs_native_support(tiny_siglip_dir, monkeypatch):
    assert (
        openvino_tower.check_request("auto", "fp32") == openvino_tower.check_request("cpu", "fp32") == ("cpu", "fp32")
    )
    with pytest.raises(ScinSearchError, match="unknown device 'tpu7'"):
        Embedder(str(tiny_siglip_dir), device="tpu7", backend="openvino")
    with pytest.raises(ScinSearchError, match="unknown backend 'onnx'"):
        Embedder(str(tiny_siglip_dir), backend="onnx")
    monkeypatch.setattr(openvino_tower, "native_bf16", lambda core: False)  # a CPU without AVX-512-BF16 or AMX
    assert (
        openvino_tower.check_request("cpu", "bf16") == openvino_tower.check_request("auto", "auto") == ("cpu", "fp32")
    )


def test_a_naflex_model_is_refused(embed_args, scin_release, tiny_siglip2_dir, tmp_path, capsys):
    arguments = embed_args(scin_release, tmp_path / "q", "--backend", "openvino", model=tiny_siglip2_dir)
    code, last = run_embed_cli(capsys, arguments)
    assert code == 1 and last.startswith("Error: --backend openvino cannot run") and "NaFlex" in last, last


def test_a_missing_package_says_how_to_install_it(embed_args, scin_release, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    code, last = run_embed_cli(capsys, embed_args(scin_release, tmp_path / "q", "--backend", "openvino"))
    assert code == 1 and "install scinsearch[openvino]" in last and "pip install 'scinsearch[openvino]'" in last
    assert not (tmp_path / "q").exists()  # refused before the store was made


def test_a_tower_that_does_not_convert_is_one_line(monkeypatch, tiny_embedder):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operation aten::frobnicate\nmore detail")

    monkeypatch.setattr(openvino, "convert_model", broken)
    with pytest.raises(
        ScinSearchError, match=r"^OpenVINO could not convert the image tower .*frobnicate\): use --backend torch$"
    ):
        openvino_tower.compile_tower(
            openvino,
            openvino_tower.shared_core(),
            tiny_embedder.model,
            tiny_embedder.image_tower,
            torch.zeros(1, 3, 32, 32),
            "f32",
            "image",
        )


# Settings, flags and environment -------------------------------------------------------------------------


def test_unknown_backends_are_refused(embed_args, scin_release, tmp_path, capsys):
    with pytest.raises(ScinSearchError, match="unknown backend 'onnx': use torch or openvino"):
        Settings(backend="onnx")
    assert main(embed_args(scin_release, tmp_path / "q", "--backend", "onnx")) == 2
    assert "Invalid value for '--backend'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, env, expected",
    [
        ([], None, "torch"),
        ([], "openvino", "openvino"),
        (["--backend", "torch"], "openvino", "torch"),
        (["--backend", "openvino"], None, "openvino"),
    ],
)
def test_the_backend_reaches_the_settings_of_embed_and_serve(
    flags, env, expected, embed_args, scin_release, tmp_path, monkeypatch, capsys
):
    if env is None:
        monkeypatch.delenv("SCINSEARCH_BACKEND", raising=False)
    else:
        monkeypatch.setenv("SCINSEARCH_BACKEND", env)
    seen = []

    def stop(settings):
        seen.append(settings.backend)
        raise ScinSearchError("stopped")

    monkeypatch.setattr(embed_cmds, "open_embedder", stop)
    monkeypatch.setattr(service_cmds, "run_service", lambda service, *a: seen.append(service.search.backend))
    assert main(embed_args(scin_release, tmp_path / "q", *flags)) == 1
    assert main(["serve", "--port", "0", "--qdrant-path", str(tmp_path / "q"), *flags]) == 0
    capsys.readouterr()
    assert seen == [expected, expected]


# Through `scinsearch embed` and the service ----------------------------------------------------------------


def stored(folder) -> dict:
    store = open_store(Settings(qdrant_path=folder, collection="ov"))
    try:
        return {point.id: point.vector for point in store.scroll(with_vectors=True)}
    finally:
        store.close()


def test_embed_with_openvino_stores_the_torch_vectors(
    embed_args, clean_release, tmp_path, capsys, monkeypatch, ov_embedder, tiny_siglip_dir
):
    # The command's OpenVINO embedder is the module's (the same settings: one conversion, ~5 s, serves the
    # module); `from_settings` is still what the command calls, and any other settings load as usual.
    real_from_settings, loaded = Embedder.from_settings, []
    fields = ("model", "device", "precision", "compile", "exact_preprocessing", "model_files", "backend")
    shared = Settings(model=str(tiny_siglip_dir), device="cpu", backend="openvino")  # ov_embedder's

    def from_settings(settings, collection=None):
        loaded.append(settings.backend)
        if collection is None and all(getattr(settings, f) == getattr(shared, f) for f in fields):
            return ov_embedder
        return real_from_settings(settings, collection)

    monkeypatch.setattr(Embedder, "from_settings", from_settings)
    for backend, workers in (("torch", "0"), ("openvino", "2")):  # decode workers forked beside OpenVINO's threads
        arguments = embed_args(clean_release, tmp_path / backend, "--collection", "ov", "--limit", "10")
        assert main([*arguments, "--backend", backend, "--workers", workers]) == 0
        out, err = capsys.readouterr()
        assert "embedded 10, already present 0, failed 0" in out
        assert ("OpenVINO" in err) == (backend == "openvino")
        assert (" through openvino;" in out) == (backend == "openvino"), out  # the summary says it too
    assert loaded == ["torch", "openvino"]
    torch_vectors, ov_vectors = stored(tmp_path / "torch"), stored(tmp_path / "openvino")
    assert set(torch_vectors) == set(ov_vectors) and len(ov_vectors) == 10
    ids = sorted(ov_vectors)
    found = cosines(np.stack([ov_vectors[i] for i in ids]), np.stack([torch_vectors[i] for i in ids]))
    assert found.min() >= MIN_COSINE, np.round(found, 5).tolist()


def test_the_service_answers_through_openvino(ov_embedder, clean_searcher, monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (190, 110, 90)).save(buffer, format="PNG")
    with Searcher(clean_searcher.settings, embedder=ov_embedder, store=clean_searcher.store) as searcher:
        app = create_app(ServiceSettings(compile="on"), searcher=searcher)
        with TestClient(app, base_url="http://localhost") as client:
            ready = client.get("/ready").json()
            photo = client.post("/search", files={"photo": ("p.png", buffer.getvalue(), "image/png")})
            text = client.post("/search/text", json={"text": "itchy red ring"})
    assert ready["backend"] == "openvino" and ready["compiled"] == []
    labelled = SearchFilters(labelled_only=True)  # what the service lists by default
    expected = {
        "photo": clean_searcher.search_image(buffer.getvalue(), labelled).to_dict()["results"],
        "text": clean_searcher.search_text("itchy red ring", labelled).to_dict()["results"],
    }
    for name, answer in (("photo", photo), ("text", text)):
        assert answer.status_code == 200, answer.text
        scores = {r["image_id"]: r["score"] for r in expected[name]}
        got = answer.json()["results"]
        common = [r for r in got if r["image_id"] in scores]
        assert got and len(common) >= len(got) // 2, name  # bf16 may swap near ties at the edge, no more
        assert max(abs(r["score"] - scores[r["image_id"]]) for r in common) < 0.01, name


TWO_EMBEDDERS_FREED_OUT_OF_ORDER = """
import gc, os, signal, sys
from scinsearch.embedding import Embedder
from scinsearch.settings import Settings

settings = Settings(model=sys.argv[1], device="cpu", backend="openvino")
first = Embedder.from_settings(settings)
second = Embedder.from_settings(settings)
del first  # freed before the one made after it
gc.collect()
del second
gc.collect()
signal.signal(signal.SIGUSR1, lambda *args: print("handled", flush=True))
os.kill(os.getpid(), signal.SIGUSR1)  # as Ctrl-C, SIGTERM or a child's SIGCHLD would arrive
print("alive", flush=True)
"""


@pytest.fixture(scope="module")
def two_embedders_freed(tiny_siglip_dir, tmp_path_factory):
    """A fresh process (OpenVINO not yet loaded, as in `scinsearch embed`) makes two OpenVINO embedders,
    frees them out of order and signals itself; its home folder is an empty one of ours, and it runs as on
    a user's machine, not as in CI (OpenVINO's telemetry keeps quiet where CI=true). (run, home)."""
    home = tmp_path_factory.mktemp("home")
    env = {name: value for name, value in os.environ.items() if name not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-c", TWO_EMBEDDERS_FREED_OUT_OF_ORDER, str(tiny_siglip_dir)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    return run, home


def test_embedders_freed_in_any_order_leave_signal_handling_working(two_embedders_freed):
    """OpenVINO's CPU plugin gives the thread that loads it an alternate signal stack and, when its Core is
    freed, puts back the one it found and unmaps its own. Two Cores freed out of order left the main
    thread's alternate stack unmapped, and the next handled signal (Ctrl-C, SIGTERM, a child's exit) killed
    the process with a silent SIGSEGV: it took down test workers after the OpenVINO benchmark test."""
    run, _ = two_embedders_freed
    assert (run.returncode, run.stdout.split()) == (0, ["handled", "alive"]), run.stderr[-2000:]


def test_converting_the_towers_reports_nothing_to_openvinos_telemetry(two_embedders_freed):
    """`openvino.convert_model` sent usage reports to Google Analytics (a missing consent file counts as
    consent there), wrote a client id into ~/intel, and forked the process to send each report."""
    run, home = two_embedders_freed
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(path.name for path in home.rglob("*")) == []
