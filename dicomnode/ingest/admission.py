"""Admission of a received dataset: the one policy every way in calls.

A C-STORE (`dicomnode.ingest.scp`), an instance pulled from Orthanc (`dicomnode.pacs.orthanc`)
and anything else that brings a DICOM file into the node go through `store_bytes` (or, for the
SCP's zero-copy path, `store_parts`): the size limit, sequence nesting depth, UID checks,
dataset/request mismatch, duplicate detection, the durable spool write, the job row, the DIMSE
status and reason, the metrics and the audit of receipt. The spool file is written and the job
committed before SUCCESS is returned; anything that prevents that is a failure status, so the
sender keeps its copy. `oversized` counts the size limit while a deflated dataset inflates;
the SCP applies it to what it received before anything decodes it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import IntEnum
from io import BytesIO
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.tag import Tag
from pydicom.uid import UID
from sqlalchemy.exc import SQLAlchemyError

from dicomnode import MANUFACTURER
from dicomnode.audit import Audit, AuditAction, AuditEventID, AuditOutcome
from dicomnode.imaging.dicom_errors import RECEIVED_ERRORS
from dicomnode.library_warnings import summarised
from dicomnode.metrics import Metrics
from dicomnode.store.queue import Queue, Received
from dicomnode.store.spool import Spool


class StoreStatus(IntEnum):
    """The C-STORE response statuses the node answers, whichever way a dataset came in."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_MISMATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000


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


def looks_like_uid(value: object) -> bool:
    """Tolerant UID check for received identifiers: digits and dots, 1–64 characters."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and all(c.isdigit() or c == "." for c in value)
        and not value.startswith(".")
        and ".." not in value
    )


#: What pydicom raises on a dataset it cannot read.
_DECODE_ERRORS = RECEIVED_ERRORS  # what a received dataset may raise (dicom_errors)


_INFLATE_CHUNK = 1024 * 1024  # output per step
_INFLATE_INPUT = 64 * 1024  # compressed input per step


def oversized(
    received: memoryview, *, deflated: bool, limit: int
) -> tuple[StoreStatus, str] | None:
    """Refuse a dataset above `limit` bytes (0: no limit), counting a deflated one as it inflates.

    pydicom inflates a deflated dataset in one piece, so a few kilobytes on the wire could
    claim gigabytes of memory; here the stream is inflated in bounded chunks and discarded,
    stopping as soon as the limit is passed.
    """
    if not limit:
        return None
    if received.nbytes > limit:
        return StoreStatus.OUT_OF_RESOURCES, "dataset larger than max_dataset_mb"
    if not deflated:
        return None
    try:
        total = _inflated_size(received, limit)
    except zlib.error:
        return StoreStatus.CANNOT_UNDERSTAND, "deflated dataset is not a valid deflate stream"
    if total > limit:
        return StoreStatus.OUT_OF_RESOURCES, "inflated dataset larger than max_dataset_mb"
    return None


def _inflated_size(data: memoryview, limit: int) -> int:
    """Inflate raw deflate `data` piecewise, discarding the output; stops past `limit`."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    for start in range(0, len(data), _INFLATE_INPUT):
        pending: bytes | memoryview = data[start : start + _INFLATE_INPUT]
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, _INFLATE_CHUNK))
            if total > limit:
                return total
            pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    return total


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
    refusal = _before_reading(encoded, ctx.max_dataset_bytes)
    if refusal is None:
        try:
            header = dcmread(BytesIO(encoded), stop_before_pixels=True)
        except _DECODE_ERRORS as exc:
            refusal = (
                StoreStatus.CANNOT_UNDERSTAND,
                f"dataset cannot be decoded ({type(exc).__name__})",
            )
        else:
            status, reason = store_parts(
                ctx, header, _zero_preamble(encoded), len(encoded), sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid, study_instance_uid=study_instance_uid,
                calling=calling, association=association,
            )  # fmt: skip
            uids = (_text(header, "SOPClassUID"), _text(header, "SOPInstanceUID"))
            return Admitted(status, reason, *(u if looks_like_uid(u) else "" for u in uids))
    status, reason = refusal
    audit_received(ctx, calling=calling, study_uid=None, status=status, reason=reason,
                   association=association)  # fmt: skip
    return Admitted(status, reason)


def _before_reading(encoded: bytes | bytearray, limit: int) -> tuple[StoreStatus, str] | None:
    """Refusals decided on the bytes alone: the file's size, then a deflated dataset's
    inflated size."""
    if limit and len(encoded) > limit:
        return StoreStatus.OUT_OF_RESOURCES, "dataset larger than max_dataset_mb"
    return inflation_refusal(encoded, limit)


def inflation_refusal(encoded: bytes | bytearray, limit: int) -> tuple[StoreStatus, str] | None:
    """`oversized` for a file whose dataset is deflated, before pydicom inflates it in one
    piece: a deflate bomb pulled from a PACS or uploaded is refused like one sent by C-STORE
    (HTTP uploads, which are classified without being spooled, call it too).

    Only the file meta is parsed here (pydicom's reader for it is not public API, but has been
    stable since pydicom 1); anything odd is left to `dcmread`, which explains it."""
    if not limit:
        return None
    fp = BytesIO(encoded)
    try:
        read_preamble(fp, False)
        syntax = UID(str(_read_file_meta_info(fp).get("TransferSyntaxUID", "")))
    except _DECODE_ERRORS:
        return None
    if not syntax.is_deflated:
        return None
    with memoryview(encoded) as view:
        return oversized(view[fp.tell() :], deflated=True, limit=limit)


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
    try:
        # pydicom converts values lazily: everything read from the header stays in here.
        if _nesting_depth(header) > MAX_SEQUENCE_DEPTH:
            return StoreStatus.CANNOT_UNDERSTAND, "sequences nested too deeply"
        sop_class_uid = sop_class_uid or str(header.get("SOPClassUID", ""))
        sop_instance_uid = sop_instance_uid or str(header.get("SOPInstanceUID", ""))
        if not looks_like_uid(sop_instance_uid) or not looks_like_uid(sop_class_uid):
            return StoreStatus.CANNOT_UNDERSTAND, "SOP class/instance UID is not a valid UID"
        mismatch = _mismatch(header, sop_class_uid, sop_instance_uid, study_instance_uid)
        if mismatch:
            return StoreStatus.DATASET_MISMATCH, mismatch
        received = _received(header, calling, ctx.spool.relative_path(sop_instance_uid, kind="in"))
    except _DECODE_ERRORS as exc:
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


#: Deeper nesting is refused: real objects (SR content trees included) stay far below, and
#: pydicom reads and writes sequences recursively (stack and time grow with the depth).
MAX_SEQUENCE_DEPTH = 32


def _nesting_depth(ds: Dataset) -> int:
    """How deeply sequences nest in `ds` (0: no sequences); stops counting past the limit.

    Only elements that may be sequences are converted (pydicom converts values lazily, and
    converting all of them cost as much as the rest of a small image's C-STORE)."""
    deepest = 0
    stack = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_SEQUENCE_DEPTH:
            break
        for raw in current.elements():
            if not _may_be_sequence(raw):
                continue
            elem = current[raw.tag]
            if elem.VR == "SQ":
                stack.extend((item, depth + 1) for item in elem.value)
    return deepest


def _may_be_sequence(elem: Any) -> bool:
    """False only for elements pydicom will not read as a sequence when it converts them."""
    vr, undefined = elem.VR, getattr(elem, "length", 0) == 0xFFFFFFFF
    if vr is None:  # implicit VR, not converted yet: the dictionary (or the length) decides
        if undefined or Tag(elem.tag).is_private:
            return True
        try:
            return bool(dictionary_VR(elem.tag) == "SQ")
        except KeyError:
            return True
    return vr in ("SQ", "UN") or undefined


def _zero_preamble(encoded: bytes | bytearray) -> list[bytes | bytearray | memoryview]:
    """The file as received, but with a zeroed preamble: the preamble is free for any use
    (PS3.10 7.1), so a DICOM/executable polyglot sent to us is not kept as one."""
    if encoded[128:132] != b"DICM":
        return [encoded]
    return [bytes(128), memoryview(encoded)[128:]]


def _mismatch(
    header: Dataset, sop_class_uid: str, sop_instance_uid: str, study: str | None
) -> str | None:
    if str(header.get("SOPClassUID", "")) != sop_class_uid:
        return "SOP Class UID in the dataset differs from the request"
    if str(header.get("SOPInstanceUID", "")) != sop_instance_uid:
        return "SOP Instance UID in the dataset differs from the request"
    if not looks_like_uid(str(header.get("StudyInstanceUID", ""))):
        return "Study Instance UID missing or invalid"
    if study is not None and str(header.StudyInstanceUID) != study:
        return "Study Instance UID differs from the request's study"
    series = header.get("SeriesInstanceUID", "")
    if series and not looks_like_uid(str(series)):
        return "Series Instance UID invalid"
    return None


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
