"""`/docs`: Swagger UI served by the node itself, from the `swagger-ui-bundle-v2` package.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script; the
Content-Security-Policy (http/guard.py) allows neither, and a hospital network may not reach a
CDN at all. Here the page, its assets and its start script (`static/docs.js`) all come from
the node, behind the token like the schema (`/openapi.json`, also served here).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse, JSONResponse, Response
from swagger_ui_bundle import swagger_ui_path

from dicomnode.http.context import BEARER
from dicomnode.http.i18n import translator
from dicomnode.http.pages import TEMPLATES, language

#: The files of Swagger UI the page needs (nothing else of the package is served).
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
_FOLDER = Path(str(swagger_ui_path))

#: `/openapi.json`, `/docs` and `/docs/assets/{name}`.
router = APIRouter(dependencies=BEARER, include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs(request: Request) -> Response:
    chosen = language(request)
    return TEMPLATES.TemplateResponse(
        request, "docs.html", {"t": translator(chosen), "lang": chosen}
    )


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> Response:
    path = _FOLDER / name if name in ASSETS else None
    if path is None or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})
