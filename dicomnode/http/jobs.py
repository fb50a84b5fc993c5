"""`/api/jobs`: the jobs (one per received image), one job, and retrying a failed or waiting
job. Reads are audited as reads of the studies they name (http/access.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from dicomnode.audit import AuditAction, AuditEventID
from dicomnode.http.access import Access, client_id
from dicomnode.http.context import BEARER, Context
from dicomnode.store.tables import Job, JobState

router = APIRouter(dependencies=BEARER)


@router.get("/api/jobs")
def list_jobs(
    request: Request,
    ctx: Context,
    access: Access,
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


@router.get("/api/jobs/{job_id}")
def get_job(job_id: int, request: Request, ctx: Context, access: Access) -> dict[str, Any]:
    job = ctx.jobs.get_job(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
    access.read(request, study_uid=job.study_instance_uid, what="GET /api/jobs/{id}",
                object=f"job:{job_id}", key=("job", job_id))  # fmt: skip
    return job_json(job)


@router.post("/api/jobs/{job_id}/retry")
def retry_job(job_id: int, request: Request, ctx: Context) -> dict[str, Any]:
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
        # null: not classified, or not recorded (results from before migration 0004)
        "model_name": job.model_name,
        "model_trained": job.model_trained,
        "received_at": iso(job.received_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "preprocess_ms": job.preprocess_ms,
        "inference_ms": job.inference_ms,
        # A job waiting for a resource (disk full, …): when it is tried again (see `reason`).
        "retry_at": iso(job.lease_expires_at) if job.state == JobState.QUEUED else None,
    }


def iso(value: datetime | None) -> str | None:
    """An instant as every API gives it: ISO 8601 with its UTC offset (SQLite hands back
    naive UTC; PostgreSQL an aware value)."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()
