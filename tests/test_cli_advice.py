"""Errors that say what to do, before the slow work (issue 22): a busy port for `serve`."""

from __future__ import annotations

import socket

from scinsearch.cli import main
from scinsearch.commands import service_cmds


def test_serve_on_a_busy_port_fails_before_opening_the_store_or_loading_the_model(tmp_path, capsys, monkeypatch):
    opened = []
    monkeypatch.setattr(service_cmds, "open_searcher", lambda *args, **kwargs: opened.append(args))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = main(["serve", "--port", str(port), "--qdrant-path", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == 1 and opened == []
    assert err.strip() == f"Error: port {port} is in use: choose another with --port"


def test_a_free_port_passes_the_check():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service_cmds.check_port_free("127.0.0.1", port)  # raises when wrongly taken for busy
    service_cmds.check_port_free("127.0.0.1", 0)  # 0: the system picks one
