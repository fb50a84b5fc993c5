"""The HTTP API (FastAPI): one router per resource, composed here.

Token (bearer) auth on everything but /healthz and /readyz (the pages also accept their
session cookie). Patient identifiers are only returned behind the token and only when
`api.show_patient_identifiers` is true.

| router | routes |
|---|---|
| `health` | /healthz, /readyz, /metrics |
| `model` | /api/model |
| `jobs` | /api/jobs, /api/jobs/{id}, /api/jobs/{id}/retry |
| `studies` | /api/studies/{uid}, /api/studies/{uid}/report/retry |
| `audit_trail` | /api/audit |
| `docs` | /openapi.json, /docs, /docs/assets/{name} |
| `worklist` | /api/worklist, /api/results/{uid}/thumbnail.png, the page / |
| `login` | /login, /logout, /static/{name} |
| `orthanc` | /api/orthanc/studies/{id} (only with `orthanc.pull`) |
| `analyze` | /api/analyze(-study), /api/preview, /api/analyses/…, /analyze |
| `about` | /about-model, /about-model/plots/{name} |
| `dicomweb` | /dicomweb/studies, /dicomweb/studies/{study} (STOW-RS) |
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request

from dicomnode.audit import AuditAction, AuditEventID, AuditOutcome
from dicomnode.http import audit_trail, docs, health, jobs, login, model, orthanc, studies, worklist
from dicomnode.http.about import router as about_router
from dicomnode.http.access import AccessAudit, client_id
from dicomnode.http.analyze import include_analysis
from dicomnode.http.auth import TokenAuth
from dicomnode.http.context import ApiContext
from dicomnode.http.dicomweb import include_stow
from dicomnode.http.guard import BrowserGuard, LoginThrottle
from dicomnode.http.i18n_errors import install_error_pages

__all__ = ["ApiContext", "create_app"]  # ApiContext lives in http/context.py


def create_app(ctx: ApiContext) -> FastAPI:
    # The schema and docs are behind the token too, so they are served by routes (http/docs.py).
    app = FastAPI(title="dicomnode", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    api = ctx.settings.api
    # What the routers' dependencies read (http/context.py).
    app.state.context = ctx
    app.state.bearer_auth = TokenAuth(api.token, on_refused=_token_refused(ctx))
    app.state.page_auth = TokenAuth(api.token, cookie_for_any_method=True,
                                    on_refused=_token_refused(ctx))  # fmt: skip
    app.state.login_throttle = LoginThrottle(
        max_failures=api.login_max_failures, window_seconds=api.login_failure_window_seconds
    )
    access = AccessAudit.of(app, ctx)  # reads of identifiers (http/access.py)
    # Security headers on every response; cookie POSTs only from the node's own pages.
    app.add_middleware(
        BrowserGuard,
        auth=TokenAuth(api.token),
        public_url=api.public_url,
        on_refused=lambda request, why: access.refused(
            request, why=f"cross-origin request refused ({why})"
        ),
    )
    for router in (health.router, model.router, jobs.router, studies.router,
                   audit_trail.router, docs.router, worklist.router, login.router,
                   worklist.page_router, about_router):  # fmt: skip
        app.include_router(router)
    if ctx.orthanc_pull is not None:
        app.include_router(orthanc.router)
    include_analysis(app, ctx)  # /api/analyze, /api/analyze-study, /analyze
    include_stow(app, ctx)  # /dicomweb/studies (STOW-RS)
    install_error_pages(app)  # a page's HTTP error as a page in the reader's language
    return app


def _token_refused(ctx: ApiContext) -> Callable[[Request], None]:
    """A refused bearer token or session goes to the audit trail (User Authentication)."""

    def refused(request: Request) -> None:
        if ctx.audit is not None:
            ctx.audit.record(event=AuditEventID.USER_AUTHENTICATION,
                             action=AuditAction.EXECUTE, outcome=AuditOutcome.MINOR_FAILURE,
                             actor=client_id(request, ctx.settings.node.log_salt),
                             detail=f"bearer token refused: {request.method} "
                             f"{request.url.path}")  # fmt: skip

    return refused
