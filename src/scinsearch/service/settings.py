"""How the kiosk service runs: built once by `scinsearch serve` (or a test) and passed to `create_app`.

Kept apart from the search `Settings` (where the vectors are, which model) because the same search
settings also drive the CLI and the benchmarks, which have no HTTP concerns.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from scinsearch.errors import ScinSearchError
from scinsearch.images import MAX_PIXELS, decode_memory_bound
from scinsearch.photo_worker import DEFAULT_DECODE_TIMEOUT
from scinsearch.rules import HTTP_MAX_TOP_K
from scinsearch.settings import Settings

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a 12-MP phone JPEG is 3-8 MB; PNGs of SCIN size about 1 MB
MAX_JSON_BODY_BYTES = 64 * 1024  # a text query (2,000 characters, even all escaped) and its filters; any other body
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0  # 20 MB in 30 s is 5 Mbit/s: any kiosk's own network is faster
DEFAULT_MAX_UPLOADS = 8  # requests with a body (photo or text searches) in progress at once
DEFAULT_MAX_UPLOAD_BYTES_IN_FLIGHT = 64 * 1024 * 1024  # what those requests may hold between them
DEFAULT_MAX_CONNECTIONS = 64  # open connections; beyond, the longest-idle are closed (service.connections)
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0  # a browser sends its headers in one packet; a phone on a bad link well within
RETRY_AFTER_SECONDS = 2  # in the Retry-After of a 503 for overload
UPLOAD_COPIES = 4  # an upload is held at most this many times over while it is read and parsed (body, form part)
DEFAULT_THUMBNAIL_SIZE = 320  # pixels on the long side: sharp on a 3-column phone grid, small on the wire
DEFAULT_IDLE_RESET_SECONDS = 180  # the kiosk page forgets the last patient after 3 idle minutes
API_KEY_HEADER = "X-API-Key"


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """Everything the HTTP layer needs; the API key and CORS are off unless set, the limits are on.

    `images_dir` None means "the folder the collection was embedded from", as recorded by `embed`
    in the collection's metadata (`image_root`). `allowed_hosts` adds host names to the ones always
    accepted in a Host header (127.0.0.1, localhost, [::1] and `host`); "*" accepts any."""

    search: Settings = dataclasses.field(default_factory=Settings)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = dataclasses.field(default=None, repr=False)  # never printed with the settings
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_json_body_bytes: int = MAX_JSON_BODY_BYTES
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS
    max_uploads: int = DEFAULT_MAX_UPLOADS
    max_upload_bytes_in_flight: int = DEFAULT_MAX_UPLOAD_BYTES_IN_FLIGHT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    max_pixels: int = MAX_PIXELS
    decode_timeout_seconds: float = DEFAULT_DECODE_TIMEOUT  # one photo's decode, in the photo decoder process
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

    def __post_init__(self):
        if self.max_upload_bytes_in_flight < self.max_upload_bytes:
            raise ScinSearchError(
                f"the bytes allowed in flight ({self.max_upload_bytes_in_flight / 2**20:.1f} MiB) must be at least "
                f"the largest upload ({self.max_upload_bytes / 2**20:.1f} MiB)"
            )
        if min(self.max_uploads, self.max_connections, self.body_timeout_seconds, self.decode_timeout_seconds) <= 0:
            raise ScinSearchError("max_uploads, max_connections and the timeouts must be positive")

    def memory_bound(self) -> int:
        """Most memory, in bytes, that requests may add to the service at once (the server and its photo
        decoder process together), besides the model's own working memory: photos are decoded one at a
        time in the decoder, whose address space is capped (`images.decode_memory_bound` above what it
        holds after start-up), and the bodies in flight are bounded by `max_upload_bytes_in_flight`,
        each held at most UPLOAD_COPIES times."""
        return decode_memory_bound(self.max_pixels) + UPLOAD_COPIES * self.max_upload_bytes_in_flight

    def replace(self, **changes) -> ServiceSettings:
        return dataclasses.replace(self, **changes)
