"""/docs: the interactive API documentation, offline, from the swagger-ui-bundle package.

That package's Swagger UI (4.15) renders OpenAPI 3.0 only ("Unable to render this definition" for the
3.1.0 FastAPI writes), so the service publishes its document as OpenAPI 3.0.3: FastAPI's 3.1 schema
with the few JSON-Schema-2020 forms Pydantic writes turned into their 3.0 equivalents (`anyOf` with
`{"type": "null"}` -> `nullable`, `const` -> a one-value `enum`, a list of `examples` -> `example`,
numeric `exclusiveMinimum`/`exclusiveMaximum` -> `minimum`/`maximum` with the boolean flag). Only the
three files /docs loads are served from the package: its stock index.html (which opens an outside demo
API) is not.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

OPENAPI_VERSION = "3.0.3"
DOCS_ASSETS = {  # file -> media type: what /docs loads, and nothing else from the package
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
NULL = {"type": "null"}


def install_offline_docs(app: FastAPI) -> None:
    """/docs from the swagger-ui-bundle package instead of FastAPI's default CDN, so it works offline."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html

    folder = Path(swagger_ui_bundle.swagger_ui_path)
    publish_openapi_3_0(app)

    @app.get("/docs-assets/{name}", include_in_schema=False)
    async def docs_asset(name: str):
        if name not in DOCS_ASSETS:
            raise HTTPException(404, "not found")
        return FileResponse(folder / name, media_type=DOCS_ASSETS[name])

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


def publish_openapi_3_0(app: FastAPI) -> None:
    """/openapi.json (built once, as FastAPI does) as OpenAPI 3.0.3."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None or app.openapi_schema.get("openapi") != OPENAPI_VERSION:
            app.openapi_schema = as_openapi_3_0(build())
        return app.openapi_schema

    app.openapi = openapi


def as_openapi_3_0(document: dict) -> dict:
    """A copy of an OpenAPI 3.1 document in 3.0.3's terms (the forms listed in the module's docstring)."""
    return {**downgraded(document), "openapi": OPENAPI_VERSION}


def downgraded(node):
    if isinstance(node, list):
        return [downgraded(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: downgraded(value) for key, value in node.items()}
    if isinstance(node.get("anyOf"), list) and NULL in node["anyOf"]:
        others = [schema for schema in node.pop("anyOf") if schema != NULL]
        if len(others) == 1 and "$ref" not in others[0]:
            node = {**others[0], **node}
        elif others:
            node["anyOf" if len(others) > 1 else "allOf"] = others
        node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("examples"), list) and "type" in node:  # a schema's examples, not a media type's map
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(flag), (int, float)) and not isinstance(node[flag], bool):
            node[bound], node[flag] = node[flag], True
    return node
