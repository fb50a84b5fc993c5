"""Browser-facing hardening of the HTTP API: security headers on every response, a same-origin
check on every state-changing request that the session cookie authenticates, and a brake on
failed sign-ins.

Why a same-origin check although the cookie is SameSite=Strict: "site" is the registrable
domain, not the origin, so every port of the node's host is the same site. A page served by
Orthanc (port 8042) on the same host, or anything else there, could post to the node with the
cookie — uploads, sign-out. Browsers send `Origin` on every cross-origin POST (and Chromium and
Firefox `Sec-Fetch-Site`), which a page cannot forge; requests that carry the cookie must name
the node's own origin there. A request with the cookie and none of `Origin`, `Sec-Fetch-Site`
or `Referer` is refused: no browser of the last years sends such a POST, and letting it through
would re-open the hole for old ones (an attacker's page can suppress `Referer`). Scripts use the
bearer header, which a cross-site page cannot set without a CORS preflight the node never
answers, so bearer requests are not checked.

The Content-Security-Policy allows only the node's own scripts and styles (no inline code):
the pages keep their scripts and styles in `/static`, and `/docs` serves Swagger UI from the
`swagger-ui-bundle-v2` package instead of a CDN.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomnode.http.auth import SESSION_COOKIE, TokenAuth

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'",
    "img-src 'self' data: blob:",  # analysis previews (blob:), Swagger UI's icons (data:)
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'",
))  # fmt: skip
#: `same-origin`, not `no-referrer`: with `no-referrer` a browser sends `Origin: null` on the
#: node's own POSTs (Fetch standard), which the same-origin check would then refuse.
SECURITY_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
)
CROSS_ORIGIN_CODE = "cross_origin"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """`scheme://host:port` of an http(s) URL with the port spelled out; None if it is none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"


def cross_origin(request: Request, *, public_url: str = "") -> str | None:
    """Why `request` does not come from the node's own pages (no identifiers), or None.
    Its own origin is the one the request was addressed to, or `public_url` (behind a proxy)."""
    own = {origin_of(str(request.url)), origin_of(public_url)} - {None}
    origin = request.headers.get("origin")
    if origin is not None:
        return None if origin_of(origin) in own else f"Origin {origin[:80]}"
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return None if site == "same-origin" else f"Sec-Fetch-Site {site[:20]}"
    referer = request.headers.get("referer")
    if referer is not None:  # only its origin is named: a path may hold a UID
        return None if origin_of(referer) in own else "Referer of another origin"
    return "no Origin, Sec-Fetch-Site or Referer"


class BrowserGuard:
    """ASGI middleware: security headers on every response (errors included); a state-changing
    request carrying the session cookie (and no valid bearer token) from another origin is
    answered 403 `{"detail", "code": "cross_origin"}` and reported to `on_refused`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: TokenAuth,
        public_url: str,
        on_refused: Callable[[Request, str], None],
    ) -> None:
        self.app = app
        self.auth = auth
        self.public_url = public_url
        self.on_refused = on_refused

    def refusal(self, request: Request) -> str | None:
        if request.method in SAFE_METHODS or SESSION_COOKIE not in request.cookies:
            return None
        if self.auth.has_bearer(request):
            return None
        return cross_origin(request, public_url=self.public_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        request = Request(scope)
        why = self.refusal(request)
        if why is not None:
            await run_in_threadpool(self.on_refused, request, why)
            refused = JSONResponse({"detail": "cross-origin request refused: state-changing "
                                    "requests with the session cookie must come from the "
                                    "node's own pages", "code": CROSS_ORIGIN_CODE},
                                   status_code=403)  # fmt: skip
            await refused(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette's 500 page is sent outside this middleware: send it here, with the
            # headers, and re-raise so the server still logs the error.
            if not started:
                await PlainTextResponse("Internal Server Error", status_code=500)(
                    scope, receive, send_with_headers
                )
            raise


class LoginThrottle:
    """Failed sign-ins per client address. After `max_failures` within `window_seconds` the
    address is refused (429, Retry-After) until the oldest of them leaves the window — every
    attempt, a right token too, so guessing cannot go on. Answering at once keeps the server's
    threads free (a delay would hold one per attempt). A successful sign-in forgets the
    address's failures."""

    #: Addresses remembered at most (least recently failed go first).
    REMEMBERED = 4096

    def __init__(
        self,
        *,
        max_failures: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client, deque())
        while times and now - times[0] >= self.window_seconds:
            times.popleft()
        return times

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again; 0 if it may now."""
        now = self._clock()
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.max_failures:
                return 0.0
            return max(0.0, times[-self.max_failures] + self.window_seconds - now)

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            times = self._recent(client, now)
            times.append(now)
            while len(times) > self.max_failures:
                times.popleft()
            self._failures[client] = times
            self._failures.move_to_end(client)
            while len(self._failures) > self.REMEMBERED:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
