"""What the audit trail says about HTTP analysis uploads: which studies an upload and each of
its result files hold, and the deletion of an upload by its retention (the node's uploads loop
and the analysis routes both remove expired uploads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dicomnode.audit import Audit, AuditAction, AuditEventID

#: Reasons an archive entry is not read (analysis.py, studyzip.py, and the admission's fixed
#: refusals, ingest/limits.py); any other text is "other".
ENTRY_REASONS = frozenset({
    "not a DICOM file", "not a readable DICOM file", "DICOM file without a Study Instance UID",
    "encrypted entry", "unsupported compression method",
    "dataset larger than max_dataset_mb", "inflated dataset larger than max_dataset_mb",
    "deflated dataset is not a valid deflate stream", "sequences nested too deeply",
    "SOP class/instance UID is not a valid UID", "Study Instance UID missing or invalid",
    "Series Instance UID invalid",
})  # fmt: skip
#: The audit actor of the node's own clean-up of HTTP uploads.
UPLOADS_ACTOR = "dicomnode:uploads"


def upload_expired_recorder(
    audit: Audit | None, *, retention_hours: float
) -> Callable[[str, dict[str, Any] | None], None] | None:
    """`UploadStore.remove_expired`'s `on_removed`: an analysis upload deleted by its
    retention is a deletion of the studies it held (DICOM Study Deleted, D), one event per
    study, or one without a study for an upload that held none (a PNG, a failed analysis)."""
    if audit is None:
        return None

    def record(upload_id: str, result: dict[str, Any] | None) -> None:
        studies: dict[str | None, int] = {None: 0}
        if found := analysis_studies(result or {}):
            studies = dict(found.items())
        audit.save([
            audit.make(event=AuditEventID.STUDY_DELETED, action=AuditAction.DELETE,
                       actor=UPLOADS_ACTOR, study_uid=study_uid,
                       object=f"upload:{upload_id[:8]}", count=images,
                       detail=f"analysis upload deleted after {retention_hours:g} h "
                              "(api.upload_retention_hours)")
            for study_uid, images in studies.items()
        ])  # fmt: skip

    return record


def analysis_studies(result: dict[str, Any]) -> dict[str, int]:
    """Study Instance UID → DICOM files, of a stored analysis result."""
    if result.get("type") == "study":
        return {
            str(s["study_instance_uid"]): int(s.get("images", 0))
            for s in result.get("studies", [])
            if s.get("study_instance_uid")
        }
    study = (result.get("dicom") or {}).get("study_instance_uid")
    return {str(study): 1} if study else {}


def file_studies(result: dict[str, Any], name: str) -> list[str]:
    """The studies whose data a result file of an analysis holds (the report: all of them)."""
    if result.get("type") != "study":
        return list(analysis_studies(result))
    if name in (result.get("files") or {}).values():  # the XLSX report
        return list(analysis_studies(result))
    found = [
        str(s["study_instance_uid"])
        for s in result.get("studies", [])
        if name in (s.get("files") or {}).values()
    ]
    found += [
        str(i["metadata"]["study_instance_uid"])
        for i in result.get("images", [])
        if name in (i.get("files") or {}).values()
        and (i.get("metadata") or {}).get("study_instance_uid")
    ]
    return sorted(set(found))
