"""What every HTML page shares: the templates, the language of the page (`?lang=`, the
language cookie, Accept-Language) and the sign-in form that answers a page without a session."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates

from dicomnode.http.i18n import LANG_COOKIE, LANGUAGES, MESSAGES, choose_language, translator

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))


def language(request: Request) -> str:
    return choose_language(
        query=request.query_params.get("lang"),
        cookie=request.cookies.get(LANG_COOKIE),
        accept_language=request.headers.get("accept-language", ""),
    )


def remember_language(request: Request, response: Response, language: str) -> None:
    if request.query_params.get("lang") in MESSAGES:
        response.set_cookie(LANG_COOKIE, language, samesite="lax", max_age=365 * 86400)


def languages() -> list[tuple[str, str]]:
    return [(code, MESSAGES[code]["language_name"]) for code in LANGUAGES]


def safe_next(value: str) -> str:
    """Only same-site paths after login (no open redirect)."""
    return value if value.startswith("/") and not value.startswith("//") else "/"


def login_page(
    request: Request, *, error: bool, code: int, next_path: str, message: str = "wrong_token"
) -> Response:
    """The sign-in form (`message`: the i18n key of the error shown when `error`)."""
    chosen = language(request)
    response = TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {"t": translator(chosen), "lang": chosen, "languages": languages(),
         "error": error, "message": message, "next": next_path},
        status_code=code,
    )  # fmt: skip
    remember_language(request, response, chosen)
    return response
