"""Signing in and out of the pages (`/login`, `/logout`) and their static files (`/static/*`).

The form checks the token once and sets the session cookie (http/auth.py); failed sign-ins
are throttled per client (`guard.LoginThrottle`) and audited, never with the text sent.
"""

from __future__ import annotations

import math
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, status
from fastapi.responses import FileResponse, RedirectResponse

from dicomnode.http.access import Access
from dicomnode.http.auth import SESSION_COOKIE
from dicomnode.http.context import PageAuth, require_session
from dicomnode.http.guard import LoginThrottle
from dicomnode.http.pages import STATIC_DIR, login_page, safe_next

#: Served before signing in: the sign-in form's style.
PUBLIC_STATIC = frozenset({"login.css"})
_STATIC_FILES = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}

router = APIRouter(include_in_schema=False)


def get_throttle(request: Request) -> LoginThrottle:
    return cast(LoginThrottle, request.app.state.login_throttle)


def _render_login(
    request: Request, *, error: bool, code: int, next_path: str, message: str = "wrong_token"
) -> Response:
    return login_page(request, error=error, code=code, next_path=safe_next(next_path),
                      message=message)  # fmt: skip


@router.get("/login")
def login_form(request: Request, auth: PageAuth, next: str = "/") -> Response:
    if not auth.enabled:
        return RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    return _render_login(request, error=False, code=200, next_path=next)


@router.post("/login")
def login(
    request: Request,
    auth: PageAuth,
    access: Access,
    throttle: Annotated[LoginThrottle, Depends(get_throttle)],
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    client = request.client.host if request.client else "unknown"
    if auth.enabled and (wait := throttle.retry_after(client)):
        access.refused(request, why="sign-in refused: too many failed sign-ins (HTTP 429)")
        response = _render_login(request, error=True, code=429, next_path=next,
                                 message="too_many_sign_ins")  # fmt: skip
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    if auth.enabled and not auth.check_token(token):
        throttle.failed(client)
        access.refused(request, why="sign-in refused: wrong token")  # never the text sent
        return _render_login(request, error=True, code=401, next_path=next)
    throttle.succeeded(client)
    response = RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    if auth.enabled:
        secure = request.url.scheme == "https"
        response.set_cookie(SESSION_COOKIE, auth.session_value(), httponly=True,
                            samesite="strict", secure=secure)  # fmt: skip
    return response


@router.post("/logout", dependencies=[Depends(require_session)])
def logout() -> Response:
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/static/{name}")
def static(name: str, request: Request, auth: PageAuth) -> Response:
    if name not in PUBLIC_STATIC:  # the sign-in form's style is needed before signing in
        auth(request)
    path = _STATIC_FILES.get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=300"})
