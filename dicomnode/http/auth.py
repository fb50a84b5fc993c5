"""Bearer-token auth for the API, and a session cookie for the worklist page.

API clients send `Authorization: Bearer <token>`. A browser cannot send that header when it
navigates, so the login form (POST /login) checks the token once and sets an HttpOnly,
SameSite=Strict cookie holding an HMAC of the token (never the token itself). The cookie is
accepted for reading (GET/HEAD) and for signing out; anything that changes state (POST
/api/jobs/{id}/retry) needs the bearer header. The pages' own POSTs (uploads, sign-out) accept
the cookie; `guard.BrowserGuard` refuses any of those that does not come from the node's own
origin (SameSite treats every port of the host as the same site).

With no token configured (the API then only listens on loopback) everything is open.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request, status

SESSION_COOKIE = "dicomnode_session"
_SAFE_METHODS = frozenset({"GET", "HEAD"})


class TokenAuth:
    """FastAPI dependency: raises 401 unless the request carries the token."""

    def __init__(
        self,
        token: str,
        *,
        cookie_for_any_method: bool = False,
        on_refused: Callable[[Request], None] | None = None,
    ) -> None:
        self.token = token
        self.cookie_for_any_method = cookie_for_any_method
        #: Called for every refused request (the audit trail records failed authentication).
        self.on_refused = on_refused

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def session_value(self) -> str:
        key = self.token.encode()
        return hmac.new(key, b"dicomnode worklist session v1", hashlib.sha256).hexdigest()

    def check_token(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def has_bearer(self, request: Request) -> bool:
        """The request carries the right token in its Authorization header."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.check_token(given.strip())

    def is_authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        if self.has_bearer(request):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and (self.cookie_for_any_method or request.method in _SAFE_METHODS):
            return hmac.compare_digest(cookie.encode(), self.session_value().encode())
        return False

    def __call__(self, request: Request) -> None:
        if not self.is_authorized(request):
            if self.on_refused is not None:
                self.on_refused(request)
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
