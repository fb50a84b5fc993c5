"""Browser hardening of the HTTP API (dicomnode/http/guard.py) on the real app: every route that
changes state refuses the session cookie from another origin (a page on Orthanc's port of the
same host is the same *site*, so SameSite=Strict does not stop it); every kind of response
carries the security headers; failed sign-ins are audited and throttled per client address."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from dicomnode.audit import AuditEventID
from dicomnode.http.auth import SESSION_COOKIE, TokenAuth
from dicomnode.http.guard import LoginThrottle, cross_origin, origin_of
from tests.support.api_client import TOKEN, api_client, app_routes

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
SAME_ORIGIN = {"Origin": "http://testserver"}  # TestClient's base URL
ORTHANC_PAGE = "http://testserver:8042"  # same host, another port: same site, other origin
CROSS_ORIGIN = (
    {"Origin": ORTHANC_PAGE},
    {"Origin": "null"},  # a sandboxed frame, a data: URL
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Referer": f"{ORTHANC_PAGE}/ui/app/"},
    {},  # no Origin, Sec-Fetch-Site nor Referer: no browser sends that POST today
)
HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _cookie_client(client: TestClient) -> TestClient:
    """A browser signed in to the pages: the session cookie, no bearer header."""
    browser = TestClient(client.app, raise_server_exceptions=False)
    browser.cookies.set(SESSION_COOKIE, TokenAuth(TOKEN).session_value())
    return browser


def _assert_security_headers(response) -> None:
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name)
    csp = response.headers.get("content-security-policy", "")
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                      "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'",
                      "form-action 'self'"):  # fmt: skip
        assert directive in csp, (response.request.url, directive)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


@pytest.fixture
def api(tmp_path):
    with api_client(tmp_path, orthanc_pull=lambda study, instances: 0) as parts:
        yield parts


def test_every_state_changing_route_refuses_the_cookie_from_another_origin(api):
    client, _, audit = api
    browser = _cookie_client(client)
    checked = set()
    for route in app_routes(client.app):
        if not isinstance(route, APIRoute | Route):
            continue
        for method in sorted((route.methods or set()) & STATE_CHANGING):
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            for headers in CROSS_ORIGIN:
                response = browser.request(method, path, headers=headers)
                assert response.status_code == 403, (method, route.path, headers)
                assert response.json()["code"] == "cross_origin"
                _assert_security_headers(response)
            checked.add((method, route.path))
    assert {("POST", "/logout"), ("POST", "/login"), ("POST", "/api/analyze"),
            ("POST", "/api/analyze-study"), ("POST", "/api/preview"),
            ("POST", "/api/jobs/{job_id}/retry"),
            ("POST", "/api/studies/{study_instance_uid}/report/retry"),
            ("POST", "/api/orthanc/studies/{orthanc_study_id}")} <= checked  # fmt: skip
    refused = audit.query(event=AuditEventID.USER_AUTHENTICATION, limit=1000)
    assert len(refused) == len(checked) * len(CROSS_ORIGIN)
    assert all(e.detail.startswith("cross-origin request refused") for e in refused)
    assert all(e.outcome == 4 and "(session cookie)" in e.peer for e in refused)
    assert any(ORTHANC_PAGE in e.detail for e in refused)  # which page tried it


def test_the_nodes_own_pages_and_api_clients_are_not_refused(api, tmp_path):
    client, _, _ = api
    browser = _cookie_client(client)
    # The node's own page (Origin, or only Sec-Fetch-Site, or only a same-origin Referer).
    for headers in (SAME_ORIGIN, {"Sec-Fetch-Site": "same-origin"},
                    {"Referer": "http://testserver/analyze"}):  # fmt: skip
        assert browser.post("/logout", headers=headers, follow_redirects=False).status_code == 303
    # A bearer client is not a browser session: no Origin needed, even with a cookie jar.
    assert client.post("/api/jobs/1/retry").status_code == 404  # reached the route
    client.cookies.set(SESSION_COOKIE, "stale")
    assert client.post("/api/jobs/1/retry", headers={"Origin": ORTHANC_PAGE}).status_code == 404
    # Behind a reverse proxy the browser's origin is the public one (api.public_url).
    with api_client(tmp_path / "proxy", api={"public_url": "https://triage.example"}) as (
        proxied, _, _,
    ):  # fmt: skip
        behind = _cookie_client(proxied)
        public = {"Origin": "https://triage.example"}
        assert behind.post("/logout", headers=public, follow_redirects=False).status_code == 303
        other = {"Origin": "https://triage.example:8443"}
        assert behind.post("/logout", headers=other).status_code == 403


def test_origins_compare_with_default_ports_and_case():
    assert origin_of("HTTP://TestServer/x?y") == "http://testserver:80"
    assert origin_of("https://h:443") == origin_of("https://h") == "https://h:443"
    assert origin_of("http://[::1]:8000/") == "http://[::1]:8000"
    assert origin_of("null") is None and origin_of("http://h:99999") is None


def test_security_headers_on_every_kind_of_response(tmp_path):
    def broken() -> dict[str, bool]:
        raise RuntimeError("readiness check broke")

    with api_client(tmp_path, readiness=broken) as (client, _, _):
        anonymous = TestClient(client.app, raise_server_exceptions=False)
        responses = {
            "health": anonymous.get("/healthz"),
            "page": anonymous.get("/login"),
            "worklist page": client.get("/"),
            "static": anonymous.get("/static/login.css"),
            "static behind the token": client.get("/static/worklist.js"),
            "API": client.get("/api/worklist"),
            "401": anonymous.get("/api/worklist"),
            "404": client.get("/api/jobs/999"),
            "422": client.get("/api/jobs?limit=0"),
            "500": anonymous.get("/readyz"),
            "docs": client.get("/docs"),
            "docs asset": client.get("/docs/assets/swagger-ui-bundle.js"),
            "schema": client.get("/openapi.json"),
            "metrics": client.get("/metrics"),
        }
        for kind, response in responses.items():
            expected = {"401": 401, "404": 404, "422": 422, "500": 500}.get(kind, 200)
            assert response.status_code == expected, kind
            _assert_security_headers(response)


def test_docs_come_from_the_node_not_a_cdn(api):
    client, _, _ = api
    page = client.get("/docs")
    assert page.status_code == 200 and 'id="swagger-ui"' in page.text
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert links and all(link.startswith("/") and not link.startswith("//") for link in links)
    assert "<script>" not in page.text  # no inline code: the CSP would block it
    for link in links:
        asset = client.get(link)
        assert asset.status_code == 200 and len(asset.content) > 0, link
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text
    assert client.get("/docs/assets/index.html").status_code == 404  # only what the page needs
    assert TestClient(client.app).get("/docs/assets/swagger-ui.css").status_code == 401


# --- sign-in ----------------------------------------------------------------------------------


def test_failed_sign_ins_are_audited_without_what_was_typed_and_throttled(tmp_path):
    window = 600
    limits = {"login_max_failures": 3, "login_failure_window_seconds": window}
    with api_client(tmp_path, api=limits) as (client, _, audit):
        browser = TestClient(client.app)
        typed = "Doe^Jane-secret-guess"
        for _ in range(3):
            wrong = browser.post("/login", data={"token": typed}, follow_redirects=False)
            assert wrong.status_code == 401 and 'id="login-error"' in wrong.text
        events = audit.query(event=AuditEventID.USER_AUTHENTICATION)
        assert len(events) == 3
        assert all(e.detail == "sign-in refused: wrong token: POST /login" for e in events)
        assert all(e.outcome == 4 and e.peer.startswith("testclient:") for e in events)
        assert all(e.actor.startswith("api:") for e in events)
        # The fourth attempt is not even checked, a right token neither: guessing stops here.
        blocked = browser.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert blocked.status_code == 429 and SESSION_COOKIE not in browser.cookies
        assert 0 < int(blocked.headers["retry-after"]) <= window
        assert "Too many failed sign-ins" in blocked.text
        _assert_security_headers(blocked)
        events = audit.query(event=AuditEventID.USER_AUTHENTICATION)
        assert (
            events[0].detail == "sign-in refused: too many failed sign-ins (HTTP 429): POST /login"
        )
        every = " ".join(f"{e.actor} {e.peer} {e.object} {e.detail}" for e in audit.query())
        assert typed not in every and TOKEN not in every and "Doe" not in every


def test_a_successful_sign_in_resets_the_count(tmp_path):
    with api_client(tmp_path, api={"login_max_failures": 3}) as (client, _, _):
        browser = TestClient(client.app)
        for _ in range(2):
            assert browser.post("/login", data={"token": "x"}).status_code == 401
        ok = browser.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert ok.status_code == 303
        browser.cookies.clear()
        for _ in range(2):
            assert browser.post("/login", data={"token": "x"}).status_code == 401
        assert (
            browser.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303
        )


def test_login_throttle_counts_per_address_within_the_window():
    now = [1000.0]
    throttle = LoginThrottle(max_failures=2, window_seconds=60, clock=lambda: now[0])
    throttle.failed("10.0.0.1")
    now[0] += 10
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == pytest.approx(50)  # until the first leaves
    assert throttle.retry_after("10.0.0.2") == 0  # another workstation is not affected
    now[0] += 50
    assert throttle.retry_after("10.0.0.1") == 0
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == pytest.approx(10)
    throttle.succeeded("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 0


def test_cross_origin_names_no_path_of_the_referer():
    from starlette.requests import Request

    scope = {"type": "http", "method": "POST", "scheme": "http", "path": "/logout",
             "query_string": b"", "server": ("node", 8000),
             "headers": [(b"host", b"node:8000"),
                         (b"referer", b"http://node:8042/studies/1.2.3.4.5")]}  # fmt: skip
    why = cross_origin(Request(scope))
    assert why == "Referer of another origin"
