"""The status API (FastAPI): health, readiness, jobs, studies, model, metrics.

Token (bearer) auth on everything but /healthz and /readyz. Patient identifiers are only
returned behind the token and only when `api.show_patient_identifiers` is true.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dicomnode.card import ModelCard
from dicomnode.config import Settings
from dicomnode.jobs import Jobs
from dicomnode.metrics import Metrics
from dicomnode.spool import Spool
from dicomnode.tables import Job, JobState, ResultKind, Study
from dicomnode.uids import hash_uid
from dicomnode.web import routes as web
from dicomnode.web.analyze import add_analysis_routes
from dicomnode.web.auth import TokenAuth

if TYPE_CHECKING:
    from dicomnode.classifier import Classifier


@dataclass
class ApiContext:
    settings: Settings
    jobs: Jobs
    metrics: Metrics
    card: Callable[[], ModelCard | None]
    readiness: Callable[[], dict[str, bool]]
    #: Where result files are (SC thumbnails); None: thumbnails answer 404.
    spool: Spool | None = None
    #: The loaded model, for HTTP analysis (dicomnode/web/analyze.py); None: 503 there.
    classifier: Classifier | None = None


def create_app(ctx: ApiContext) -> FastAPI:
    # The schema and docs are behind the token too, so they are served by routes below.
    app = FastAPI(title="dicomnode", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    require_token = TokenAuth(ctx.settings.api.token)
    auth = [Depends(require_token)]

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        checks = ctx.readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"ready": ready, "checks": checks},
            status_code=200 if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    @app.get("/metrics", dependencies=auth)
    def metrics() -> Response:
        ctx.metrics.queue_depth.set(ctx.jobs.queue_depth())
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/model", dependencies=auth)
    def model() -> dict[str, Any]:
        card = ctx.card()
        if card is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "model not loaded")
        return model_json(card)

    @app.get("/api/jobs", dependencies=auth)
    def list_jobs(
        state: JobState | None = None,
        study_instance_uid: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        rows = ctx.jobs.list_jobs(
            state=state, study_instance_uid=study_instance_uid, limit=limit, offset=offset
        )
        return {"jobs": [job_json(j) for j in rows], "limit": limit, "offset": offset}

    @app.get("/api/jobs/{job_id}", dependencies=auth)
    def get_job(job_id: int) -> dict[str, Any]:
        job = ctx.jobs.get_job(job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
        return job_json(job)

    @app.post("/api/jobs/{job_id}/retry", dependencies=auth)
    def retry_job(job_id: int) -> dict[str, Any]:
        job = ctx.jobs.get_job(job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
        if not ctx.jobs.requeue(job_id):
            raise HTTPException(status.HTTP_409_CONFLICT, f"job is {job.state}, not failed")
        return {"id": job_id, "state": "queued"}

    @app.get("/api/studies/{study_instance_uid}", dependencies=auth)
    def get_study(study_instance_uid: str) -> dict[str, Any]:
        study = ctx.jobs.study(study_instance_uid)
        if study is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
        return study_json(ctx, study)

    # --- OpenAPI schema and docs (behind the token) ---------------------------------------

    @app.get("/openapi.json", dependencies=auth, include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=auth, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="dicomnode API")

    # --- worklist API and page (dicomnode/web) --------------------------------------------

    web.add_api_routes(app, ctx, require_token)
    web.add_page_routes(app, ctx, TokenAuth(ctx.settings.api.token, cookie_for_any_method=True))
    add_analysis_routes(app, ctx)  # /api/analyze, /api/analyze-study, /analyze, /about-model
    return app


def model_json(card: ModelCard) -> dict[str, Any]:
    data = card.to_json()
    data["display_name"] = card.display_name
    data["untrained_demo"] = not card.trained
    return data


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state,
        "reason": job.reason,
        "study_instance_uid": job.study_instance_uid,
        "sop_instance_uid": job.sop_instance_uid,
        "modality": job.modality,
        "body_part": job.body_part,
        "calling_ae_title": job.calling_ae_title,
        "attempts": job.attempts,
        "probability": job.probability,
        "outcome": job.outcome,
        "model_version": job.model_version,
        "received_at": _iso(job.received_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "preprocess_ms": job.preprocess_ms,
        "inference_ms": job.inference_ms,
    }


def study_json(ctx: ApiContext, study: Study) -> dict[str, Any]:
    jobs = ctx.jobs.jobs_for_study(study.study_instance_uid)
    results = ctx.jobs.results_for_study(study.study_instance_uid)
    deliveries = ctx.jobs.deliveries_for([r.id for r in results if r.id is not None])
    by_result: dict[int, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_result.setdefault(d.result_id, []).append(
            {
                "destination": d.destination,
                "state": d.state,
                "attempts": d.attempts,
                "last_status": d.last_status,
                "last_error": d.last_error,
                "delivered_at": _iso(d.delivered_at),
            }
        )
    data: dict[str, Any] = {
        "study_instance_uid": study.study_instance_uid,
        "study_date": study.study_date,
        "study_time": study.study_time,
        "study_description": study.study_description,
        "modalities": study.modalities.split(",") if study.modalities else [],
        "body_part": study.body_part,
        "outcome": study.outcome,
        "max_probability": study.max_probability,
        "report_version": study.report_version,
        "reported_at": _iso(study.reported_at),
        "images": [job_json(j) for j in sorted(jobs, key=lambda j: j.id or 0)],
        "results": [
            {
                "kind": r.kind,
                "sop_instance_uid": r.sop_instance_uid,
                "version": r.version,
                "job_id": r.job_id,
                "thumbnail": web.thumbnail_url(r.sop_instance_uid)
                if r.kind == ResultKind.SC
                else None,
                "deliveries": by_result.get(r.id or 0, []),
            }
            for r in results
        ],
    }
    if ctx.settings.api.token and ctx.settings.api.show_patient_identifiers:
        data["patient"] = {
            "name": study.patient_name,
            "id": study.patient_id,
            "birth_date": study.patient_birth_date,
            "accession_number": study.accession_number,
        }
    return data


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def client_id(request: Request, salt: str) -> str:
    """An API client as the audit trail names it: a hash of its address."""
    host = request.client.host if request.client else "unknown"
    return "api:" + hash_uid(host, salt)[:8]
