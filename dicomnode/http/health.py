"""Health (`/healthz`, open), readiness (`/readyz`, open: load balancers and orchestrators poll
it without a token) and Prometheus metrics (`/metrics`, behind the token)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dicomnode.config import NO_DESTINATION_WARNING
from dicomnode.http.context import BEARER, Context

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(ctx: Context) -> JSONResponse:
    checks = ctx.readiness()
    ready = all(checks.values())
    # Ready all the same (receiving and classifying work), but an orchestrator's or an
    # administrator's look at the detail says where results go: nowhere.
    warnings = [] if ctx.settings.destinations else [NO_DESTINATION_WARNING]
    return JSONResponse(
        {"ready": ready, "checks": checks, "warnings": warnings},
        status_code=200 if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
    )


@router.get("/metrics", dependencies=BEARER)
def metrics(ctx: Context) -> Response:
    ctx.metrics.queue_depth.set(ctx.jobs.queue_depth())
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
