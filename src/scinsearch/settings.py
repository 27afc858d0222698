"""One settings object, built once from flags and environment by the CLI or the app, and passed down.

No other module reads the environment: this keeps every behaviour visible at the call site.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

DEFAULT_MODEL = "google/siglip-base-patch16-224"
DEFAULT_COLLECTION = "scin_dermatology"
DEFAULT_QDRANT_PATH = Path("~/.scinsearch/qdrant").expanduser()


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where the vectors live and how they are made.

    `qdrant_url` set means a Qdrant server or cluster (qdrant-client); otherwise the embedded
    Qdrant Edge store at `qdrant_path`. `qdrant_location=":memory:"` is qdrant-client's in-process
    stand-in for a server, used by tests to run the server code path.
    """

    collection: str = DEFAULT_COLLECTION
    model: str = DEFAULT_MODEL
    qdrant_path: Path = DEFAULT_QDRANT_PATH
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_location: str | None = None
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # "auto", "fp32", "bf16", "fp16"
    batch_size: int | None = None  # images per model call when embedding; None = 16 on the CPU, 256 on a GPU
    workers: int | None = None  # image decoding processes when embedding; None = choose from the CPU count
    compile: str = "auto"  # torch.compile the image tower: "auto" (CPU runs of 1000+ images), "on", "off"
    cache_dir: Path | None = None  # preprocessed-pixel cache (`embed --cache-dir`); None = off
    exact_preprocessing: bool = False  # True: resize exactly as the processor; False: the faster tested path
    adapter: Path | None = None  # a `scinsearch finetune` adapter folder: search transforms queries through it

    @property
    def uses_server(self) -> bool:
        """True when the store is reached through qdrant-client (a URL or ':memory:')."""
        return bool(self.qdrant_url or self.qdrant_location)

    def store_description(self) -> str:
        """Where the vectors are, in words, for logs and summaries."""
        if self.qdrant_url:
            return f"Qdrant server {self.qdrant_url}"
        if self.qdrant_location:
            return f"qdrant-client {self.qdrant_location}"
        return f"embedded Qdrant Edge at {self.qdrant_path}"

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)
