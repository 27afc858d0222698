"""One settings object, built once from flags and environment by the CLI or the app, and passed down.

No other module reads the environment: this keeps every behaviour visible at the call site.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from scinsearch.errors import ScinSearchError

DEFAULT_MODEL = "google/siglip-base-patch16-224"
DEFAULT_COLLECTION = "scin_dermatology"
DEFAULT_QDRANT_PATH = Path("~/.scinsearch/qdrant").expanduser()


QUANTIZATIONS = ("none", "int8")
BACKENDS = ("torch", "openvino")  # what runs the towers: torch, or OpenVINO on the CPU (the optional extra)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ScinSearchError(f"unknown backend {backend!r}: use {' or '.join(BACKENDS)}")
    return backend


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """How a collection is made on a Qdrant server or cluster (docs/storage.md#server-options).

    Applied when scinsearch creates a collection there (`embed`, `export --to-url`, `import`); an existing
    collection keeps what it was made with. The embedded store (Qdrant Edge) applies the index options
    (hnsw_m, hnsw_ef_construct, quantization) to a new shard; qdrant-client's local mode ignores them all.
    None = Qdrant's own default."""

    shard_number: int | None = None  # shards the collection is split into (spread over the cluster's nodes)
    replication_factor: int | None = None  # copies of each shard on different nodes
    write_consistency_factor: int | None = None  # copies that must confirm a write before it succeeds
    on_disk_vectors: bool = False  # original vectors memory-mapped from disk instead of held in RAM
    on_disk_payload: bool = False  # payloads read from disk instead of held in RAM
    hnsw_m: int | None = None  # HNSW graph edges per node (server default 16; 0 builds no graph)
    hnsw_ef_construct: int | None = None  # HNSW build-time neighbours searched (server default 100)
    quantization: str = "none"  # "int8": scalar int8 copies in RAM, 4x smaller; the originals stay for rescoring

    def __post_init__(self):
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ScinSearchError(f"{name.replace('_', ' ')} must be at least 1, not {value}")
        if self.hnsw_m is not None and not 0 <= self.hnsw_m <= 512:
            raise ScinSearchError(f"HNSW m must be between 0 and 512, not {self.hnsw_m}")
        if self.hnsw_ef_construct is not None and not 4 <= self.hnsw_ef_construct <= 4096:
            raise ScinSearchError(f"HNSW ef_construct must be between 4 and 4096, not {self.hnsw_ef_construct}")
        if self.quantization not in QUANTIZATIONS:
            raise ScinSearchError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {self.quantization!r}")
        replicas, consistency = self.replication_factor, self.write_consistency_factor
        if consistency is not None and consistency > (replicas or 1):
            raise ScinSearchError(
                f"write consistency factor {consistency} exceeds the replication factor {replicas or 1}: "
                f"a write could never be confirmed"
            )


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where the vectors live and how they are made.

    `qdrant_url` set means a Qdrant server or cluster (qdrant-client); otherwise the embedded
    Qdrant Edge store at `qdrant_path`. `qdrant_location=":memory:"` is qdrant-client's in-process
    stand-in for a server, used by tests to run the server code path; `qdrant_client_path` is
    qdrant-client's own embedded folder (`QdrantClient(path=...)`, what `export --to-qdrant-path` writes).
    """

    collection: str = DEFAULT_COLLECTION
    model: str = DEFAULT_MODEL
    model_files: Path | None = None  # where the model's files are when not at `model` (a kiosk bundle's copy)
    qdrant_path: Path = DEFAULT_QDRANT_PATH
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_location: str | None = None
    qdrant_client_path: Path | None = None
    qdrant_timeout: int = 60  # seconds a request to a Qdrant server may take
    server: ServerOptions = ServerOptions()
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # "auto", "fp32", "bf16", "fp16"
    batch_size: int | None = None  # images per model call when embedding; None = 16 on the CPU, 256 on a GPU
    workers: int | None = None  # image decoding processes when embedding; None = choose from the CPU count
    compile: str = "auto"  # torch.compile the image tower: "auto" (CPU runs of 1000+ images), "on", "off"
    backend: str = "torch"  # "openvino": the towers through OpenVINO on the CPU (`scinsearch.openvino_tower`)
    cache_dir: Path | None = None  # preprocessed-pixel cache (`embed --cache-dir`); None = off
    exact_preprocessing: bool = False  # True: resize exactly as the processor; False: the faster tested path
    adapter: Path | None = None  # a `scinsearch finetune` adapter folder: search transforms queries through it
    decode_timeout: float | None = None  # seconds one image may take to decode when embedding; None = the default

    def __post_init__(self):
        check_backend(self.backend)

    @property
    def uses_server(self) -> bool:
        """True when the store is reached through qdrant-client (a URL, ':memory:' or a qdrant-client folder)."""
        return bool(self.qdrant_url or self.qdrant_location or self.qdrant_client_path)

    def store_description(self) -> str:
        """Where the vectors are, in words, for logs and summaries."""
        if self.qdrant_url:
            return f"Qdrant server {self.qdrant_url}"
        if self.qdrant_location:
            return f"qdrant-client {self.qdrant_location}"
        if self.qdrant_client_path:
            return f"qdrant-client folder {self.qdrant_client_path}"
        return f"embedded Qdrant Edge at {self.qdrant_path}"

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    def moved(self, **place) -> Settings:
        """These settings with the store somewhere else: `place` names it (qdrant_path; qdrant_url with
        qdrant_api_key; qdrant_location; or qdrant_client_path) and every other way of reaching a store is
        cleared, so the one given is the one used."""
        cleared = {"qdrant_url": None, "qdrant_api_key": None, "qdrant_location": None, "qdrant_client_path": None}
        return self.replace(**{**cleared, **place})
