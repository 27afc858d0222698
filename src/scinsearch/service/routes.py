"""The HTTP endpoints: thin adapters from requests to `Searcher` calls and back to JSON.

The search logic lives in `scinsearch.search`; here are only input parsing, the image URLs, the
notices every search response carries, and the rule that a patient photo stays in memory.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from scinsearch import rules
from scinsearch.glossary import glossary
from scinsearch.images import allowed_formats
from scinsearch.results import DISCLAIMER
from scinsearch.search_filters import HIGHEST_SCORE, LOWEST_SCORE, MIN_SCORE_HELP, TOP_K_HELP, SearchOptions
from scinsearch.service import params
from scinsearch.service.image_files import valid_id
from scinsearch.service.upload import read_upload

log = logging.getLogger("scinsearch.service")
PHOTO_SEARCH_PATH = "/search"  # the one route whose body may be a photo (guard.body_limit)

TOP_K_SCHEMA = {"type": "integer", "default": rules.DEFAULT_TOP_K, "minimum": 1}
MIN_SCORE_SCHEMA = {"type": "number", "minimum": LOWEST_SCORE, "maximum": HIGHEST_SCORE}
OPTION_PARAMETERS = [
    {"name": "top_k", "in": "query", "schema": TOP_K_SCHEMA, "description": TOP_K_HELP},
    {"name": "min_score", "in": "query", "schema": MIN_SCORE_SCHEMA, "description": MIN_SCORE_HELP},
    {
        "name": "per_case",
        "in": "query",
        "schema": {"type": "boolean", "default": True},
        "description": "One result per case (its best image); false returns images.",
    },
]
PHOTO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["photo"],
                    "properties": {
                        "photo": {
                            "type": "string",
                            "format": "binary",
                            "description": f"The photo: {', '.join(allowed_formats())}.",
                        },
                        **{p["name"]: p["schema"] for p in OPTION_PARAMETERS},
                        **{p["name"]: p["schema"] for p in params.filter_parameters()},
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
SEARCH_PARAMETERS = [*OPTION_PARAMETERS, *params.filter_parameters()]


class TextQuery(BaseModel):
    """A text search: the description, and optionally the same knobs as a photo search."""

    text: str = Field(min_length=1, max_length=rules.MAX_TEXT_CHARS, description="What the skin looks like.")
    top_k: int | None = Field(default=None, description=TOP_K_HELP, json_schema_extra={"minimum": 1})
    min_score: float | None = Field(
        default=None, description=MIN_SCORE_HELP, json_schema_extra={"minimum": LOWEST_SCORE, "maximum": HIGHEST_SCORE}
    )  # bounds documented here, checked once by SearchOptions
    per_case: bool = True
    filters: dict[str, list[str | int | bool] | str | int | bool] = Field(
        default_factory=dict, description="Filter name -> value(s), as in the query parameters."
    )


def notices(body: dict) -> dict:
    """The disclaimer and the SCIN licence notice, in every response that shows cases."""
    body.setdefault("disclaimer", DISCLAIMER)
    body["licence"] = params.SCIN_LICENCE
    return body


def query_values(request: Request) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        values.setdefault(name, []).append(value)
    return values


def json_filter_values(filters: dict[str, Any]) -> dict[str, list[str]]:
    """JSON filter values (lists, numbers, booleans) as the text values the query string gives."""

    def text(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    return {name: [text(v) for v in (value if isinstance(value, list) else [value])] for name, value in filters.items()}


def search_response(result, started: float, kind: str) -> JSONResponse:
    body = notices(params.with_image_urls(result.to_dict()))
    milliseconds = (time.perf_counter() - started) * 1000
    warnings = [c["code"] for c in (body.get("quality") or {}).get("checks", []) if c["verdict"] == "warn"]
    log.info(
        "%s search: %d results, confident=%s, quality warnings=%s, %.0f ms",
        kind,
        len(body.get("results", [])),
        body.get("suggestions", {}).get("confident"),
        ",".join(warnings) or "none",
        milliseconds,
    )  # never the photo or the text
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def status_router(state) -> APIRouter:
    router = APIRouter(tags=["status"])

    @router.get("/health", summary="The process is alive")
    async def health() -> dict:
        return {"status": "alive"}

    @router.get(
        "/ready", summary="The model and the store are loaded", responses={503: {"description": "Still loading"}}
    )
    async def ready():
        if not state.ready or state.searcher is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        info = state.searcher.info
        adapter = getattr(state.searcher, "adapter", None)
        return {
            "status": "ready",
            "model": params.model_label(info.model),
            "dim": info.dim,
            "collection": state.searcher.store.name,
            "images": state.images.root is not None,
            "adapter": adapter.id if adapter else None,
            "compiled": state.compiled_towers(),
            "backend": getattr(getattr(state.searcher, "embedder", None), "backend", "torch"),
            "calibrated": getattr(state.searcher, "calibration", None) is not None,
        }

    @router.get("/filters", summary="Filter values the page offers, the condition glossary, and the notices")
    async def filters() -> dict:
        return notices(
            {
                "choices": params.filter_choices(),
                "menus": params.page_menus(),
                "max_top_k": state.settings.max_top_k,
                "max_text_chars": rules.MAX_TEXT_CHARS,
                "max_upload_bytes": state.settings.max_upload_bytes,
                "glossary": glossary(),
            }
        )

    return router


def api_router(state) -> APIRouter:
    router = APIRouter(tags=["search"])
    settings = state.settings

    @router.post(
        PHOTO_SEARCH_PATH,
        summary="Similar cases for a photo",
        openapi_extra={**PHOTO_BODY, "parameters": SEARCH_PARAMETERS},
        responses={
            400: {"description": "No photo, empty, not an image, broken image, bad filter"},
            408: {"description": "The body came too slowly"},
            413: {"description": "Upload or pixel count over the limit"},
            415: {"description": "An image format that is not accepted (e.g. EPS, PSD, TIFF), or a body type"},
            503: {"description": "Too many uploads in progress (Retry-After), or still loading"},
        },
    )
    async def search_photo(request: Request):
        """Upload a photo (multipart field `photo`, or a raw image/* body). It is decoded in memory and
        never written to disk, the store or the logs. Filters may be query parameters or form fields."""
        started = time.perf_counter()
        searcher = state.require_searcher()
        upload = await read_upload(request, settings.max_upload_bytes)
        photo = upload.photo()
        values = params.merged(query_values(request), upload.fields)
        filters, options = params.build_filters(values), params.build_options(values, settings.max_top_k)
        prepared = await state.prepare_photo(request, photo)
        result = await state.infer(searcher.search_prepared, prepared, filters, options)
        return search_response(result, started, "photo")

    @router.post(
        "/search/text",
        summary="Similar cases for a description",
        openapi_extra={"parameters": params.filter_parameters()},
    )
    async def search_text(query: TextQuery, request: Request):
        """Describe the skin in words (JSON body; the text is not logged). Filters may be query
        parameters or the `filters` object."""
        started = time.perf_counter()
        searcher = state.require_searcher()
        values = params.merged(query_values(request), json_filter_values(query.filters))
        filters = params.build_filters(values)
        options = SearchOptions(query.top_k, query.min_score, query.per_case, max_top_k=settings.max_top_k)
        result = await state.infer(searcher.search_text, query.text, filters, options)
        return search_response(result, started, "text")

    @router.get(
        "/images/{image_id}/similar",
        summary="Cases similar to a stored image",
        openapi_extra={"parameters": SEARCH_PARAMETERS[:3] + params.filter_parameters()},
    )
    async def similar(image_id: str, request: Request):
        """Reuses the stored vector (nothing is embedded); the image's own case is left out."""
        started = time.perf_counter()
        searcher = state.require_searcher()
        await stored_payload(image_id)
        values = query_values(request)
        filters, options = params.build_filters(values), params.build_options(values, settings.max_top_k)
        result = await state.infer(searcher.search_like, image_id, filters, options)
        return search_response(result, started, "like")

    async def stored_payload(image_id: str) -> dict:
        searcher = state.require_searcher()
        payload = await state.lookup(searcher.get_image, image_id) if valid_id(image_id) else None
        if payload is None:
            raise HTTPException(404, "unknown image id")
        return payload

    @router.get(
        "/images/{image_id}",
        summary="A stored SCIN image (full size or thumbnail)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, 404: {"description": "Unknown image id"}},
    )
    async def image(image_id: str, size: Literal["full", "thumb"] = Query("full")):
        """Only images of the collection, looked up by id; the file path comes from the store and
        never leaves the images folder."""
        path = state.images.path_for(await stored_payload(image_id))
        cache = {"Cache-Control": "private, max-age=86400"}
        if size == "thumb":
            data = await run_thumbnail(state, path)
            return Response(data, media_type="image/jpeg", headers=cache)
        return FileResponse(path, media_type=state.images.media_type(path), headers=cache)

    @router.get("/cases/{case_id}", summary="Every stored image of a case, with its labels")
    async def case(case_id: str):
        searcher = state.require_searcher()
        payloads = await state.lookup(searcher.get_case, case_id) if valid_id(case_id) else []
        if not payloads:
            raise HTTPException(404, "unknown case id")
        return notices({"case_id": case_id, "images": params.with_image_urls(payloads)})

    return router


async def run_thumbnail(state, path) -> bytes:
    return await state.lookup(state.images.thumbnail, path)
