"""The embedded store has one owner: `serve` and `embed` colliding give the second one a clear
message (stop the other, or use a Qdrant server URL) and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from hostile_http import answers_ready
from scinsearch.cli import main
from scinsearch.store.edge import EdgeStore

COLLECTION = "lock_test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def built_store(tmp_path_factory, clean_release, embed_args):
    """A small embedded store made by `scinsearch embed`, then closed."""
    path = tmp_path_factory.mktemp("lock-store")
    code = main(embed_args(clean_release, path, "--collection", COLLECTION, "--limit", "12"))
    assert code == 0
    return path


def store_args(path, model) -> list[str]:
    return ["--qdrant-path", str(path), "--collection", COLLECTION, "--model", str(model), "--device", "cpu"]


def assert_clear_lock_message(code: int, err: str) -> None:
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "open in another process" in errors[0] and "stop it" in errors[0] and "--qdrant-url" in errors[0]


def wait_ready(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early: {process.stderr.read().decode(errors='replace')[-2000:]}")
        if answers_ready(port):
            return
        time.sleep(0.05)
    raise AssertionError("serve did not become ready")


def test_embed_and_a_second_serve_get_a_clear_message_while_serve_runs(
    built_store, clean_release, tiny_siglip_dir, embed_args, capsys
):
    # A real `serve` process: the store's lock is an OS lock between processes, which is what a user meets
    # (a second `embed` while the kiosk runs); the same-process refusal is the next test's.
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from scinsearch.cli import main; sys.exit(main())",
        "serve",
        *store_args(built_store, tiny_siglip_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    try:
        wait_ready(port, process)
        capsys.readouterr()
        code = main(embed_args(clean_release, built_store, "--collection", COLLECTION))
        assert_clear_lock_message(code, capsys.readouterr().err)
        code = main(["serve", *store_args(built_store, tiny_siglip_dir), "--port", str(free_port())])
        assert_clear_lock_message(code, capsys.readouterr().err)
    finally:
        process.terminate()
        process.wait(timeout=30)
    code = main(embed_args(clean_release, built_store, "--collection", COLLECTION, "--limit", "12"))
    assert code == 0, capsys.readouterr().err  # the lock went with the stopped service


def test_serve_checks_the_store_before_loading_the_model(built_store, tiny_siglip_dir, capsys, monkeypatch):
    """The order itself, not a time bound: a held store fails before the model is loaded; a free one is
    opened, then the model loaded, then the server started."""
    import uvicorn

    from scinsearch import embedding
    from scinsearch import store as store_module

    events: list[str] = []
    real_load, real_open = embedding.load_pretrained, store_module.open_store
    monkeypatch.setattr(embedding, "load_pretrained", lambda *a, **k: events.append("model") or real_load(*a, **k))
    monkeypatch.setattr(store_module, "open_store", lambda settings: events.append("store") or real_open(settings))
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: events.append("serve"))  # do not block the test
    holder = EdgeStore(built_store, COLLECTION)  # what a running `embed` holds
    try:
        code = main(["serve", *store_args(built_store, tiny_siglip_dir), "--port", str(free_port())])
        assert_clear_lock_message(code, capsys.readouterr().err)
        assert events == ["store"], "the model was loaded before the store was checked"
    finally:
        holder.close()
    events.clear()
    assert main(["serve", *store_args(built_store, tiny_siglip_dir), "--port", str(free_port())]) == 0
    assert events == ["store", "model", "serve"]
