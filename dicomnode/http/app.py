"""The status API (FastAPI): health, readiness, jobs, studies, model, metrics.

Token (bearer) auth on everything but /healthz and /readyz. Patient identifiers are only
returned behind the token and only when `api.show_patient_identifiers` is true.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from dicomnode.audit import Audit, AuditAction, AuditEventID, AuditOutcome, event_json
from dicomnode.config import Settings
from dicomnode.http import worklist as web
from dicomnode.http.access import AccessAudit, client_id
from dicomnode.http.analyze import include_analysis
from dicomnode.http.auth import TokenAuth
from dicomnode.http.docs import add_docs_routes
from dicomnode.http.guard import BrowserGuard
from dicomnode.metrics import Metrics
from dicomnode.model.card import ModelCard
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from dicomnode.store.tables import Job, JobState, ResultKind, Study, utcnow

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


class OrthancPullRequest(BaseModel):
    """Body of POST /api/orthanc/studies/{id}: the instances to fetch (default: the study's
    radiograph series)."""

    instances: list[str] | None = None


def create_app(ctx: ApiContext) -> FastAPI:
    # The schema and docs are behind the token too, so they are served by routes below.
    app = FastAPI(title="dicomnode", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip

    def refused(request: Request) -> None:
        if ctx.audit is not None:
            ctx.audit.record(event=AuditEventID.USER_AUTHENTICATION,
                             action=AuditAction.EXECUTE, outcome=AuditOutcome.MINOR_FAILURE,
                             actor=client_id(request, ctx.settings.node.log_salt),
                             detail=f"bearer token refused: {request.method} "
                             f"{request.url.path}")  # fmt: skip

    require_token = TokenAuth(ctx.settings.api.token, on_refused=refused)
    auth = [Depends(require_token)]
    access = AccessAudit.of(app, ctx)  # reads of identifiers (dicomnode/http/access.py)
    # Security headers on every response; cookie POSTs only from the node's own pages.
    api = ctx.settings.api
    app.add_middleware(
        BrowserGuard,
        auth=TokenAuth(api.token),
        public_url=api.public_url,
        on_refused=lambda request, why: access.refused(
            request, why=f"cross-origin request refused ({why})"
        ),
    )

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
        data = model_json(card)
        if ctx.classifier is not None:  # which engine runs it: torch, onnxruntime, openvino-f32
            data["runtime"] = ctx.classifier.runtime
        return data

    @app.get("/api/jobs", dependencies=auth)
    def list_jobs(
        request: Request,
        state: JobState | None = None,
        study_instance_uid: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        rows = ctx.jobs.list_jobs(
            state=state, study_instance_uid=study_instance_uid, limit=limit, offset=offset
        )
        access.jobs_listed(request, rows, state=state, study_uid=study_instance_uid,
                           limit=limit, offset=offset)  # fmt: skip
        return {"jobs": [job_json(j) for j in rows], "limit": limit, "offset": offset}

    @app.get("/api/jobs/{job_id}", dependencies=auth)
    def get_job(job_id: int, request: Request) -> dict[str, Any]:
        job = ctx.jobs.get_job(job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
        access.read(request, study_uid=job.study_instance_uid, what="GET /api/jobs/{id}",
                    object=f"job:{job_id}", key=("job", job_id))  # fmt: skip
        return job_json(job)

    @app.post("/api/jobs/{job_id}/retry", dependencies=auth)
    def retry_job(job_id: int, request: Request) -> dict[str, Any]:
        job = ctx.jobs.get_job(job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
        requeued = ctx.jobs.requeue(job_id)
        # A job waiting for a resource (disk full, …) is tried now instead of at `retry_at`.
        waiting = not requeued and ctx.jobs.retry_now(job_id)
        if not (requeued or waiting):
            raise HTTPException(status.HTTP_409_CONFLICT,
                                f"job is {job.state}, not failed or waiting")  # fmt: skip
        if ctx.audit is not None:
            ctx.audit.record(event=AuditEventID.INSTANCES_ACCESSED, action=AuditAction.UPDATE,
                             actor=client_id(request, ctx.settings.node.log_salt),
                             study_uid=job.study_instance_uid, object=f"job:{job_id}",
                             detail="waiting job retried now" if waiting
                             else "failed job requeued")  # fmt: skip
        return {"id": job_id, "state": "queued"}

    @app.post("/api/studies/{study_instance_uid}/report/retry", dependencies=auth)
    def retry_study_report(study_instance_uid: str, request: Request) -> dict[str, Any]:
        """A study report waiting after a failed write (disk full, …) is built now instead of
        at its `report_retry_at`."""
        if ctx.jobs.study(study_instance_uid) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
        if not ctx.jobs.retry_study_report_now(study_instance_uid):
            study = ctx.jobs.study(study_instance_uid)
            busy = study is not None and study.report_owner is not None
            raise HTTPException(status.HTTP_409_CONFLICT,
                                "study report is being built now" if busy
                                else "study has no report waiting")  # fmt: skip
        if ctx.audit is not None:
            ctx.audit.record(event=AuditEventID.INSTANCES_ACCESSED, action=AuditAction.UPDATE,
                             actor=client_id(request, ctx.settings.node.log_salt),
                             study_uid=study_instance_uid, object="study-report",
                             detail="waiting study report retried now")  # fmt: skip
        return {"study_instance_uid": study_instance_uid, "report": "due"}

    @app.get("/api/studies/{study_instance_uid}", dependencies=auth)
    def get_study(study_instance_uid: str, request: Request) -> dict[str, Any]:
        study = ctx.jobs.study(study_instance_uid)
        if study is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
        data = study_json(ctx, study)
        access.read(request, study_uid=study_instance_uid, what="GET /api/studies/{uid}"
                    + ("; patient identifiers shown" if "patient" in data else ""),
                    count=len(data["images"]), key=("study", study_instance_uid),
                    shows=[len(data["images"]), len(data["results"])])  # fmt: skip
        return data

    # --- audit trail ----------------------------------------------------------------------

    @app.get("/api/audit", dependencies=auth)
    def audit_events(
        request: Request,
        since: datetime | None = None,
        until: datetime | None = None,
        event: str | None = None,
        actor: str | None = None,
        study: Annotated[str | None, Query(description="Study Instance UID (hashed here)")] = None,
        outcome: int | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Audit events, newest first (PS3.15-shaped; objects are salted hashes)."""
        if ctx.audit is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "audit trail not available")
        rows = ctx.audit.query(since=since, until=until, event=event, actor=actor,
                               study_uid=study, outcome=outcome, limit=limit,
                               offset=offset)  # fmt: skip
        ctx.audit.record(event=AuditEventID.AUDIT_LOG_USED, action=AuditAction.READ,
                         actor=client_id(request, ctx.settings.node.log_salt), count=len(rows),
                         detail="GET /api/audit")  # fmt: skip
        return {"events": [event_json(r) for r in rows], "limit": limit, "offset": offset}

    # --- OpenAPI schema and docs (behind the token) ---------------------------------------

    @app.get("/openapi.json", dependencies=auth, include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    add_docs_routes(app, auth)  # Swagger UI from the node itself, no CDN (http/docs.py)

    # --- worklist API and page (dicomnode/web) --------------------------------------------

    web.add_api_routes(app, ctx, require_token)
    web.add_page_routes(
        app, ctx,
        TokenAuth(ctx.settings.api.token, cookie_for_any_method=True, on_refused=refused),
    )  # fmt: skip

    if ctx.orthanc_pull is not None:
        _orthanc_routes(app, ctx.orthanc_pull, auth)

    include_analysis(app, ctx)  # /api/analyze, /api/analyze-study, /analyze, /about-model

    return app


def _orthanc_routes(
    app: FastAPI, pull: Callable[[str, list[str] | None], int], auth: list[Any]
) -> None:
    from dicomnode.pacs.orthanc import OrthancError, OrthancUnavailable

    @app.post("/api/orthanc/studies/{orthanc_study_id}", dependencies=auth,
              status_code=status.HTTP_202_ACCEPTED)  # fmt: skip
    def orthanc_pull(
        orthanc_study_id: str, body: OrthancPullRequest | None = None
    ) -> dict[str, Any]:
        """Fetch the study's instances from Orthanc in the background (202 + count)."""
        try:
            queued = pull(orthanc_study_id, body.instances if body else None)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
        except LookupError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except (OrthancError, OrthancUnavailable) as exc:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"Orthanc: {exc}") from None
        return {"orthanc_study_id": orthanc_study_id, "queued": queued}


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
        # A job waiting for a resource (disk full, …): when it is tried again (see `reason`).
        "retry_at": _iso(job.lease_expires_at) if job.state == JobState.QUEUED else None,
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
        # A report waiting after a failed write (disk full, …): when it is tried again.
        "report_retry_at": _iso(_report_retry_at(study)),
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


def _report_retry_at(study: Study) -> datetime | None:
    """The "not before" of a report no node is building (`Jobs.release_study_report`)."""
    at = study.report_lease_expires_at
    if study.report_owner is not None or at is None:
        return None
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # SQLite: naive UTC
    return at if aware > utcnow() else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
