"""`serve --compile`: the query towers are compiled for batch 1 before /ready turns green, and the served
vectors are the eager ones.

The fast tests compile with torch.compile's "aot_eager" backend: the same graph capture (dynamo,
static batch-1 shapes, the text tower's 64 tokens) without inductor's C++ code generation, which takes
20-90 s per tower on 2 cores. The same test with inductor runs with SCINSEARCH_SLOW_TESTS=1.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from scinsearch import compiling, testing
from scinsearch.dataset import read_release
from scinsearch.embedding import Embedder
from scinsearch.pipeline import run_embed
from scinsearch.search import Searcher
from scinsearch.search_filters import SearchFilters
from scinsearch.service import ServiceSettings, create_app
from scinsearch.settings import Settings
from scinsearch.store import open_store

BACKENDS = ["aot_eager"] + (["inductor"] if os.environ.get("SCINSEARCH_SLOW_TESTS") else [])


@pytest.fixture(scope="module")
def store_settings(tmp_path_factory, tiny_embedder, clean_release) -> Settings:
    settings = Settings(
        qdrant_path=tmp_path_factory.mktemp("compile-store"), collection="compile", model=tiny_embedder.model_name
    )
    store = open_store(settings)
    try:
        data = read_release(clean_release)
        data.records = data.records[:12]
        run_embed(data, tiny_embedder, store, batch_size=8, workers=0, progress=False, warn=lambda m: None)
    finally:
        store.close()
    return settings


def photo_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    testing.condition_image(testing.CONDITIONS[seed % 8], (96, 72), random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def served(app) -> Embedder:
    return app.state.service.searcher.embedder


async def lifespan_then(app, during_start_up, after_start_up):
    """Run the app's lifespan in a task and call the service over ASGI while it starts and once it is up."""
    transport = httpx.ASGITransport(app=app)
    started, stop = asyncio.Event(), asyncio.Event()

    async def run_lifespan():
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(run_lifespan())
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost"
        ) as client:  # a host the service answers
            await during_start_up(client)
            await asyncio.wait_for(started.wait(), timeout=600)
            await after_start_up(client)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_service_gives_the_eager_vectors(store_settings, tiny_siglip_dir, monkeypatch, backend):
    monkeypatch.setattr(compiling, "COMPILE_BACKEND", backend)
    if backend == "inductor" and not compiling.compiler_available():
        pytest.skip("no C++ compiler for inductor")
    eager = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="off")
    embedder = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="off")
    photos = [photo_bytes(seed) for seed in range(3)]
    with Searcher(store_settings, embedder=embedder) as searcher:
        app = create_app(ServiceSettings(compile="on"), searcher=searcher)
        answers = {}

        async def nothing(client):
            pass

        async def query(client):
            answers["photo"] = await client.post("/search", files={"photo": ("p.png", photos[0], "image/png")})
            answers["text"] = await client.post("/search/text", json={"text": "itchy red ring"})

        asyncio.run(lifespan_then(app, nothing, query))
        assert embedder.compiled and embedder._compiled_batch == 1 and embedder.compiled_text, embedder.compile_note
        calls = []
        compiled_image, compiled_text = embedder._compiled, embedder._compiled_text
        embedder._compiled = lambda pixels: calls.append("image") or compiled_image(pixels)
        embedder._compiled_text = lambda ids: calls.append("text") or compiled_text(ids)
        for photo in photos:  # one query at a time, as the kiosk sends them
            np.testing.assert_allclose(embedder.embed_images([photo]), eager.embed_images([photo]), atol=1e-5)
        for text in ["itchy red ring", "a dark raised patch on the leg"]:
            np.testing.assert_allclose(embedder.embed_texts([text]), eager.embed_texts([text]), atol=1e-5)
        assert calls == ["image"] * 3 + ["text"] * 2  # the compiled towers answered, not the eager ones
        # a batch of texts (zero-shot prompts) takes the eager tower: the compiled one has one static shape
        np.testing.assert_allclose(embedder.embed_texts(["a", "b c"]), eager.embed_texts(["a", "b c"]), atol=1e-5)
        assert calls == ["image"] * 3 + ["text"] * 2
        # the HTTP answers were computed with the compiled towers and match an eager search
        with Searcher(store_settings, embedder=eager, store=searcher.store) as reference:
            labelled = SearchFilters(labelled_only=True)  # what the service lists by default
            expected = reference.search_image(photos[0], labelled).to_dict()["results"]
            expected_text = reference.search_text("itchy red ring", labelled).to_dict()["results"]
    got = answers["photo"].json()["results"]
    assert answers["photo"].status_code == 200 and [r["image_id"] for r in got] == [r["image_id"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], atol=1e-5)
    got_text = answers["text"].json()["results"]
    assert [r["image_id"] for r in got_text] == [r["image_id"] for r in expected_text]


def test_ready_stays_false_until_the_towers_are_compiled(store_settings, tiny_siglip_dir, monkeypatch):
    monkeypatch.setattr(compiling, "COMPILE_BACKEND", "aot_eager")
    embedder = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="off")
    entered, release = threading.Event(), threading.Event()
    real_prepare = embedder.prepare_queries

    def held_prepare(choice):
        entered.set()
        assert release.wait(timeout=120)
        return real_prepare(choice)

    embedder.prepare_queries = held_prepare
    seen = {}
    with Searcher(store_settings, embedder=embedder) as searcher:
        app = create_app(ServiceSettings(compile="on"), searcher=searcher)

        async def while_compiling(client):
            while not entered.is_set():
                await asyncio.sleep(0.01)
            seen["health"] = (await client.get("/health")).status_code  # the event loop stays free
            seen["during"] = (await client.get("/ready")).status_code
            seen["search"] = (
                await client.post("/search", files={"photo": ("p.png", photo_bytes(0), "image/png")})
            ).status_code
            seen["compiled during"] = embedder.compiled
            release.set()

        async def once_up(client):
            ready = await client.get("/ready")
            seen["after"], seen["compiled"] = ready.status_code, ready.json()["compiled"]

        asyncio.run(lifespan_then(app, while_compiling, once_up))
    expected = {"health": 200, "during": 503, "search": 503, "compiled during": False, "after": 200}
    assert seen == {**expected, "compiled": ["image", "text"]}
    assert embedder.compiled and embedder.compiled_text


def test_compile_off_by_default_and_auto_keeps_only_what_pays(tiny_siglip_dir, monkeypatch):
    assert ServiceSettings().compile == "off"
    monkeypatch.setattr(compiling, "COMPILE_BACKEND", "aot_eager")
    embedder = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="off")
    assert embedder.prepare_queries("off") == "" and not embedder.compiled and not embedder.compiled_text
    monkeypatch.setattr(compiling, "compiler_available", lambda: False)
    assert "no C++ compiler" in embedder.prepare_queries("auto") and not embedder.compiled
    monkeypatch.setattr(compiling, "compiler_available", lambda: True)
    timings = iter([100.0, 50.0, 100.0, 99.0])  # image: eager 100, compiled 50 -> kept; text: 100 vs 99 -> eager

    monkeypatch.setattr(compiling, "median_ms", lambda function, inputs: next(timings))
    note = embedder.prepare_queries("auto")
    assert embedder.compiled and not embedder.compiled_text, note
    assert (
        "image: 50 ms compiled vs 100 ms eager (kept)" in note
        and "text: 99 ms compiled vs 100 ms eager (eager)" in note
    )


def test_a_failed_compile_leaves_the_tower_eager(tiny_siglip_dir, monkeypatch):
    embedder = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32", compile="off")

    def broken(*args, **kwargs):
        raise RuntimeError("no working C++ compiler\nmore")

    monkeypatch.setattr(compiling.torch, "compile", broken)
    note = embedder.prepare_queries("on")
    assert not embedder.compiled and not embedder.compiled_text
    assert "image tower eager (compile failed: RuntimeError: no working C++ compiler)" in note
    assert len(embedder.embed_images([Image.new("RGB", (40, 30), (200, 100, 50))])[0]) == embedder.dim
