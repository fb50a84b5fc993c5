"""`/api/studies/{uid}`: one study with its images, results and their deliveries (patient
identifiers only behind the token and when configured), and retrying its waiting report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from dicomnode.audit import AuditAction, AuditEventID
from dicomnode.http.access import Access, client_id
from dicomnode.http.context import BEARER, ApiContext, Context
from dicomnode.http.jobs import iso, job_json
from dicomnode.http.worklist import served_version, thumbnail_url
from dicomnode.http.worklist_view import model_json
from dicomnode.store.tables import ResultKind, Study, utcnow
from dicomnode.store.worklist import format_date, format_time

router = APIRouter(dependencies=BEARER)


@router.post("/api/studies/{study_instance_uid}/report/retry")
def retry_study_report(study_instance_uid: str, request: Request, ctx: Context) -> dict[str, Any]:
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


@router.get("/api/studies/{study_instance_uid}")
def get_study(
    study_instance_uid: str, request: Request, ctx: Context, access: Access
) -> dict[str, Any]:
    study = ctx.jobs.study(study_instance_uid)
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
    data = study_json(ctx, study)
    access.read(request, study_uid=study_instance_uid, what="GET /api/studies/{uid}"
                + ("; patient identifiers shown" if "patient" in data else ""),
                count=len(data["images"]), key=("study", study_instance_uid),
                shows=[len(data["images"]), len(data["results"])])  # fmt: skip
    return data


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
                "delivered_at": iso(d.delivered_at),
            }
        )
    data: dict[str, Any] = {
        "study_instance_uid": study.study_instance_uid,
        "study_date": format_date(study.study_date),
        "study_time": format_time(study.study_time),
        "study_description": study.study_description,
        "modalities": study.modalities.split(",") if study.modalities else [],
        "body_part": study.body_part,
        "outcome": study.outcome,
        "max_probability": study.max_probability,
        "report_version": study.report_version,
        "reported_at": iso(study.reported_at),
        # The model of the latest report (null: not reported yet; its fields null: unknown).
        "model": model_json(
            name=study.model_name,
            version=study.model_version,
            trained=study.model_trained,
            served_version=served_version(ctx),
            count=1 if study.report_version else 0,
        ),
        # A report waiting after a failed write (disk full, …): when it is tried again.
        "report_retry_at": iso(_report_retry_at(study)),
        "images": [job_json(j) for j in sorted(jobs, key=lambda j: j.id or 0)],
        "results": [
            {
                "kind": r.kind,
                "sop_instance_uid": r.sop_instance_uid,
                "version": r.version,
                "job_id": r.job_id,
                "thumbnail": thumbnail_url(r.sop_instance_uid) if r.kind == ResultKind.SC else None,
                "deliveries": by_result.get(r.id or 0, []),
            }
            for r in results
        ],
    }
    if ctx.settings.api.token and ctx.settings.api.show_patient_identifiers:
        data["patient"] = {
            "name": study.patient_name,
            "id": study.patient_id,
            "birth_date": format_date(study.patient_birth_date),
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
