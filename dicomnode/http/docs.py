"""`/docs`: Swagger UI served by the node itself, from the `swagger-ui-bundle-v2` package.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script; the
Content-Security-Policy (http/guard.py) allows neither, and a hospital network may not reach a
CDN at all. Here the page, its assets and its start script (`static/docs.js`) all come from
the node, behind the token like the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, Response
from swagger_ui_bundle import swagger_ui_path

from dicomnode.http.worklist import TEMPLATES

#: The files of Swagger UI the page needs (nothing else of the package is served).
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def add_docs_routes(app: FastAPI, dependencies: list[Any]) -> None:
    """`/docs` and `/docs/assets/{name}`; the schema itself is `/openapi.json`."""
    folder = Path(str(swagger_ui_path))
    assets = {name: folder / name for name in ASSETS}

    @app.get("/docs", dependencies=dependencies, include_in_schema=False)
    def docs(request: Request) -> Response:
        return TEMPLATES.TemplateResponse(request, "docs.html", {"title": "dicomnode API"})

    @app.get("/docs/assets/{name}", dependencies=dependencies, include_in_schema=False)
    def docs_asset(name: str) -> Response:
        path = assets.get(name)
        if path is None or not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})
