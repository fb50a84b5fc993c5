"""What the HTTP routers share: the node's parts (`ApiContext`) and the FastAPI dependencies
that hand them to a route.

`create_app` (http/app.py) puts the context and the app's authenticators on `app.state`; the
dependencies below read them from `request.app.state`, so a router module holds routes only
and imports nothing "above" it (no module of `dicomnode.http` imports app.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, cast

from fastapi import Depends, Request

from dicomnode.audit import Audit
from dicomnode.config import Settings
from dicomnode.http.auth import TokenAuth
from dicomnode.ingest.admission import StoreContext
from dicomnode.metrics import Metrics
from dicomnode.model.card import ModelCard
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool

if TYPE_CHECKING:
    from dicomnode.model.classifier import Classifier


@dataclass
class ApiContext:
    settings: Settings
    jobs: Jobs
    metrics: Metrics
    card: Callable[[], ModelCard | None]
    readiness: Callable[[], dict[str, bool]]
    #: Where result files are (SC thumbnails); None: thumbnails answer 404.
    spool: Spool | None = None
    # Orthanc pull path (dicomnode.pacs.orthanc.OrthancPull.request); None: not offered.
    orthanc_pull: Callable[[str, list[str] | None], int] | None = None
    audit: Audit | None = None
    #: The loaded model, for HTTP analysis (dicomnode/http/analyze.py); None: 503 there.
    classifier: Classifier | None = None
    #: The admission every way in shares, for STOW-RS (http/dicomweb.py); None: 503 there.
    store: StoreContext | None = None


def get_context(request: Request) -> ApiContext:
    return cast(ApiContext, request.app.state.context)


def require_token(request: Request) -> None:
    """The bearer token (a refused one is audited): every API route but /healthz, /readyz."""
    cast(TokenAuth, request.app.state.bearer_auth)(request)


def get_page_auth(request: Request) -> TokenAuth:
    """The pages' authenticator: the bearer token or the session cookie, for any method."""
    return cast(TokenAuth, request.app.state.page_auth)


def require_session(request: Request) -> None:
    """A route of the pages (sign-out): the bearer token or the session cookie."""
    get_page_auth(request)(request)


Context = Annotated[ApiContext, Depends(get_context)]
PageAuth = Annotated[TokenAuth, Depends(get_page_auth)]
#: `dependencies=` of a route (or router) behind the bearer token.
BEARER = [Depends(require_token)]
