"""How the kiosk service runs: built once by `scinsearch serve` (or a test) and passed to `create_app`.

Kept apart from the search `Settings` (where the vectors are, which model) because the same search
settings also drive the CLI and the benchmarks, which have no HTTP concerns.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from scinsearch.images import MAX_PIXELS
from scinsearch.rules import HTTP_MAX_TOP_K
from scinsearch.settings import Settings

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a 12-MP phone JPEG is 3-8 MB; PNGs of SCIN size about 1 MB
DEFAULT_THUMBNAIL_SIZE = 320  # pixels on the long side: sharp on a 3-column phone grid, small on the wire
DEFAULT_IDLE_RESET_SECONDS = 180  # the kiosk page forgets the last patient after 3 idle minutes
API_KEY_HEADER = "X-API-Key"


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """Everything the HTTP layer needs; security features (API key, CORS) are off unless set.

    `images_dir` None means "the folder the collection was embedded from", as recorded by `embed`
    in the collection's metadata (`image_root`)."""

    search: Settings = dataclasses.field(default_factory=Settings)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = MAX_PIXELS
    images_dir: Path | None = None
    thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE
    thumbnail_cache: int = 256  # thumbnails kept in memory (about 20 KB each)
    max_top_k: int = HTTP_MAX_TOP_K  # results per request; at most rules.MAX_TOP_K
    warm_up: bool = True  # run one query at start-up so the first real query is as fast as the rest
    idle_reset_seconds: int = DEFAULT_IDLE_RESET_SECONDS  # the page clears itself after this idle time; 0 = never
    # torch.compile the image and text towers for one query at a time, before /ready turns green:
    # "on", "auto" (where a compiler is present, each tower kept only if measured faster) or "off".
    # Off until benchmarks/bench_service.py shows on the kiosk's CPU that it pays (docs/performance.md).
    compile: str = "off"

    def replace(self, **changes) -> ServiceSettings:
        return dataclasses.replace(self, **changes)
