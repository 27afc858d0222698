"""A kiosk is set up from one verified bundle (issue 21): `scinsearch bundle` and `serve --bundle`.

The bundle is built from a collection embedded with the tiny SigLIP, moved to another folder, and
served in a fresh process with an empty model cache and the hub switched off; one changed byte, one
missing file or one extra file and it is refused before anything is loaded.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import httpx
import pytest
from PIL import Image

from scinsearch.bundle import MANIFEST, verify_bundle
from scinsearch.cli import main
from scinsearch.errors import ScinSearchError
from test_service_lock import free_port, wait_ready


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory, clean_release, tiny_siglip_dir, embed_args):
    """A bundle of a small collection made by `scinsearch embed` (built once; tests copy it)."""
    store = tmp_path_factory.mktemp("bundle-store")
    common = ["--qdrant-path", store, "--collection", "kiosk", "--model", tiny_siglip_dir]
    assert main(embed_args(clean_release, store, "--collection", "kiosk", "--limit", "12")) == 0
    out = tmp_path_factory.mktemp("bundles") / "kiosk-bundle"
    assert main([str(a) for a in ["bundle", "--out", out, *common, "--idle-reset-seconds", "77", "--quiet"]]) == 0
    return out


@pytest.fixture
def bundle_copy(tmp_path, built_bundle):
    """The bundle moved somewhere else, as a USB stick or rsync would."""
    target = tmp_path / "elsewhere" / "kiosk"
    shutil.copytree(built_bundle, target)
    return target


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 80, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_moved_bundle_serves_search_without_network_or_model_cache(tmp_path, bundle_copy, tiny_siglip_dir):
    listed = json.loads((bundle_copy / MANIFEST).read_text())["files"]
    assert any(name.startswith("model/") for name in listed) and any(name.startswith("collection/") for name in listed)
    assert {"bundle.json", "calibration.json", "page.json"} <= set(listed)
    assert str(tiny_siglip_dir) not in (bundle_copy / "page.json").read_text()
    empty_cache = tmp_path / "empty-hf-home"
    empty_cache.mkdir()
    port = free_port()
    temporary = tmp_path / "tmpdir"  # the serve's own TMPDIR: its working copy of the collection goes here
    temporary.mkdir()
    environment = {
        **os.environ,
        **{"HF_HOME": str(empty_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TMPDIR": str(temporary)},
    }
    command = [sys.executable, "-m", "scinsearch", "serve", "--bundle", str(bundle_copy), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
    try:
        wait_ready(port, process)
        base = f"http://127.0.0.1:{port}"
        answer = httpx.post(f"{base}/search", files={"photo": ("p.png", png(), "image/png")}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"]
        assert httpx.get(f"{base}/config", timeout=10).json()["idle_reset_seconds"] == 77  # the bundle's page
        assert any(temporary.iterdir())  # the working copy is made here
    finally:
        process.terminate()
        returncode = process.wait(timeout=30)
    assert returncode == 0, process.stderr.read().decode(errors="replace")[-2000:]  # stopped as systemd stops it
    assert list(temporary.iterdir()) == []  # the working copy (and everything else temporary) is gone
    assert not list(empty_cache.iterdir())  # nothing was fetched into the cache
    verify_bundle(bundle_copy)  # serving changed nothing in the bundle


def largest_file(folder):
    return max((path for path in folder.rglob("*") if path.is_file()), key=lambda path: path.stat().st_size)


def flip_one_byte(folder):
    path = largest_file(folder)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path.relative_to(folder).as_posix(), "changed since the bundle was built"


def add_a_file(folder):
    (folder / "model" / "extra.bin").write_bytes(b"x")
    return "model/extra.bin", "is not in the manifest"


def remove_a_file(folder):
    path = folder / "page.json"
    path.unlink()
    return "page.json", "is missing"


@pytest.mark.parametrize("tamper", [flip_one_byte, add_a_file, remove_a_file])
def test_a_changed_missing_or_extra_file_is_refused_in_one_line(capsys, bundle_copy, tamper):
    code, out, _ = run(capsys, "bundle", "--verify", bundle_copy)
    assert code == 0 and "match the manifest" in out
    name, words = tamper(bundle_copy)
    for command in (["bundle", "--verify", bundle_copy], ["serve", "--bundle", bundle_copy, "--port", free_port()]):
        code, _, err = run(capsys, *command)
        errors = [line for line in err.splitlines() if line.startswith("Error:")]
        assert code == 1 and len(errors) == 1 and "Traceback" not in err
        assert f"file {name}" in errors[0] and words in errors[0]


def test_a_manifest_naming_a_path_outside_the_bundle_is_refused(capsys, bundle_copy):
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "size": 1}
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    code, _, err = run(capsys, "bundle", "--verify", bundle_copy)
    assert code == 1 and "a path outside the bundle" in err and "Traceback" not in err


def test_bundle_mistakes_are_one_line(capsys, tmp_path, built_bundle):
    code, _, err = run(capsys, "bundle", "--out", built_bundle)
    assert code == 1 and "exists" in err
    code, _, err = run(capsys, "bundle")
    assert code == 1 and "--out DIR" in err
    with pytest.raises(ScinSearchError, match="has no MANIFEST.json"):
        verify_bundle(tmp_path)


def test_a_hub_id_is_taken_from_the_local_cache_only(capsys, tmp_path, monkeypatch, tiny_siglip_dir):
    """--model as a hub id: the snapshot in the Hugging Face cache is copied; an uncached id is one line."""
    import huggingface_hub.constants
    import numpy as np

    from scinsearch.schema import point_id_for
    from scinsearch.store import CollectionInfo, StoredPoint
    from scinsearch.store.edge import EdgeStore

    cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--scin--tiny-siglip" / "snapshots" / revision
    shutil.copytree(tiny_siglip_dir, snapshot)
    (cache / "models--scin--tiny-siglip" / "refs").mkdir()
    (cache / "models--scin--tiny-siglip" / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    store = EdgeStore(tmp_path / "store", "kiosk")
    for model in ("scin/tiny-siglip", "scin/not-cached"):
        store.create(CollectionInfo(model, 4), recreate=True)
        store.upsert([StoredPoint(point_id_for("a"), {"image_id": "a"}, np.array([1, 0, 0, 0], np.float32))])
        store.close()
        out = tmp_path / f"bundle-{model.split('/')[1]}"
        code, _, err = run(
            capsys, "bundle", "--out", out, "--qdrant-path", tmp_path / "store", "--collection", "kiosk",
            "--model", model, "--quiet",
        )  # fmt: skip
        if model == "scin/tiny-siglip":
            assert code == 0, err
            assert (out / "model" / "config.json").read_bytes() == (snapshot / "config.json").read_bytes()
            assert json.loads((out / "bundle.json").read_text())["model"] == model
            assert verify_bundle(out).model == model
        else:
            assert code == 1 and "nor in the local Hugging Face cache" in err and not out.exists()
        store = EdgeStore(tmp_path / "store", "kiosk")
    store.close()
