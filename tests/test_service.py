"""The kiosk service over a real Searcher (tiny SigLIP, embedded store): answers, 4xx reasons,
path safety, API key, CORS, and the privacy rule that a patient photo never reaches disk or logs."""

from __future__ import annotations

import asyncio
import base64
import builtins
import io
import json
import logging
import os
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from PIL import Image

from scinsearch import rules, testing
from scinsearch.schema import point_id_for
from scinsearch.service import ServiceSettings, create_app
from scinsearch.service.image_files import ImageFiles
from scinsearch.store import StoredPoint

LICENCE_WORDS = "SCIN Data Use License"
BASE_URL = "http://localhost"  # a host name the service accepts (TestClient's default, testserver, is refused)


@pytest.fixture(scope="module")
def searcher(clean_searcher, tiny_embedder):
    """A real Searcher over the clean synthetic release, embedded with the tiny SigLIP, plus one hostile point
    whose image path leaves the image folder."""
    clean_searcher.store.upsert(
        [
            StoredPoint(
                point_id_for("evil"),
                {
                    "image_id": "evil",
                    "image_path": "../../../etc/passwd",
                    "case_id": "evil-case",
                    "case_ids": ["evil-case"],
                },
                tiny_embedder.embed_texts(["evil"])[0] * -1,
            )
        ]
    )
    return clean_searcher


def make_client(searcher, **options) -> TestClient:
    app = create_app(ServiceSettings(**options), searcher=searcher)
    return TestClient(app, raise_server_exceptions=False, base_url=BASE_URL)


@pytest.fixture(scope="module")
def client(searcher):
    with make_client(searcher) as opened:
        yield opened


def png(color=(200, 80, 60), size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width=30_000, height=30_000) -> bytes:
    """A valid PNG header claiming 900 megapixels, a few bytes long."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def search(client, data: bytes | None = None, params=None, **form):
    files = {"photo": ("photo.png", data, "image/png")} if data is not None else None
    return client.post("/search", params=params, files=files, data=form or None)


def assert_notices(body: dict) -> None:
    assert "not a diagnosis" in body["disclaimer"].lower()
    assert LICENCE_WORDS in body["licence"]


# Answers ----------------------------------------------------------------------------------------


def test_health_ready_and_filters(client, searcher):
    assert client.get("/health").json() == {"status": "alive"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["images"] is True
    assert ready["model"] == Path(searcher.info.model).name != searcher.info.model  # a folder's name, never its path
    assert ready["compiled"] == []  # `serve --compile` is off by default
    assert ready["backend"] == "torch"
    choices = client.get("/filters").json()["choices"]
    assert "FST6" in choices["fitzpatrick"] and "arm" in choices["body_parts"]


def test_photo_search_gives_cases_suggestions_urls_and_notices(client, clean_release, searcher):
    labelled = next(p for p in searcher.store.scroll() if p.payload.get("labelled") and p.payload.get("image_path"))
    photo = (clean_release / labelled.payload["image_path"]).read_bytes()  # the service lists labelled cases
    response = search(client, photo, params={"top_k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_notices(body)
    assert 1 <= len(body["results"]) <= 4 and "suggestions" in body
    assert body["results"][0]["score"] > 0.99  # the stored image finds itself
    first = body["results"][0]
    assert first["image_url"] == f"/images/{first['image_id']}"
    assert first["thumbnail_url"].endswith("?size=thumb")
    assert client.get(first["thumbnail_url"]).status_code == 200
    assert response.headers["cache-control"] == "no-store"


def test_raw_image_body_and_form_filters(client):
    raw = client.post("/search?top_k=2", content=png(), headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and len(raw.json()["results"]) <= 2
    filtered = search(client, png(), body_parts="arm", fitzpatrick="5")
    assert filtered.status_code == 200, filtered.text
    expected = {"fitzpatrick": ["FST5"], "body_parts": ["arm"], "labelled_only": True}
    assert filtered.json()["query"]["filters"] == expected
    for result in filtered.json()["results"]:
        assert "arm" in result["body_parts"] and result["fitzpatrick_skin_type"] == "FST5"


def test_text_search_and_similar_carry_notices(client):
    text = client.post("/search/text", params={"age_groups": "30-39"}, json={"text": "itchy red ring", "top_k": 3})
    assert text.status_code == 200, text.text
    assert_notices(text.json())
    assert text.json()["query"]["filters"] == {"age_groups": ["AGE_30_TO_39"], "labelled_only": True}
    in_json = client.post("/search/text", json={"text": "a rash", "filters": {"body_parts": ["arm"]}})
    assert in_json.status_code == 200
    assert in_json.json()["query"]["filters"] == {"body_parts": ["arm"], "labelled_only": True}
    image_id = text.json()["results"][0]["image_id"]
    like = client.get(f"/images/{image_id}/similar", params={"top_k": 3})
    assert like.status_code == 200, like.text
    assert_notices(like.json())
    assert image_id not in [r["image_id"] for r in like.json()["results"]]


def test_the_service_lists_only_labelled_cases_unless_asked_otherwise(client, searcher):
    """Issue 22: unlabelled cases must not fill the slots a health worker reads as evidence; the store
    query is filtered, so top_k is still filled; labelled_only=false lists every case, for research."""
    labelled = {str(p.payload["image_id"]) for p in searcher.store.scroll() if p.payload.get("labelled")}
    unlabelled = {str(p.payload["image_id"]) for p in searcher.store.scroll()} - labelled
    assert unlabelled, "the synthetic release has unlabelled cases"
    top_k = 12
    answers = {
        "photo": search(client, png(), params={"top_k": top_k}),
        "text": client.post("/search/text", json={"text": "a red rash", "top_k": top_k}),
        "like": client.get(f"/images/{sorted(labelled)[0]}/similar", params={"top_k": top_k}),
    }
    for kind, answer in answers.items():
        results = answer.json()["results"]
        assert len(results) == top_k and {r["image_id"] for r in results} <= labelled, kind
        assert answer.json()["query"]["filters"]["labelled_only"] is True
    every = [
        search(client, png(), params={"top_k": 40, "labelled_only": "false"}),
        client.post("/search/text", json={"text": "a red rash", "top_k": 40, "filters": {"labelled_only": False}}),
    ]
    for answer in every:
        assert {r["image_id"] for r in answer.json()["results"]} & unlabelled, "research use sees every case"
        assert "labelled_only" not in answer.json()["query"]["filters"]
    spec = client.get("/openapi.json").json()
    parameter = next(p for p in spec["paths"]["/search"]["post"]["parameters"] if p["name"] == "labelled_only")
    assert parameter["schema"]["default"] is True and "research" in parameter["description"]


def test_images_full_and_thumbnail(client, clean_release):
    result = search(client, png()).json()["results"][0]
    full = client.get(result["image_url"])
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"
    assert full.content == (clean_release / result["image_path"]).read_bytes()
    thumb = client.get(result["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 320


def test_case_endpoint(client):
    result = search(client, png()).json()["results"][0]
    case = client.get(f"/cases/{result['case_id']}")
    assert case.status_code == 200
    assert result["image_id"] in [image["image_id"] for image in case.json()["images"]]
    assert all("thumbnail_url" in image for image in case.json()["images"])
    assert_notices(case.json())


# Bad input: a 4xx with one line, never a 500 -----------------------------------------------------


@pytest.mark.parametrize(
    "send, status, words",
    [
        (lambda c: c.post("/search"), 400, "no photo"),
        (lambda c: c.post("/search", data={"top_k": "3"}), 400, "no photo"),
        (lambda c: c.post("/search", files={"other": ("x.png", png(), "image/png")}), 400, "photo"),
        (lambda c: search(c, b""), 400, "empty"),
        (lambda c: search(c, b"this is not a picture at all"), 400, "not an image"),
        (lambda c: search(c, png()[:60]), 400, "broken image"),
        (lambda c: search(c, bomb_png()), 413, "pixels"),
        (lambda c: search(c, png(), params={"fitzpatrick": "FST9"}), 400, "fitzpatrick"),
        (lambda c: search(c, png(), age_groups="teen"), 400, "age group"),
        (lambda c: search(c, png(), params={"monk_min": "dark"}), 400, "whole number"),
        (lambda c: search(c, png(), params={"top_k": "0"}), 400, "top_k"),
        (lambda c: search(c, png(), params={"min_score": "2"}), 400, "min_score"),
        (lambda c: search(c, png(), params={"conditions": "Dragon pox"}), 400, "no stored case"),
        (lambda c: c.post("/search", content=b"{}", headers={"Content-Type": "application/json"}), 415, "content type"),
        (
            lambda c: c.post("/search", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data"}),
            400,
            "boundary",
        ),
        (lambda c: c.post("/search/text", json={}), 422, "text"),
        (lambda c: c.post("/search/text", json={"text": "   "}), 400, "empty text"),
        (
            lambda c: c.post("/search/text", content=b"{not json", headers={"Content-Type": "application/json"}),
            422,
            "JSON decode error",
        ),
        (lambda c: c.get("/images/123456"), 404, "unknown image"),
        (lambda c: c.get("/images/123456/similar"), 404, "unknown image"),
        (lambda c: c.get("/cases/987654"), 404, "unknown case"),
        (lambda c: c.get("/images/evil?size=huge"), 422, "size"),
    ],
)
def test_bad_input_gets_a_one_line_4xx(client, send, status, words):
    response = send(client)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    assert words.lower() in detail.lower()


def test_every_route_applies_the_same_limits(client, searcher):
    """One top-k cap for the photo, text and stored-image routes; the page learns the limits from /filters."""
    limits = client.get("/filters").json()
    assert (limits["max_top_k"], limits["max_text_chars"]) == (rules.HTTP_MAX_TOP_K, rules.MAX_TEXT_CHARS)
    over = str(rules.HTTP_MAX_TOP_K + 1)
    image_id = next(searcher.store.scroll()).payload["image_id"]
    answers = [
        search(client, png(), params={"top_k": over}),
        client.post("/search/text", json={"text": "a rash", "top_k": int(over)}),
        client.get(f"/images/{image_id}/similar", params={"top_k": over}),
    ]
    assert [(a.status_code, a.json()["detail"]) for a in answers] == [
        (400, f"top_k must be from 1 to {rules.HTTP_MAX_TOP_K}, not {over}")
    ] * 3
    long_text = client.post("/search/text", json={"text": "x" * (rules.MAX_TEXT_CHARS + 1)})
    assert long_text.status_code == 422
    assert client.post("/search/text", json={"text": "x" * rules.MAX_TEXT_CHARS}).status_code == 200


@pytest.mark.parametrize(
    "send, status, code",
    [
        (lambda c: c.post("/search"), 400, "no_photo"),
        (lambda c: search(c, b""), 400, "empty_upload"),
        (lambda c: search(c, b"this is not a picture at all"), 400, "not_an_image"),
        (lambda c: search(c, png()[:60]), 400, "broken_image"),
        (lambda c: search(c, bomb_png()), 413, "image_too_large"),
        (lambda c: search(c, png(), params={"fitzpatrick": "FST9"}), 400, "bad_filter"),
        (lambda c: search(c, png(), params={"conditions": "Dragon pox"}), 400, "bad_filter"),
        (lambda c: c.post("/search/text?age_groups=teen", json={"text": "red"}), 400, "bad_filter"),
        (lambda c: c.post("/search/text", json={"text": "   "}), 400, "empty_text"),
        (lambda c: search(c, png(), params={"top_k": "0"}), 400, "bad_request"),
        (lambda c: c.post("/search/text", json={}), 422, "bad_request"),
        (
            lambda c: c.post("/search", content=b"{}", headers={"Content-Type": "application/json"}),
            415,
            "unsupported_format",
        ),
        (lambda c: c.get("/images/123456/similar"), 404, "not_found"),
        (lambda c: c.get("/no/such/page"), 404, "not_found"),
    ],
)
def test_every_error_carries_a_machine_code(client, send, status, code):
    """{"detail": precise one line, "code": what the page turns into plain advice} (codes: scinsearch.errors)."""
    response = send(client)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["detail"]


def test_error_codes_for_size_key_and_crash(searcher, monkeypatch):
    with make_client(searcher, max_upload_bytes=10_000, api_key="k", warm_up=False) as small:
        unauthorized = small.post("/search/text", json={"text": "red"})
        assert unauthorized.status_code == 401 and unauthorized.json()["code"] == "unauthorized"
        assert unauthorized.headers["www-authenticate"] == "ApiKey"
        big = small.post(
            "/search",
            files={"photo": ("p.png", png(size=(400, 400)) + b"\0" * 20_000, "image/png")},
            headers={"X-API-Key": "k"},
        )
        assert big.status_code == 413 and big.json()["code"] == "upload_too_large"
        monkeypatch.setattr(searcher, "search_text", lambda *a, **k: 1 / 0)
        crash = small.post("/search/text", json={"text": "red"}, headers={"X-API-Key": "k"})
        assert crash.status_code == 500 and crash.json()["code"] == "internal"


def test_upload_over_the_limit_is_413_whatever_the_content_length(searcher):
    with make_client(searcher, max_upload_bytes=10_000, warm_up=False) as small:
        assert search(small, png(size=(400, 400)) + b"\0" * 20_000).status_code == 413
        chunks = iter([b"\xff" * 6000] * 4)  # streamed, no Content-Length
        streamed = small.post("/search", content=chunks, headers={"Content-Type": "image/jpeg"})
        assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]


def test_unexpected_error_is_a_500_without_traceback(searcher, monkeypatch):
    with make_client(searcher, warm_up=False) as broken:
        monkeypatch.setattr(searcher, "search_text", lambda *a, **k: 1 / 0)
        response = broken.post("/search/text", json={"text": "rash"})
    assert response.status_code == 500
    assert response.json()["detail"].startswith("internal error (ZeroDivisionError)")


# Path safety ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/images/..%2F..%2Fetc%2Fpasswd",
        "/images/..%2F..%2Fetc%2Fpasswd?size=thumb",
        "/images/../../etc/passwd",
        "/images/%2Fetc%2Fpasswd",
        "/images/a%2Fb",
        "/images/a/b",
        "/images/evil",
        "/images/evil?size=thumb",
        "/cases/..%2F..%2Fetc",
        "/images/%00",
    ],
)
def test_image_paths_never_leave_the_images_folder(client, path):
    response = client.get(path)
    assert response.status_code == 404, (path, response.status_code)
    assert b"root:" not in response.content


async def raw_get(app, path: str) -> tuple[int, bytes]:
    """A request with its path exactly as given: no client-side normalisation of '..'."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "root_path": "",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


@pytest.mark.parametrize(
    "path",
    [
        "/images/../../etc/passwd",
        "/images/..",
        "/images/../../../etc/passwd/similar",
        "/images/..\\..\\etc\\passwd",
        "/cases/../../etc",
        "/images/./evil",
    ],
)
def test_raw_dot_paths_are_refused(client, path):
    status, body = client.portal.call(raw_get, client.app, path)
    assert status == 404 and b"root:" not in body


def test_image_files_refuse_escapes_and_symlinks(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "secret.png"
    root.mkdir()
    outside.write_bytes(png())
    (root / "ok.png").write_bytes(png())
    (root / "link.png").symlink_to(outside)
    (root / "notes.txt").write_text("hello")
    files = ImageFiles(root, 64)
    assert files.path_for({"image_path": "ok.png"}) == (root / "ok.png").resolve()
    for bad in ("../secret.png", str(outside), "link.png", "notes.txt", "", "sub/../../secret.png", None):
        with pytest.raises(HTTPException) as caught:
            files.path_for({"image_path": bad})
        assert caught.value.status_code == 404
    with pytest.raises(HTTPException):
        ImageFiles(None, 64).path_for({"image_path": "ok.png"})


# Security options -------------------------------------------------------------------------------


def test_api_key_off_by_default_and_required_when_set(client, searcher):
    assert search(client, png()).status_code == 200
    with make_client(searcher, api_key="s3cret", warm_up=False) as locked:
        assert search(locked, png()).status_code == 401
        assert (
            locked.post("/search", files={"photo": ("p.png", png())}, headers={"X-API-Key": "nope"}).status_code == 401
        )
        assert "X-API-Key" in locked.get("/images/123").json()["detail"]
        assert (
            locked.post("/search", files={"photo": ("p.png", png())}, headers={"X-API-Key": "s3cret"}).status_code
            == 200
        )
        assert locked.get("/health").status_code == 200 and locked.get("/").status_code == 200


def test_cors_off_by_default_and_limited_to_the_given_origins(client, searcher):
    preflight = {"Origin": "http://tablet.local", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/search", headers=preflight).headers
    with make_client(searcher, cors_origins=("http://tablet.local",), warm_up=False) as open_client:
        allowed = open_client.options("/search", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "http://tablet.local"
        other = open_client.options("/search", headers={**preflight, "Origin": "http://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "http://evil.example"


# Privacy ----------------------------------------------------------------------------------------


class WriteRecorder:
    """Records every file opened for writing through Python (os.open and open), anonymous
    O_TMPFILE files included, which a directory listing would not show."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | getattr(os, "O_TMPFILE", 0)

    def __init__(self, monkeypatch):
        self.opened: list[str] = []
        real_os_open, real_open = os.open, builtins.open

        def os_open(path, flags, *args, **kwargs):
            if flags & self.WRITE_FLAGS:
                self.opened.append(str(path))
            return real_os_open(path, flags, *args, **kwargs)

        def open_(file, mode="r", *args, **kwargs):
            if any(letter in mode for letter in "wax+"):
                self.opened.append(str(file))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)


def test_upload_writes_no_file_and_logs_no_image_bytes(client, tmp_path, monkeypatch, caplog, searcher):
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    store_folder = Path(searcher.settings.qdrant_path)
    before = snapshot(store_folder)
    photo = testing.scin_sized_png(seed=3)  # ~2 MB: over Starlette's 1 MB spool-to-disk threshold
    assert len(photo) > 1024 * 1024
    caplog.set_level(logging.DEBUG)
    recorder = WriteRecorder(monkeypatch)
    spooled = tempfile.SpooledTemporaryFile(max_size=1)
    spooled.write(b"rolled over")  # the probe sees what Starlette's parser would do
    spooled.close()
    assert recorder.opened, "the write probe does not work"
    recorder.opened.clear()
    response = search(client, photo, body_parts="arm")
    text = client.post("/search/text", json={"text": "secret patient words"})
    assert response.status_code == 200 and text.status_code == 200
    assert recorder.opened == []
    assert list(spool.iterdir()) == []
    assert snapshot(store_folder) == before
    logged = caplog.text + "".join(str(record.args) for record in caplog.records)
    assert "photo search" in logged
    for piece in (photo[100:132], photo[-32:]):
        assert piece.hex() not in logged and repr(piece)[2:-1] not in logged
        assert base64.b64encode(piece).decode()[:24] not in logged
    assert "secret patient words" not in logged


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and ".lock" not in p.name
    }


def test_starlette_spooled_file_is_never_used(client, monkeypatch):
    import starlette.formparsers as formparsers

    monkeypatch.setattr(formparsers, "SpooledTemporaryFile", lambda *a, **k: pytest.fail("a temporary file was made"))
    assert search(client, testing.scin_sized_png(seed=4)).status_code == 200


# Start-up and threading -------------------------------------------------------------------------


def has_running_loop() -> bool:
    try:
        return asyncio.get_running_loop() is not None
    except RuntimeError:
        return False


class FakeSearcher:
    """Counts how it is opened and called, and where inference runs."""

    opened = 0

    def __init__(self):
        self.info = type("Info", (), {"model": "fake", "dim": 2, "extra": {}})()
        self.store = type("Store", (), {"name": "fake"})()
        self.calls, self.closed, self.loop_in_inference = 0, False, []

    @classmethod
    def open(cls, settings):
        cls.opened += 1
        return cls()

    def search_image(self, image, filters=None, options=None):
        from scinsearch.results import SearchResult
        from scinsearch.suggest import suggest_conditions

        self.loop_in_inference.append(has_running_loop())
        self.calls += 1
        return SearchResult({"kind": "image"}, [], suggest_conditions([]))

    def prepare_photo(self, image):  # no embedder.preprocessor: the service decodes in-process
        return image

    search_prepared = search_image

    def close(self):
        self.closed = True


def test_searcher_opened_once_at_start_up_and_inference_off_the_event_loop(monkeypatch):
    import scinsearch.search

    FakeSearcher.opened = 0
    monkeypatch.setattr(scinsearch.search, "Searcher", FakeSearcher)
    app = create_app(ServiceSettings())
    with TestClient(app, base_url=BASE_URL) as fake_client:
        fake = app.state.service.searcher
        assert FakeSearcher.opened == 1 and fake.calls == 1  # the warm-up query, before any request
        for _ in range(3):
            assert search(fake_client, png()).status_code == 200
        assert FakeSearcher.opened == 1 and fake.calls == 4
        assert fake.loop_in_inference == [False] * 4
    assert fake.closed


def test_page_and_assets_work_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert all(part in page.text for part in ('capture="environment"', 'accept="image/*"', 'id="disclaimer"'))
    static = Path(__file__).parents[1] / "src" / "scinsearch" / "service" / "static"
    for name in ("app.js", "api.js", "i18n.js", "render.js", "app.css", "i18n/en.json"):
        assert client.get(f"/static/{name}").status_code == 200
    for asset in (path for path in static.rglob("*") if path.is_file()):  # nothing from another host: offline
        assert not any(word in asset.read_text() for word in ("http://", "https://", "//cdn")), asset.name


def test_openapi_documents_the_upload_and_filters(client):
    spec = client.get("/openapi.json").json()
    upload = spec["paths"]["/search"]["post"]
    assert "photo" in upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"top_k", "fitzpatrick", "body_parts", "age_groups"} <= {p["name"] for p in upload["parameters"]}
    assert {"/search/text", "/images/{image_id}", "/cases/{case_id}", "/health", "/ready"} <= set(spec["paths"])


def test_api_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    for stock in ("index.html", "swagger-initializer.js", "oauth2-redirect.html"):  # they open an outside demo API
        assert client.get(f"/docs-assets/{stock}").status_code == 404, stock


def test_openapi_is_published_as_3_0_for_the_bundled_swagger_ui(client):
    """swagger-ui-bundle's Swagger UI 4.15 renders 3.0 only; 3.1's `{"type": "null"}` becomes `nullable`."""
    spec = client.get("/openapi.json").json()
    assert spec["openapi"] == "3.0.3" and '"type": "null"' not in json.dumps(spec)
    top_k = spec["components"]["schemas"]["TextQuery"]["properties"]["top_k"]
    assert top_k["type"] == "integer" and top_k["nullable"] is True and "anyOf" not in top_k


def test_openapi_3_1_forms_become_their_3_0_equivalents():
    from scinsearch.service.api_docs import as_openapi_3_0

    document = {
        "openapi": "3.1.0",
        "components": {
            "schemas": {
                "A": {"anyOf": [{"$ref": "#/components/schemas/B"}, {"type": "null"}], "title": "A"},
                "C": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
                "D": {"type": "string", "const": "x", "examples": ["y", "z"]},
                "E": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1.5},
            }
        },
        "paths": {"/p": {"get": {"responses": {"200": {"content": {"a/b": {"examples": {"one": {"value": 1}}}}}}}}},
    }
    schemas = as_openapi_3_0(document)["components"]["schemas"]
    assert schemas["A"] == {"allOf": [{"$ref": "#/components/schemas/B"}], "title": "A", "nullable": True}
    assert schemas["C"] == {"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True}
    assert schemas["D"] == {"type": "string", "enum": ["x"], "example": "y"}
    assert schemas["E"] == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1.5,
        "exclusiveMaximum": True,
    }
    media = as_openapi_3_0(document)["paths"]["/p"]["get"]["responses"]["200"]["content"]["a/b"]
    assert media == {"examples": {"one": {"value": 1}}}  # a media type's named examples are 3.0 already
    assert document["openapi"] == "3.1.0"  # the input is not changed


def test_small_leaks_and_quirks_of_issue_23(client, caplog):
    """HEAD / answers; the stock Swagger index.html is not served; a malformed multipart body's bytes
    never reach a log; text of nothing but control or invisible characters is refused."""
    assert client.head("/").status_code == 200
    assert client.get("/docs-assets/index.html").status_code == 404
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    caplog.set_level(logging.DEBUG)
    body = b'--b\r\nContent-Disposition: form-data; name="photo"; filename="x"\r\n\x01Q: q\r\n\r\nDATA\r\n--b--\r\n'
    answer = client.post("/search", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 400
    assert [r.getMessage() for r in caplog.records if r.name.startswith("python_multipart")] == []
    for text in ("\u200b\u200b", "\x00\x01\x7f", "\u200d\u2060\ufeff \u202e", "\x85\u00ad"):
        answer = client.post("/search/text", json={"text": text})
        assert answer.status_code == 400 and answer.json()["code"] == "empty_text", (text, answer.text)
