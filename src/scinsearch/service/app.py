"""The kiosk service: a FastAPI app over one `Searcher`, opened once at start-up.

Why it looks the way it does:
- The model and the store are opened in the lifespan (or injected by the CLI and tests), the query
  towers are compiled when `--compile` asks for it, and a warm-up query runs, all before `/ready`
  turns green: the first health worker does not wait longer, nor pay for a compile.
- Inference is blocking (torch); it runs in a worker thread behind a one-slot limiter, so the event
  loop keeps serving pages and thumbnails and two queries never fight over the same CPU cores.
- Every failure a user can cause is a 4xx with `{"detail": "<one line>", "code": "<machine code>"}`
  (codes: scinsearch.errors; the page turns them into plain advice); anything else is a 500
  with no traceback in the response (the traceback goes to the server log, which never holds image
  bytes: uploads are never logged, only counts and timings).
- Before any route runs, `guard.RequestGuard` checks the Host header and the API key and bounds the
  body (size, deadline, uploads in flight): see its module.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from pathlib import Path

import anyio
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from scinsearch.errors import BAD_REQUEST, CODE_FOR_STATUS, HTTP_STATUS, INTERNAL, NOT_READY, ScinSearchError
from scinsearch.images import ImageError
from scinsearch.photo_worker import PhotoDecoder, PreparedPhoto
from scinsearch.preprocessing import Preprocessor
from scinsearch.search_filters import SearchOptions
from scinsearch.service.api_docs import install_offline_docs
from scinsearch.service.guard import GuardRules, RequestGuard, allowed_host_names, error_body
from scinsearch.service.image_files import ImageFiles
from scinsearch.service.page_config import page_config
from scinsearch.service.settings import API_KEY_HEADER, RETRY_AFTER_SECONDS, ServiceSettings

STATIC_DIR = Path(__file__).parent / "static"
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
log = logging.getLogger("scinsearch.service")


class ServiceState:
    """What the routes share: the settings, the searcher, the image folder and the inference slot."""

    def __init__(self, settings: ServiceSettings, searcher=None):
        self.settings = settings
        self.searcher = searcher
        self.owns_searcher = searcher is None
        self.images = ImageFiles(None, settings.thumbnail_size, settings.thumbnail_cache)
        self.limiter: anyio.CapacityLimiter | None = None
        self.decoder: PhotoDecoder | None = None
        self.ready = False

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI):
        """Open the searcher (unless injected), find the images, warm up; close what was opened."""
        self.limiter = anyio.CapacityLimiter(1)
        if self.searcher is None:
            from scinsearch.search import Searcher

            self.searcher = await anyio.to_thread.run_sync(Searcher.open, self.settings.search)
        self.images = ImageFiles(self.images_root(), self.settings.thumbnail_size, self.settings.thumbnail_cache)
        self.start_decoder()
        await self.infer(self.compile_towers)
        if self.settings.warm_up:
            await self.infer(self.warm_up)
        self.ready = True
        log.info("ready: %s", self.describe())
        try:
            yield
        finally:
            self.ready = False
            if self.decoder is not None:
                await anyio.to_thread.run_sync(self.decoder.close)
            if self.owns_searcher and self.searcher is not None:
                self.searcher.close()
                self.searcher = None

    def images_root(self) -> Path | None:
        """--images-dir, else the folder recorded in the collection (`image_root`) by `embed` or `import
        --images-dir` on this machine: always the operator's choice, never an imported file's. The root
        of a file system is refused (it would let `/images` serve every file of the disk)."""
        info = getattr(self.searcher, "info", None)
        root = self.settings.images_dir or getattr(info, "image_root", None)
        if not root:
            return None
        resolved = Path(root).expanduser().resolve()
        if resolved == Path(resolved.anchor):
            log.warning("images are not served: their folder %s is the root of the file system", root)
            return None
        return resolved

    def compile_towers(self) -> None:
        """torch.compile the query towers for batch 1 (`--compile`); a failure leaves them eager."""
        embedder = getattr(self.searcher, "embedder", None)
        if self.settings.compile == "off" or not hasattr(embedder, "prepare_queries"):
            return
        note = embedder.prepare_queries(self.settings.compile)
        if note:
            log.info("%s", note)

    def compiled_towers(self) -> list[str]:
        """Which query towers run compiled (`--compile`): shown by /ready, so a silent fallback is visible."""
        embedder = getattr(self.searcher, "embedder", None)
        towers = (("image", "compiled"), ("text", "compiled_text"))
        return [name for name, flag in towers if getattr(embedder, flag, False) is True]

    def warm_up(self) -> None:
        """One throw-away query: the first real query then pays no lazy initialisation."""
        from PIL import Image

        try:
            self.searcher.search_image(Image.new("RGB", (256, 256), (180, 140, 120)), None, SearchOptions(top_k=1))
        except ScinSearchError as exc:
            log.warning("warm-up query failed: %s", exc)

    def start_decoder(self) -> None:
        """The photo decoder process (`photo_worker`), warming up in the background while the model does."""
        preprocessor = getattr(getattr(self.searcher, "embedder", None), "preprocessor", None)
        if not isinstance(preprocessor, Preprocessor):
            return  # an injected searcher without one decodes in-process (`Searcher.prepare_photo`)
        self.decoder = PhotoDecoder(preprocessor, self.settings.max_pixels, self.settings.decode_timeout_seconds)
        threading.Thread(target=self.decoder.start, name="scinsearch-photo-start", daemon=True).start()

    async def prepare_photo(self, request: Request, raw: bytes) -> PreparedPhoto:
        """Decode and preprocess an upload in the photo decoder, outside the inference slot: at most
        the decode deadline, stopped at once if the client disconnects meanwhile."""
        if self.decoder is None:
            return await self.infer(self.searcher.prepare_photo, raw)
        cancelled = threading.Event()

        async def watch_for_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            cancelled.set()

        outcome: list = []

        async def decode() -> None:
            try:
                outcome.append(await anyio.to_thread.run_sync(self.decoder.prepare, raw, cancelled))
            except (ImageError, ScinSearchError) as exc:  # answered below, outside the task group
                outcome.append(exc)
            finally:
                group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(watch_for_disconnect)
            group.start_soon(decode)
        if isinstance(outcome[0], ImageError):
            raise outcome[0].user_error("the photo")
        if isinstance(outcome[0], ScinSearchError):
            raise outcome[0]
        return outcome[0]

    async def infer(self, function, *args, **kwargs):
        """Run blocking model work in a worker thread, one at a time."""
        return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs), limiter=self.limiter)

    async def lookup(self, function, *args):
        """Run a store look-up (no model) in a worker thread, beside any running inference."""
        return await run_in_threadpool(function, *args)

    def require_searcher(self):
        if not self.ready or self.searcher is None:
            raise ScinSearchError("the model and the store are still loading: retry in a few seconds", NOT_READY)
        return self.searcher

    def describe(self) -> str:
        searcher = self.searcher
        model = getattr(getattr(searcher, "info", None), "model", "?")
        return (
            f"model {model}, collection {getattr(getattr(searcher, 'store', None), 'name', '?')}, "
            f"images {self.images.root or 'not available'}"
        )


def api_key_dependency(settings: ServiceSettings):
    """The `X-API-Key` header, declared for the OpenAPI document and its "Authorize" button. The key is
    checked in one place, the request guard (`guard.RequestGuard.refusal`), before any route runs."""
    scheme = APIKeyHeader(
        name=API_KEY_HEADER,
        auto_error=False,
        description="Needed only when the service was started with an API key (SCINSEARCH_API_KEY or --api-key-file).",
    )

    def declared(key: str | None = Security(scheme)) -> None:
        """Nothing to do: a request that reaches a route has passed the guard's key check."""

    return Depends(declared)


def error_response(detail, code: str, status: int, headers=None) -> JSONResponse:
    """The one error shape: the precise reason for people reading logs, the code for programs."""
    return JSONResponse(error_body(detail, code), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """One-line reasons and a machine code for every error, never a traceback in a response."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
        reason = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return error_response(reason, BAD_REQUEST, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = CODE_FOR_STATUS.get(exc.status_code, BAD_REQUEST)
        return error_response(exc.detail, code, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(ScinSearchError)
    async def user_error(request: Request, exc: ScinSearchError):
        code = getattr(exc, "code", BAD_REQUEST)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if HTTP_STATUS.get(code) == 503 else None
        return error_response(exc, code, HTTP_STATUS.get(code, 400), headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error(
            "unexpected %s on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return error_response(f"internal error ({type(exc).__name__}); see the service log", INTERNAL, 500)


def install_middleware(app: FastAPI, settings: ServiceSettings) -> None:
    """CORS only for the origins given (none by default); a few headers that cost nothing."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=[API_KEY_HEADER, "Content-Type"],
        )

    @app.middleware("http")
    async def headers(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Server-Timing", f"app;dur={(time.perf_counter() - started) * 1000:.1f}")
        return response


def install_page(app: FastAPI, settings: ServiceSettings) -> None:
    """The kiosk page and its assets, from the package (no CDN: it works offline), and /config: what
    the page needs from the server's settings (idle reset, the languages of static/i18n/)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    config = page_config(settings, STATIC_DIR / "i18n")

    @app.get("/config", summary="Settings of the kiosk page: idle reset, languages", tags=["status"])
    async def page_settings() -> dict:
        return config

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page():
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"},
        )


def create_app(settings: ServiceSettings, searcher=None) -> FastAPI:
    """The service. `searcher` injected (tests, the CLI) is used as is and not closed by the app;
    otherwise one is opened from `settings.search` at start-up and closed at shut-down."""
    from scinsearch.service.explore_route import explore_router, install_explore_page
    from scinsearch.service.routes import api_router, status_router

    state = ServiceState(settings, searcher)
    app = FastAPI(
        title="scinsearch kiosk",
        version="1",
        lifespan=state.lifespan,
        docs_url=None,
        redoc_url=None,
        description="Similar SCIN dermatology cases for a photo or a description. Decision support, "
        "not diagnosis. Photos are processed in memory only and never stored.",
    )
    app.state.service = state
    install_error_handlers(app)
    api, explore = api_router(state), explore_router(state)
    install_guard(app, settings, keyed_paths=tuple(route.path_regex for route in [*api.routes, *explore.routes]))
    install_middleware(app, settings)
    app.include_router(status_router(state))
    app.include_router(api, dependencies=[api_key_dependency(settings)])
    app.include_router(explore, dependencies=[api_key_dependency(settings)])
    install_page(app, settings)
    install_explore_page(app, PAGE_POLICY)
    install_offline_docs(app)
    return app


def install_guard(app: FastAPI, settings: ServiceSettings, keyed_paths) -> None:
    """Host, API key and body limits before any route reads a byte (`guard`). Added before CORS, so
    CORS answers preflights and its headers reach the guard's refusals too."""
    from scinsearch.service.routes import PHOTO_SEARCH_PATH

    def body_limit(path: str) -> int:
        return settings.max_upload_bytes if path == PHOTO_SEARCH_PATH else settings.max_json_body_bytes

    rules = GuardRules(
        allowed_hosts=allowed_host_names(settings.host, settings.allowed_hosts),
        api_key=settings.api_key,
        keyed_paths=keyed_paths,
        body_limit=body_limit,
        body_timeout=settings.body_timeout_seconds,
        max_uploads=settings.max_uploads,
        max_upload_bytes_in_flight=settings.max_upload_bytes_in_flight,
        retry_after=RETRY_AFTER_SECONDS,
        key_header=API_KEY_HEADER,
    )
    app.add_middleware(RequestGuard, rules=rules)
