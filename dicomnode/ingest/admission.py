"""Admission of a received dataset: the one policy every way in calls.

A C-STORE (`dicomnode.ingest.scp`), an instance pulled from Orthanc (`dicomnode.pacs.orthanc`)
and anything else that brings a DICOM file into the node go through `store_bytes` (or, for the
SCP's zero-copy path, `store_parts`): the checks of `ingest.limits` (the size limit, sequence
nesting depth, UID checks, dataset/request mismatch), duplicate detection, the durable spool
write, the job row, the DIMSE status and reason, the metrics and the audit of receipt. The
spool file is written and the job committed before SUCCESS is returned; anything that prevents
that is a failure status, so the sender keeps its copy. `oversized` counts the size limit while
a deflated dataset inflates; the SCP applies it to what it received before anything decodes it.
An HTTP upload, analysed where it is and not kept, goes through `check_file`: the same checks,
in the same order, without the spool, the job or the audit of receipt.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import Dataset, dcmread
from sqlalchemy.exc import SQLAlchemyError

from dicomnode import MANUFACTURER
from dicomnode.audit import Audit, AuditAction, AuditEventID, AuditOutcome
from dicomnode.ingest.limits import (
    DECODE_ERRORS,
    MAX_SEQUENCE_DEPTH,
    Refusal,
    StoreStatus,
    before_reading,
    header_refusal,
    inflation_refusal,
    looks_like_uid,
    oversized,
)
from dicomnode.library_warnings import summarised
from dicomnode.metrics import Metrics
from dicomnode.store.queue import Queue, Received
from dicomnode.store.spool import Spool

#: Re-exported: the names every way in imports from here.
__all__ = ["MAX_SEQUENCE_DEPTH", "StoreStatus", "inflation_refusal", "looks_like_uid", "oversized"]

#: Patient/study attributes kept for the worklist (shown only behind the API token).
_STUDY_FIELDS = {
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "patient_birth_date": "PatientBirthDate",
    "accession_number": "AccessionNumber",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "study_description": "StudyDescription",
}


@dataclass(frozen=True)
class StoreContext:
    """Where admitted datasets go and what reports on them: one per node, for every way in."""

    spool: Spool
    jobs: Queue
    metrics: Metrics
    salt: str
    on_received: Callable[[], None] = lambda: None
    audit: Audit | None = None
    #: Largest dataset accepted, after inflating a deflated one (0: no limit).
    max_dataset_bytes: int = 0


@dataclass(frozen=True)
class Admitted:
    """What admitting one file decided, and the instance its header names ("" when unread):
    for a way in whose reply names each instance (STOW-RS)."""

    status: StoreStatus
    reason: str
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


def store_bytes(ctx: StoreContext, encoded: bytes, *, sop_class_uid: str | None = None,
                sop_instance_uid: str | None = None, calling: str,
                association: Hashable | None = None) -> tuple[StoreStatus, str]:  # fmt: skip
    """Spool a DICOM file (preamble + meta + dataset, as received) and commit its job.

    Used by the C-STORE handler and by every other way in (pulling from a PACS, uploads), so
    all of them share one policy. `sop_*` are the identifiers the request claimed (C-STORE);
    when None, the dataset's own are taken. The outcome goes to the audit trail: counted per
    `association` (the pynetdicom Association; written when it closes), or at once.
    """
    admitted = admit_file(ctx, encoded, sop_class_uid=sop_class_uid, calling=calling,
                          sop_instance_uid=sop_instance_uid, association=association)  # fmt: skip
    return admitted.status, admitted.reason


@summarised("received object")
def admit_file(ctx: StoreContext, encoded: bytes | bytearray, *, sop_class_uid: str | None = None,
               sop_instance_uid: str | None = None, study_instance_uid: str | None = None,
               calling: str, association: Hashable | None = None) -> Admitted:  # fmt: skip
    """`store_bytes`, also naming the instance; `study_instance_uid`: the study the request
    names (a STOW-RS URL), which the dataset must belong to (0xA900 if not)."""
    header = _read(encoded, ctx.max_dataset_bytes)
    if isinstance(header, Dataset):
        status, reason = store_parts(
            ctx, header, _zero_preamble(encoded), len(encoded), sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid, study_instance_uid=study_instance_uid,
            calling=calling, association=association,
        )  # fmt: skip
        uids = (_text(header, "SOPClassUID"), _text(header, "SOPInstanceUID"))
        return Admitted(status, reason, *(u if looks_like_uid(u) else "" for u in uids))
    status, reason = header
    audit_received(ctx, calling=calling, study_uid=None, status=status, reason=reason,
                   association=association)  # fmt: skip
    return Admitted(status, reason)


@dataclass(frozen=True)
class Checked:
    """What `check_file` decided: the header (read without pixel data) of an admitted file,
    or None and the refusal's status and reason."""

    header: Dataset | None
    status: StoreStatus = StoreStatus.SUCCESS
    reason: str = ""


def check_file(encoded: bytes | bytearray, *, max_dataset_bytes: int) -> Checked:
    """Admission's checks on a file that is analysed where it is and not kept (an HTTP upload):
    everything `admit_file` refuses before the spool, with the same status and reason."""
    header = _read(encoded, max_dataset_bytes)
    if not isinstance(header, Dataset):
        return Checked(None, *header)
    refusal = header_refusal(header)
    return Checked(header) if refusal is None else Checked(None, *refusal)


def _read(encoded: bytes | bytearray, limit: int) -> Dataset | Refusal:
    """The header of a file, or the refusal of one too large (once inflated) or unreadable."""
    refusal = before_reading(encoded, limit)
    if refusal is not None:
        return refusal
    try:
        return dcmread(BytesIO(encoded), stop_before_pixels=True)
    except DECODE_ERRORS as exc:
        return StoreStatus.CANNOT_UNDERSTAND, f"dataset cannot be decoded ({type(exc).__name__})"


def store_parts(
    ctx: StoreContext,
    header: Dataset,
    chunks: list[Any],
    size: int,
    *,
    sop_class_uid: str | None,
    sop_instance_uid: str | None,
    study_instance_uid: str | None = None,
    calling: str,
    association: Hashable | None,
) -> tuple[StoreStatus, str]:
    """`store_bytes` for a file given as `chunks` (`size` bytes in all) with its header already
    parsed: the SCP's path, which writes the received buffer without copying it."""
    status, reason = _admit(
        ctx, header, chunks, size, sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid, study_instance_uid=study_instance_uid,
        calling=calling,
    )  # fmt: skip
    study = _text(header, "StudyInstanceUID")
    audit_received(ctx, calling=calling, study_uid=study if looks_like_uid(study) else None,
                   status=status, reason=reason, association=association)  # fmt: skip
    return status, reason


def audit_received(
    ctx: StoreContext,
    *,
    calling: str,
    study_uid: str | None,
    status: int,
    reason: str,
    association: Hashable | None,
) -> None:
    if ctx.audit is None:
        return
    ok = status == StoreStatus.SUCCESS
    fields: dict[str, Any] = {
        "event": AuditEventID.INSTANCES_TRANSFERRED,
        "action": AuditAction.CREATE,
        "actor": calling,
        "outcome": AuditOutcome.SUCCESS if ok else AuditOutcome.SERIOUS_FAILURE,
        "study_uid": study_uid,
        "detail": "received" if ok else f"refused 0x{status:04X}: {reason}",
        "peer": peer_address(association),
    }
    if association is None:
        ctx.audit.record(**fields, object=f"study:{ctx.audit.hash(study_uid)}" if study_uid else "")
    else:
        ctx.audit.tally(association, **fields)


def _admit(
    ctx: StoreContext,
    header: Dataset,
    chunks: list[Any],
    size: int,
    *,
    sop_class_uid: str | None,
    sop_instance_uid: str | None,
    study_instance_uid: str | None,
    calling: str,
) -> tuple[StoreStatus, str]:
    """The policy of `store_bytes` for a file given as chunks and its parsed header."""
    refusal = header_refusal(header, sop_class_uid=sop_class_uid,
                             sop_instance_uid=sop_instance_uid,
                             study_instance_uid=study_instance_uid)  # fmt: skip
    if refusal is not None:
        return refusal
    try:
        sop_instance_uid = sop_instance_uid or str(header.SOPInstanceUID)
        received = _received(header, calling, ctx.spool.relative_path(sop_instance_uid, kind="in"))
    except DECODE_ERRORS as exc:
        return StoreStatus.CANNOT_UNDERSTAND, f"dataset cannot be decoded ({type(exc).__name__})"
    try:
        if ctx.jobs.exists(sop_instance_uid):
            ctx.metrics.received.inc()
            return StoreStatus.SUCCESS, "duplicate: already received"
    except SQLAlchemyError:
        return StoreStatus.OUT_OF_RESOURCES, "database unavailable"
    relative = received.spool_path
    try:
        ctx.spool.check_space(size)
        ctx.spool.write_stream(relative, chunks)
    except OSError as exc:
        return StoreStatus.OUT_OF_RESOURCES, f"spool write failed ({type(exc).__name__})"
    try:
        job_id, created = ctx.jobs.enqueue(received)
    except SQLAlchemyError as exc:
        # The file is not acknowledged; unless a concurrent store of the same instance owns it,
        # remove it so nothing unaccounted for stays in the spool.
        try:
            owned = ctx.jobs.exists(sop_instance_uid)
        except SQLAlchemyError:
            owned = False
        if not owned:
            ctx.spool.delete(relative)
        return StoreStatus.OUT_OF_RESOURCES, f"database write failed ({type(exc).__name__})"
    ctx.metrics.received.inc()
    ctx.on_received()
    return StoreStatus.SUCCESS, f"job {job_id}" if created else "duplicate: already received"


def _zero_preamble(encoded: bytes | bytearray) -> list[bytes | bytearray | memoryview]:
    """The file as received, but with a zeroed preamble: the preamble is free for any use
    (PS3.10 7.1), so a DICOM/executable polyglot sent to us is not kept as one."""
    if encoded[128:132] != b"DICM":
        return [encoded]
    return [bytes(128), memoryview(encoded)[128:]]


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    try:
        value = ds.get(keyword, "")
        return str(value if value is not None else "")[:limit]
    except Exception:  # tolerant reading: an odd value is not worth refusing the image for
        return ""


def _received(header: Dataset, calling: str, relative: str) -> Received:
    return Received(
        sop_instance_uid=str(header.SOPInstanceUID),
        sop_class_uid=str(header.SOPClassUID),
        study_instance_uid=str(header.StudyInstanceUID),
        series_instance_uid=_text(header, "SeriesInstanceUID"),
        modality=_text(header, "Modality", 16),
        body_part=_text(header, "BodyPartExamined", 16),
        view_position=_text(header, "ViewPosition", 16),
        calling_ae_title=calling,
        spool_path=relative,
        study={key: _text(header, kw) for key, kw in _STUDY_FIELDS.items()},
        # The node's own objects coming back (routing loop) are not the study's modalities.
        own_output=_text(header, "Manufacturer").casefold() == MANUFACTURER.casefold(),
    )


def peer_address(association: object) -> str:
    """host:port of the sender, when it came over an association (pynetdicom's requestor)."""
    requestor = getattr(association, "requestor", None)
    try:
        address = getattr(requestor, "address", "")
        return f"{address}:{getattr(requestor, 'port', '')}" if address else ""
    except ValueError:  # pynetdicom: no address information set
        return ""
