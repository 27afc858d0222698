"""`/explore`: the collection's record, coverage, map and soundness checks in the browser (`scinsearch.explore`).

The page and its assets are public like the kiosk page (they hold no data); the data behind them,
`/explore/data`, needs the API key like every other route that returns the collection's contents. The
document is computed once per process, in a worker thread (every vector is read, the neighbours are an
exact matrix product), behind a lock so that two first visitors do not compute it twice; the map is
cached in the collection's record, so a restart recomputes the rest but not the map.
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from scinsearch.explore.report import STATIC_DIR, page_html

EXPLORE_DATA_PATH = "/explore/data"


class Explorations:
    """The one exploration document of the served collection, made on first request."""

    def __init__(self, state):
        self.state = state
        self.document: dict | None = None
        self.lock = anyio.Lock()

    async def get(self) -> dict:
        async with self.lock:
            if self.document is None:
                from scinsearch.explore import explore_store

                searcher = self.state.require_searcher()
                self.document = await self.state.lookup(explore_store, searcher.store)
            return self.document


def explore_router(state) -> APIRouter:
    """The keyed part: the exploration document."""
    router = APIRouter(tags=["explore"])
    explorations = Explorations(state)

    @router.get(EXPLORE_DATA_PATH, summary="The collection's record, coverage, 2-D map and soundness checks")
    async def explore_data():
        """Computed once per process on first request (seconds at SCIN's size), then served from memory."""
        return JSONResponse(await explorations.get(), headers={"Cache-Control": "no-store"})

    return router


def install_explore_page(app: FastAPI, policy: str) -> None:
    """The page and its script and style, from the package (no CDN: it works offline)."""
    app.mount("/explore-assets", StaticFiles(directory=STATIC_DIR), name="explore-assets")
    page = page_html()

    @app.get("/explore", include_in_schema=False)
    async def explore_page():
        return HTMLResponse(page, headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache"})
