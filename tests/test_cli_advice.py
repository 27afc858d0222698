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


def required_options():
    """(command words, the option, the command's store options) for every required option of every command."""
    import click

    from scinsearch.cli import cli

    def walk(command, words):
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, words + [name])
        options = [p for p in command.params if isinstance(p, click.Option)]
        required = [p for p in options if p.required]
        # a store that is not there: a command that got past its options would fail there, not with exit 2
        store = ["--qdrant-path", "q"] if any(p.name == "qdrant_path" for p in options) else []
        for missing in required:
            given = [arg for p in required if p is not missing for arg in (p.opts[0], p.name)]
            yield words, missing, given + store

    return list(walk(cli, []))


def test_every_required_option_is_refused_when_missing(tmp_path, monkeypatch):
    """A required option left out is a usage error (exit 2) naming it, before any work: never a None the
    command then trips over (click passes a required option's explicit default None through)."""
    from click.testing import CliRunner

    from scinsearch.cli import cli

    monkeypatch.chdir(tmp_path)
    found = required_options()
    assert {" ".join(words) for words, _, _ in found} >= {
        "download",
        "prepare",
        "evaluate",
        "compare",
        "finetune apply",
    }
    for words, missing, given in found:
        result = CliRunner().invoke(cli, words + given)
        assert result.exit_code == 2 and f"Missing option '{missing.opts[0]}'" in result.output, (words, result.output)
