"""Server options (shards, replicas, on-disk storage, HNSW, int8), payload indexes and the alias switch,
as the HTTP requests qdrant-client sends to a Qdrant server.

No Qdrant server can run here, so a tiny HTTP endpoint answers the few requests these paths make with
Qdrant's response shape and records what it was sent; the expected request bodies are written out by
hand from Qdrant's REST API reference (PUT /collections/{name}, PUT /collections/{name}/index,
POST /collections/aliases), not derived from scinsearch.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scinsearch.cli import main
from scinsearch.errors import ScinSearchError
from scinsearch.schema import INDEXED_FIELDS
from scinsearch.settings import ServerOptions, Settings
from scinsearch.store import CollectionInfo
from scinsearch.store.client import ClientStore

# qdrant-client asks for the server's version in a background thread, which may outlive a short test
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version")


class FakeQdrant(BaseHTTPRequestHandler):
    """Answers like a Qdrant 1.16 server with no collections; records (method, path, body) of each request."""

    requests: list[tuple[str, str, dict | None]] = []
    aliases: list[dict] = []

    def log_message(self, *args):
        pass

    def answer(self, result, status: int = 200, envelope: bool = True):
        body = json.dumps({"result": result, "status": "ok", "time": 0.0} if envelope else result).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_request(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = self.path.split("?")[0]
        self.requests.append((self.command, path, body))
        if path == "/":
            return self.answer({"title": "qdrant - vector search engine", "version": "1.20.0"}, envelope=False)
        if path.endswith("/exists"):
            return self.answer({"exists": False})
        if path == "/aliases":
            return self.answer({"aliases": self.aliases})
        if path.endswith("/index"):
            return self.answer({"operation_id": 1, "status": "completed"})
        if path.endswith("/points/query"):
            return self.answer({"points": []})
        if self.command in ("PUT", "POST") and path.startswith("/collections/"):
            return self.answer(True)
        self.send_error(404)

    do_GET = do_PUT = do_POST = do_DELETE = handle_request


@pytest.fixture
def qdrant_url():
    FakeQdrant.requests, FakeQdrant.aliases = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeQdrant)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def sent(method: str, path: str) -> list[dict]:
    return [body for m, p, body in FakeQdrant.requests if (m, p) == (method, path)]


CLUSTER = ServerOptions(
    shard_number=6,
    replication_factor=2,
    write_consistency_factor=2,
    on_disk_vectors=True,
    on_disk_payload=True,
    hnsw_m=32,
    hnsw_ef_construct=200,
    quantization="int8",
)


def test_a_new_collection_on_a_server_gets_the_server_options_and_the_payload_indexes(qdrant_url):
    store = ClientStore(Settings(qdrant_url=qdrant_url, collection="scin", qdrant_timeout=7, server=CLUSTER))
    assert store.client.init_options["timeout"] == 7
    store.create(CollectionInfo("google/siglip-base-patch16-224", 768, {"image_root": "/data"}))
    (body,) = sent("PUT", "/collections/scin")
    assert body == {
        "vectors": {
            "size": 768,
            "distance": "Cosine",
            "on_disk": True,
            "hnsw_config": {"m": 32, "ef_construct": 200},
            "quantization_config": {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}},
        },
        "shard_number": 6,
        "replication_factor": 2,
        "write_consistency_factor": 2,
        "on_disk_payload": True,
        "metadata": {
            "scinsearch_model": "google/siglip-base-patch16-224",
            "scinsearch_dim": 768,
            "scinsearch_preprocessing": "fast",
            "image_root": "/data",
        },
    }
    indexes = {b["field_name"]: b["field_schema"] for b in sent("PUT", "/collections/scin/index")}
    assert indexes == INDEXED_FIELDS and indexes["monk_skin_tone_label_us"] == "integer"
    store.close()


def test_without_options_the_server_chooses(qdrant_url):
    store = ClientStore(Settings(qdrant_url=qdrant_url, collection="scin"))
    store.create(CollectionInfo("m", 4))
    (body,) = sent("PUT", "/collections/scin")
    assert body["vectors"] == {"size": 4, "distance": "Cosine"} and set(body) == {"vectors", "metadata"}
    store.close()


def test_the_alias_switch_is_one_request(qdrant_url):
    FakeQdrant.aliases = [{"alias_name": "scin", "collection_name": "scin_v1"}]
    store = ClientStore(Settings(qdrant_url=qdrant_url, collection="scin"))
    store.switch_alias("scin", "scin_v2")
    assert sent("POST", "/collections/aliases") == [
        {
            "actions": [
                {"delete_alias": {"alias_name": "scin"}},
                {"create_alias": {"collection_name": "scin_v2", "alias_name": "scin"}},
            ]
        }
    ]
    store.close()


def test_flags_and_environment_reach_the_collection_a_command_creates(capsys, tmp_path, qdrant_url, monkeypatch):
    from scinsearch.store.edge import EdgeStore

    source = EdgeStore(tmp_path / "edge", "scin")
    source.create(CollectionInfo("m", 4))
    source.close()
    monkeypatch.setenv("SCINSEARCH_QUANTIZATION", "int8")
    monkeypatch.setenv("SCINSEARCH_REPLICATION_FACTOR", "3")
    args = ["export", "--qdrant-path", tmp_path / "edge", "--collection", "scin", "--to-url", qdrant_url]
    main([str(a) for a in [*args, "--shards", "4", "--on-disk-vectors", "--hnsw-m", "0", "--quiet"]])
    capsys.readouterr()  # the fake server answers no point requests: the export stops after creating
    (body,) = sent("PUT", "/collections/scin")
    assert (body["shard_number"], body["replication_factor"]) == (4, 3)
    assert body["vectors"]["on_disk"] is True and body["vectors"]["hnsw_config"] == {"m": 0}
    assert body["vectors"]["quantization_config"]["scalar"]["type"] == "int8"


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(replication_factor=2, write_consistency_factor=3), "exceeds the replication factor 2"),
        (dict(write_consistency_factor=2), "exceeds the replication factor 1"),
        (dict(shard_number=0), "shard number must be at least 1"),
        (dict(hnsw_ef_construct=2), "ef_construct must be between 4 and 4096"),
        (dict(quantization="binary"), "quantization must be one of none, int8"),
    ],
)
def test_impossible_server_options_are_refused(options, message):
    with pytest.raises(ScinSearchError, match=message):
        ServerOptions(**options)


def test_local_mode_takes_the_options_and_ignores_them(tmp_path):
    store = ClientStore(Settings(qdrant_client_path=tmp_path / "q", collection="scin", server=CLUSTER))
    store.create(CollectionInfo("m", 4))
    assert store.info().model == "m" and store.local
    store.close()


@pytest.mark.parametrize(
    ("quantization", "params"), [("int8", {"quantization": {"rescore": True, "oversampling": 2.0}}), ("none", None)]
)
def test_an_int8_collection_is_searched_with_rescoring(qdrant_url, quantization, params):
    """POST /collections/{name}/points/query: `params.quantization` (rescore, oversampling), as in Qdrant's
    REST reference; a collection without quantisation gets no search parameters."""
    settings = Settings(qdrant_url=qdrant_url, collection="scin", server=ServerOptions(quantization=quantization))
    store = ClientStore(settings)
    try:
        assert store.query([1.0, 0.0], 5) == []
    finally:
        store.close()
    (body,) = sent("POST", "/collections/scin/points/query")
    assert body.get("params") == params
