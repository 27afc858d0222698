"""The service's limits over real HTTP (uvicorn in a thread, a small store, a model-free embedder):
formats refused unparsed, the API key checked before any body byte is read, bodies bounded in size
and time, uploads in flight bounded, Host names checked, the API key kept off the command line.

The same app `scinsearch serve` runs; tests/test_hostile_service.py attacks the real command."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import numpy as np
import pytest
import uvicorn
from PIL import EpsImagePlugin, Image, PsdImagePlugin, TiffImagePlugin
from uvicorn.protocols.http.h11_impl import H11Protocol

from conftest import SpyEmbedder
from hostile_corpus import encoded, eps_comment_bomb, photo, psd_header
from hostile_http import free_port, send
from scinsearch import testing
from scinsearch.cli import main
from scinsearch.dataset import read_release
from scinsearch.errors import BROKEN_IMAGE, OVERLOADED, TIMEOUT, UNAUTHORIZED, UNSUPPORTED_FORMAT, UPLOAD_TOO_LARGE
from scinsearch.images import allowed_formats
from scinsearch.photo_worker import PhotoDecoder
from scinsearch.pipeline import run_embed
from scinsearch.search import Searcher
from scinsearch.service import ServiceSettings, create_app
from scinsearch.service.connections import guarded_protocol
from scinsearch.settings import Settings
from scinsearch.store import open_store

KEY = "correct horse battery staple"


class TextSpy(SpyEmbedder):
    """The spy embedder (real image decoding, no model) that also embeds text, so /search/text works."""

    def embed_texts(self, texts):
        vectors = np.ones((len(texts), self.dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def searcher(tmp_path_factory):
    release = testing.write_release(tmp_path_factory.mktemp("limits") / "scin", cases=12, broken_files=False)
    embedder = TextSpy()
    settings = Settings(qdrant_location=":memory:", collection="limits", model=embedder.model_name)
    store = open_store(settings)
    run_embed(read_release(release), embedder, store, batch_size=16, workers=0, progress=False, warn=lambda m: None)
    opened = Searcher(settings, embedder=embedder, store=store)
    yield opened
    opened.close()
    store.close()


@contextlib.contextmanager
def serving(searcher, **options):
    """The service on a free port of 127.0.0.1, under uvicorn as `serve` runs it; yields the port."""
    settings = ServiceSettings(port=free_port(), warm_up=False, **options)
    config = uvicorn.Config(
        create_app(settings, searcher=searcher),
        host="127.0.0.1",
        port=settings.port,
        log_level="warning",
        http=guarded_protocol(settings.max_connections, settings.header_timeout_seconds),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield settings.port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def multipart(data: bytes, name: str = "photo.png", content_type: str = "image/png") -> tuple[dict, bytes]:
    boundary = "hostile-boundary-1234"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(body))}, body


def raw_image(data: bytes, content_type: str = "image/png") -> tuple[dict, bytes]:
    return {"Content-Type": content_type, "Content-Length": str(len(data))}, data


# Item 1: formats ---------------------------------------------------------------------------------


def test_eps_psd_and_tiff_uploads_are_415_and_never_parsed(searcher, monkeypatch):
    parsed = []
    for plugin in (EpsImagePlugin.EpsImageFile, PsdImagePlugin.PsdImageFile, TiffImagePlugin.TiffImageFile):
        monkeypatch.setattr(plugin, "_open", lambda self, _name=plugin.format: parsed.append(_name))
    tiff = encoded(photo(), "TIFF")
    with serving(searcher) as port:
        for data in (eps_comment_bomb(0.2), psd_header(), tiff):
            for headers, body in (multipart(data), raw_image(data)):
                answer = send(port, "POST", "/search", headers, body)
                assert (answer.status, answer.json()["code"]) == (415, UNSUPPORTED_FORMAT), answer.body
                assert "not accepted" in answer.json()["detail"]
    assert parsed == []


def test_a_decoder_error_of_any_type_is_a_4xx_not_a_500(searcher, monkeypatch):
    from PIL import ImageFile

    good = encoded(photo(), "PNG")
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: {}["no such key"])  # a KeyError inside
    monkeypatch.setattr(PhotoDecoder, "START_METHOD", "fork")  # the decoder process inherits the sabotage
    with serving(searcher) as port:
        answer = send(port, "POST", "/search", *raw_image(good))
    assert (answer.status, answer.json()["code"]) == (400, BROKEN_IMAGE)


def test_openapi_names_the_accepted_formats(searcher):
    with serving(searcher) as port:
        spec = send(port, "GET", "/openapi.json").json()
    description = spec["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert all(name in description["properties"]["photo"]["description"] for name in allowed_formats())


# Item 2: the key before the body, bounded JSON ------------------------------------------------------


def test_api_key_is_checked_before_a_byte_of_the_body_is_read(searcher):
    huge = {"Content-Type": "application/json", "Content-Length": str(200 * 2**20)}
    with serving(searcher, api_key=KEY) as port:
        for path in ("/search/text", "/search"):
            answer = send(port, "POST", path, huge, timeout=5)  # the body never comes
            assert (answer.status, answer.json()["code"]) == (401, UNAUTHORIZED), (path, answer)
            assert answer.headers["www-authenticate"] == "ApiKey"
        wrong = send(port, "GET", "/cases/x", {"X-API-Key": "wrong"}, timeout=5)
        assert wrong.status == 401
        assert send(port, "GET", "/health").status == 200  # never needs the key


def test_text_search_body_is_bounded_declared_or_streamed(searcher):
    limit = ServiceSettings().max_json_body_bytes
    with serving(searcher, api_key=KEY) as port:
        keyed = {"X-API-Key": KEY, "Content-Type": "application/json"}
        declared = send(port, "POST", "/search/text", {**keyed, "Content-Length": str(200 * 2**20)}, timeout=5)
        assert (declared.status, declared.json()["code"]) == (413, UPLOAD_TOO_LARGE)
        padding = json.dumps({"text": "rash", "filters": {"body_parts": ["arm"] * (limit // 2)}}).encode()
        assert len(padding) > 2 * limit
        pieces = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (padding[:50_000], padding[50_000:])] + [
            b"0\r\n\r\n"
        ]
        streamed = send(port, "POST", "/search/text", {**keyed, "Transfer-Encoding": "chunked"}, pieces, timeout=5)
        assert (streamed.status, streamed.json()["code"]) == (413, UPLOAD_TOO_LARGE)
        fine = send(port, "POST", "/search/text", {**keyed, "Content-Length": "16"}, b'{"text": "rash"}')
        assert fine.status == 200, fine.body


# Item 4: deadlines, uploads in flight, overload --------------------------------------------------------


def slow_upload(port: int, declared: int = 100_000, pieces: int = 40, pause: float = 0.1):
    headers = {"Content-Type": "image/jpeg", "Content-Length": str(declared)}
    return send(port, "POST", "/search", headers, [b"\xff" * 10] * pieces, pause=pause, timeout=10)


def test_a_body_that_comes_too_slowly_gets_408(searcher):
    with serving(searcher, body_timeout_seconds=1.0) as port:
        answer = slow_upload(port)
    assert (answer.status, answer.json()["code"]) == (408, TIMEOUT)
    assert 1.0 <= answer.seconds < 3.0


def test_uploads_in_flight_are_bounded_and_the_next_gets_503_at_once(searcher):
    with serving(searcher, max_uploads=2, body_timeout_seconds=2.0) as port:
        stalled = [threading.Thread(target=slow_upload, args=(port,)) for _ in range(2)]
        for thread in stalled:
            thread.start()
        time.sleep(0.5)
        third = send(port, "POST", "/search", *raw_image(encoded(photo(), "PNG")), timeout=5)
        for thread in stalled:
            thread.join()
        after = send(port, "POST", "/search", *raw_image(encoded(photo(), "PNG")))
    assert (third.status, third.json()["code"]) == (503, OVERLOADED) and third.seconds < 1.0
    assert third.headers["retry-after"].isdigit()
    assert after.status == 200  # the slots come back when the stalled uploads are refused


def test_bytes_in_flight_are_bounded(searcher):
    megabyte = 2**20
    with serving(
        searcher, max_upload_bytes=megabyte, max_upload_bytes_in_flight=2 * megabyte, body_timeout_seconds=1.5
    ) as port:
        stalled = [threading.Thread(target=slow_upload, args=(port, megabyte, 10, 0.2)) for _ in range(2)]
        for thread in stalled:
            thread.start()
        time.sleep(0.5)
        third = send(port, "POST", "/search", {"Content-Type": "image/png", "Content-Length": str(megabyte)}, timeout=5)
        small_text = send(port, "POST", "/search/text", *raw_image(b'{"text": "rash"}', "application/json"))
        for thread in stalled:
            thread.join()
    assert (third.status, third.json()["code"]) == (503, OVERLOADED)
    assert small_text.status == 503  # 16 bytes more would pass the budget too


# Item 5: Host names -------------------------------------------------------------------------------------


def test_only_expected_host_names_are_answered(searcher):
    with serving(searcher, allowed_hosts=("kiosk.local",)) as port:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.", "[::2]"):
            answer = send(port, "GET", "/health", host=host)
            assert (answer.status, answer.json()["code"]) == (400, "bad_request"), host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "kiosk.local", "KIOSK.local:80"):
            assert send(port, "GET", "/health", host=host).status == 200, host
        assert send(port, "GET", "/filters", {"Host": ""}).status == 400
    with serving(searcher, allowed_hosts=("*",)) as port:
        assert send(port, "GET", "/health", host="anything.example").status == 200


# Item 6 and the serve command's settings ----------------------------------------------------------------


@pytest.fixture
def fake_serve(monkeypatch):
    """`scinsearch serve` with the store, model and uvicorn replaced: records what would be served."""
    import uvicorn as real_uvicorn

    from scinsearch.commands import service_cmds

    calls = []

    class Closable:
        embedder = type("Embedder", (), {"describe": lambda self: "fake"})()
        adapter = None

        def close(self):
            pass

    monkeypatch.setattr(service_cmds, "open_searcher", lambda settings, model_given=True: (Closable(), Closable()))
    monkeypatch.setattr(service_cmds, "check_port_free", lambda host, port: None)  # tests/test_cli_advice.py
    monkeypatch.setattr(real_uvicorn, "run", lambda app, **options: calls.append((app, options)))
    monkeypatch.delenv("SCINSEARCH_API_KEY", raising=False)
    return calls


def served_settings(calls) -> ServiceSettings:
    assert len(calls) == 1
    return calls[0][0].state.service.settings


def test_api_key_on_the_command_line_is_refused(fake_serve, capsys):
    assert main(["serve", "--api-key", KEY]) == 1
    err = capsys.readouterr().err
    assert "visible to every user" in err and "SCINSEARCH_API_KEY" in err and "--api-key-file" in err
    assert fake_serve == [] and KEY not in err


def test_api_key_from_the_environment_or_a_file(fake_serve, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SCINSEARCH_API_KEY", KEY)
    assert main(["serve"]) == 0
    settings = served_settings(fake_serve)
    assert settings.api_key == KEY and KEY not in repr(settings)
    fake_serve.clear()
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    assert main(["serve", "--api-key-file", str(key_file)]) == 1  # and the environment: given twice
    assert "given twice" in capsys.readouterr().err
    monkeypatch.delenv("SCINSEARCH_API_KEY")
    assert main(["serve", "--api-key-file", str(key_file)]) == 0
    assert served_settings(fake_serve).api_key == KEY
    assert "other users" not in capsys.readouterr().err
    fake_serve.clear()
    key_file.chmod(0o644)
    assert main(["serve", "--api-key-file", str(key_file)]) == 0
    assert "can be read by other users" in capsys.readouterr().err


def test_serve_help_says_where_the_key_comes_from(capsys):
    assert main(["serve", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "SCINSEARCH_API_KEY" in help_text and "--api-key-file" in help_text and "--api-key TEXT" not in help_text


def test_serve_flags_and_environment_reach_the_settings_and_uvicorn(fake_serve, monkeypatch):
    monkeypatch.setenv("SCINSEARCH_ALLOWED_HOSTS", "kiosk.local,192.168.1.20")
    monkeypatch.setenv("SCINSEARCH_BODY_TIMEOUT", "12")
    arguments = ["serve", "--max-uploads", "3", "--max-inflight-mb", "40", "--max-connections", "20"]
    assert main([*arguments, "--max-upload-mb", "5", "--max-megapixels", "24"]) == 0
    settings = served_settings(fake_serve)
    assert settings.allowed_hosts == ("kiosk.local", "192.168.1.20")
    assert (settings.body_timeout_seconds, settings.max_uploads, settings.max_connections) == (12.0, 3, 20)
    assert (settings.max_upload_bytes_in_flight, settings.max_upload_bytes) == (40 * 2**20, 5 * 2**20)
    assert settings.max_pixels == 24_000_000
    assert "limit_concurrency" not in fake_serve[0][1]  # it would answer 503 to idle sockets' newcomers
    assert issubclass(fake_serve[0][1]["http"], H11Protocol)
    fake_serve.clear()
    assert main(["serve", "--max-upload-mb", "50", "--max-inflight-mb", "40"]) == 1  # one upload must fit
    assert fake_serve == []


def test_listening_everywhere_without_host_names_warns(fake_serve, capsys):
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    assert "--allowed-hosts" in capsys.readouterr().err


def test_pillow_plugins_used_by_the_tests_exist():
    """The monkeypatched plugins above are real: a rename in Pillow must not make those tests vacuous."""
    Image.init()
    assert {"EPS", "PSD", "TIFF"} <= set(Image.OPEN)
