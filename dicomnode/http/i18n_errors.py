"""HTTP errors of the pages in the reader's language.

A browser that asks for a page (GET, Accept: text/html, not under /api/) and meets an HTTP
error (404 no such page, 405, …) gets a short page in its language with a way back to the
worklist; API clients keep FastAPI's JSON `{"detail": ...}` (English, as the API is).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from dicomnode.http.i18n import translator
from dicomnode.http.pages import TEMPLATES, language, languages

#: Statuses with their own message (`http_error.<status>`); others: `http_error.other`.
KNOWN_STATUSES = (400, 403, 404, 405, 413, 429, 500, 503)
_NOT_PAGES = ("/api/", "/static/", "/docs/assets/", "/openapi.json", "/metrics", "/healthz",
              "/readyz")  # fmt: skip


def wants_page(request: Request) -> bool:
    """A browser navigating to a page (not a script or an API client)."""
    return (
        request.method in ("GET", "HEAD")
        and "text/html" in request.headers.get("accept", "")
        and not request.url.path.startswith(_NOT_PAGES)
    )


def error_page(
    request: Request, status_code: int, headers: dict[str, str] | None = None
) -> Response:
    """The error page of `status_code` in the reader's language."""
    chosen = language(request)
    t = translator(chosen)
    key = f"http_error.{status_code}" if status_code in KNOWN_STATUSES else "http_error.other"
    context = {"t": t, "lang": chosen, "languages": languages(), "status": status_code,
               "message": t(key)}  # fmt: skip
    response = TEMPLATES.TemplateResponse(request, "error.html", context, status_code=status_code,
                                          headers=headers)  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if wants_page(request) and exc.status_code >= 400:
        return error_page(request, exc.status_code, headers=getattr(exc, "headers", None))
    return await http_exception_handler(request, exc)


def install_error_pages(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
