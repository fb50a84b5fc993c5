"""The C-STORE / C-ECHO SCP: association policy, handlers and DIMSE status codes.

The store handler never runs inference. It spools the bytes as received (durably), commits the
job row, and only then answers 0x0000. Whatever prevents that answers a failure status, so the
sender keeps its copy.
"""

from __future__ import annotations

import copy
import ssl
import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import IntEnum
from io import BytesIO
from typing import Any, cast

import structlog
from pydicom import Dataset, dcmread
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    evt,
    register_uid,
)
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.service_class import (
    NonPatientObjectStorageServiceClass,
    ServiceClass,
    StorageServiceClass,
)
from pynetdicom.sop_class import Verification, uid_to_service_class  # type: ignore[attr-defined]
from sqlalchemy.exc import SQLAlchemyError

from dicomnode.audit import Audit, AuditAction, AuditEventID, AuditOutcome
from dicomnode.config import NodeSettings
from dicomnode.ingest.admission import Admission
from dicomnode.ingest.connections import (
    HandshakeInThread,
    handle_open,
    handle_requested,
    peer_address,
    thread_finished,
)
from dicomnode.ingest.pdu_guard import Pace
from dicomnode.ingest.tls import listeners, server_tls_context
from dicomnode.library_warnings import summarised
from dicomnode.metrics import Metrics
from dicomnode.store.queue import Queue, Received
from dicomnode.store.spool import Spool
from dicomnode.uids import hash_uid

log = structlog.stdlib.get_logger("dicomnode.scp")


class StoreStatus(IntEnum):
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


@summarised("received object")
def handle_store(event: Any, ctx: StoreContext) -> int:
    """EVT_C_STORE handler. Returns the DIMSE status."""
    structlog.contextvars.clear_contextvars()
    request = event.request
    sop_class_uid = str(request.AffectedSOPClassUID or "")
    sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
    calling = event.assoc.requestor.ae_title
    bound = log.bind(calling_ae_title=calling, sop=hash_uid(sop_instance_uid, ctx.salt))
    status, reason, audited = _store(event, ctx, sop_class_uid, sop_instance_uid, calling)
    if not audited:  # decided before the dataset was read
        audit_received(ctx, calling=calling, study_uid=None, status=status, reason=reason,
                       association=event.assoc)  # fmt: skip
    if status == StoreStatus.SUCCESS:
        bound.debug("store accepted", detail=reason)
    else:
        ctx.metrics.rejected.labels(status=f"0x{status:04X}").inc()
        bound.warning("store refused", status=f"0x{status:04X}", reason=reason)
    return int(status)


def _store(
    event: Any, ctx: StoreContext, sop_class_uid: str, sop_instance_uid: str, calling: str
) -> tuple[StoreStatus, str, bool]:
    """(status, reason, audited): what reaches `_audited_store` is audited there."""
    if not looks_like_uid(sop_instance_uid) or not looks_like_uid(sop_class_uid):
        return (StoreStatus.CANNOT_UNDERSTAND,
                "affected SOP class/instance UID is not a valid UID", False)  # fmt: skip
    try:
        ctx.spool.check_space()
    except OSError as exc:
        return StoreStatus.OUT_OF_RESOURCES, f"spool: {type(exc).__name__}", False
    too_big = _oversized(event, ctx.max_dataset_bytes)
    if too_big:
        return too_big[0], too_big[1], False
    try:
        parts = _received_parts(event)
    except _DECODE_ERRORS as exc:
        reason = f"dataset cannot be decoded ({type(exc).__name__})"
        return StoreStatus.CANNOT_UNDERSTAND, reason, False
    if parts is None:  # deflated: inflate through pydicom, the one path for every syntax
        try:
            encoded = event.encoded_dataset()
        except _DECODE_ERRORS as exc:
            reason = f"dataset cannot be decoded ({type(exc).__name__})"
            return StoreStatus.CANNOT_UNDERSTAND, reason, False
        status, reason = store_bytes(
            ctx, encoded, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
            calling=calling, association=event.assoc,
        )  # fmt: skip
        return status, reason, True
    header, chunks, size = parts
    status, reason = _audited_store(
        ctx, header, chunks, size, sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid, calling=calling, association=event.assoc,
    )  # fmt: skip
    return status, reason, True


def _received_parts(event: Any) -> tuple[Dataset, list[Any], int] | None:
    """(header, file chunks, size) of a C-STORE's dataset without copying its bytes.

    The file is written as preamble + file meta + the dataset exactly as received; the header
    (everything before Pixel Data) is parsed from the received buffer. None for a deflated
    transfer syntax (the header is then read from the inflated file).
    """
    file_meta = event.file_meta
    syntax = UID(file_meta.TransferSyntaxUID)
    if syntax.is_deflated:
        return None
    received = event.request.DataSet
    received.seek(0)
    header = read_dataset(
        received, syntax.is_implicit_VR, syntax.is_little_endian, stop_when=_at_pixel_data
    )
    prefix = b"\x00" * 128 + b"DICM" + encode_file_meta(file_meta)
    dataset = received.getbuffer()
    return header, [prefix, dataset], len(prefix) + len(dataset)


def _at_pixel_data(tag: Any, _vr: Any, _length: int) -> bool:
    return bool(tag >= 0x7FE00010)


_DECODE_ERRORS = (
    InvalidDicomError, ValueError, KeyError, TypeError, EOFError, OSError,
    NotImplementedError, IndexError, OverflowError, MemoryError, AttributeError,
    RecursionError, zlib.error,
)  # fmt: skip

_INFLATE_CHUNK = 1024 * 1024  # output per step
_INFLATE_INPUT = 64 * 1024  # compressed input per step


def _oversized(event: Any, limit: int) -> tuple[StoreStatus, str] | None:
    """Refuse a dataset above `limit` bytes, counting a deflated one as it inflates.

    pydicom inflates a deflated dataset in one piece, so a few kilobytes on the wire could
    claim gigabytes of memory; here the stream is inflated in bounded chunks and discarded,
    stopping as soon as the limit is passed.
    """
    if not limit:
        return None
    raw = event.request.DataSet
    if not hasattr(raw, "getbuffer"):
        return None
    with raw.getbuffer() as view:
        if view.nbytes > limit:
            return StoreStatus.OUT_OF_RESOURCES, "dataset larger than max_dataset_mb"
        if event.context.transfer_syntax != DeflatedExplicitVRLittleEndian:
            return None
        try:
            total = _inflated_size(view, limit)
        except zlib.error:
            return StoreStatus.CANNOT_UNDERSTAND, "deflated dataset is not a valid deflate stream"
    if total > limit:
        return StoreStatus.OUT_OF_RESOURCES, "inflated dataset larger than max_dataset_mb"
    return None


@summarised("received object")
def store_bytes(
    ctx: StoreContext,
    encoded: bytes,
    *,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    calling: str,
    association: Hashable | None = None,
) -> tuple[StoreStatus, str]:
    """Spool a DICOM file (preamble + meta + dataset, as received) and commit its job.

    Used by the C-STORE handler and by every other way in (pulling from a PACS, uploads), so
    all of them share one policy. `sop_*` are the identifiers the request claimed (C-STORE);
    when None, the dataset's own are taken. The outcome goes to the audit trail: counted per
    `association` (the pynetdicom Association; written when it closes), or at once.
    """
    if ctx.max_dataset_bytes and len(encoded) > ctx.max_dataset_bytes:
        reason = "dataset larger than max_dataset_mb"
        audit_received(ctx, calling=calling, study_uid=None, status=StoreStatus.OUT_OF_RESOURCES,
                       reason=reason, association=association)  # fmt: skip
        return StoreStatus.OUT_OF_RESOURCES, reason
    try:
        header = dcmread(BytesIO(encoded), stop_before_pixels=True)
    except _DECODE_ERRORS as exc:
        reason = f"dataset cannot be decoded ({type(exc).__name__})"
        audit_received(ctx, calling=calling, study_uid=None, status=StoreStatus.CANNOT_UNDERSTAND,
                       reason=reason, association=association)  # fmt: skip
        return StoreStatus.CANNOT_UNDERSTAND, reason
    return _audited_store(
        ctx, header, _zero_preamble(encoded), len(encoded), sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid, calling=calling, association=association,
    )  # fmt: skip


def _audited_store(
    ctx: StoreContext,
    header: Dataset,
    chunks: list[Any],
    size: int,
    *,
    sop_class_uid: str | None,
    sop_instance_uid: str | None,
    calling: str,
    association: Hashable | None,
) -> tuple[StoreStatus, str]:
    status, reason = _store_parts(
        ctx, header, chunks, size, sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid, calling=calling,
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


def _store_parts(
    ctx: StoreContext,
    header: Dataset,
    chunks: list[Any],
    size: int,
    *,
    sop_class_uid: str | None,
    sop_instance_uid: str | None,
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
        mismatch = _mismatch(header, sop_class_uid, sop_instance_uid)
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


def _zero_preamble(encoded: bytes) -> list[bytes | memoryview]:
    """The file as received, but with a zeroed preamble: the preamble is free for any use
    (PS3.10 7.1), so a DICOM/executable polyglot sent to us is not kept as one."""
    if encoded[128:132] != b"DICM":
        return [encoded]
    return [bytes(128), memoryview(encoded)[128:]]


def _mismatch(header: Dataset, sop_class_uid: str, sop_instance_uid: str) -> str | None:
    if str(header.get("SOPClassUID", "")) != sop_class_uid:
        return "SOP Class UID in the dataset differs from the request"
    if str(header.get("SOPInstanceUID", "")) != sop_instance_uid:
        return "SOP Instance UID in the dataset differs from the request"
    if not looks_like_uid(str(header.get("StudyInstanceUID", ""))):
        return "Study Instance UID missing or invalid"
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
    )


def handle_echo(event: Any) -> int:
    return 0x0000


def handle_close(event: Any, ctx: StoreContext, admission: Admission | None = None) -> None:
    """EVT_CONN_CLOSE: write the association's audit counts (released or aborted alike) and
    free whatever budget the connection held."""
    if admission is not None:
        admission.close(event.assoc)
    if ctx.audit is not None:
        ctx.audit.flush(event.assoc)


def handle_rejected(event: Any, ctx: StoreContext) -> None:
    """EVT_REJECTED: an association refused (calling AE title not allowed, …) is audited."""
    if ctx.audit is None:
        return
    requestor = event.assoc.requestor
    ctx.audit.record(event=AuditEventID.SECURITY_ALERT, action=AuditAction.EXECUTE,
                     actor=str(requestor.ae_title or ""), peer=str(requestor.address or ""),
                     outcome=AuditOutcome.MINOR_FAILURE,
                     detail="association rejected")  # fmt: skip


#: pynetdicom rejects an A-ASSOCIATE-RQ when more than `maximum_associations` connections are
#: open, counting those still negotiating; `Admission` enforces `max_associations` instead.
#: This bound only keeps pynetdicom's check from refusing what the node's policy admits.
_PYNETDICOM_MAX_ASSOCIATIONS = 100_000


#: SOP classes named "... Storage" that are not stored with C-STORE: the DICOMDIR (media
#: only) and Storage Commitment (N-ACTION / N-EVENT-REPORT).
NOT_STORED_WITH_C_STORE = frozenset(
    {
        "1.2.840.10008.1.3.10",  # Media Storage Directory Storage
        "1.2.840.10008.1.20.1",  # Storage Commitment Push Model SOP Class
        "1.2.840.10008.1.20.2",  # Storage Commitment Pull Model SOP Class (retired)
    }
)


def storage_sop_classes() -> list[UID]:
    """Every storage SOP class the SCP accepts: pynetdicom's, then every other SOP class in
    pydicom's UID dictionary whose name says Storage, retired ones included.

    A PACS forwards whole studies, old objects and all (e.g. Ultrasound Image Storage
    (Retired)); one class refused at negotiation fails the whole forward. pynetdicom's list
    omits the retired classes (and has a few newer than pydicom's dictionary: both are kept).
    Left out: the Non-Patient Object Storage classes (PS3.4 GG: hanging protocols, colour
    palettes, implant templates, protocols, inventories): they belong to no patient or study,
    so they are never part of a forwarded study and could not become a job.
    """
    classes = [UID(str(context.abstract_syntax)) for context in AllStoragePresentationContexts]
    known: set[str] = set(classes)
    for uid, (name, kind, *_rest) in UID_dictionary.items():
        if kind != "SOP Class" or "Storage" not in name or uid in known:
            continue
        non_patient = uid_to_service_class(uid) is NonPatientObjectStorageServiceClass
        if uid not in NOT_STORED_WITH_C_STORE and not non_patient:
            classes.append(UID(uid))
            known.add(uid)
    return classes


def _register_storage_class(uid: UID) -> None:
    """Let pynetdicom's C-STORE service handle `uid` (it aborts the association on a C-STORE
    of a class it has no service for, e.g. a retired one). Idempotent."""
    if uid_to_service_class(uid) is not ServiceClass:
        return  # a storage class pynetdicom knows
    register_uid(uid, UID_dictionary[uid][4], StorageServiceClass)


def make_ae(settings: NodeSettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    for sop_class in storage_sop_classes():
        _register_storage_class(sop_class)
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.maximum_associations = _PYNETDICOM_MAX_ASSOCIATIONS  # see `connections.handle_requested`
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    if settings.allowed_calling_ae_titles:
        ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    return ae


def start_scp(settings: NodeSettings, ctx: StoreContext) -> ScpServers:
    """Start the SCP in its own threads on every port it listens on
    (`dicomnode.ingest.tls.listeners`: `node.port`, and `node.tls_port` with TLS when set);
    call .shutdown() to stop them all.

    One AE serves them all: same AE title, presentation contexts, handlers, timeouts and PDU
    limits, and `max_associations` counts the associations of all ports together (pynetdicom
    counts an AE's acceptors across its servers)."""
    ae = make_ae(settings)
    admission = Admission(
        max_associations=settings.max_associations,
        max_negotiating=settings.max_negotiating,
        max_negotiating_per_address=settings.max_negotiating_per_address,
        finished=thread_finished,
    )
    pace = Pace(acse_timeout=settings.acse_timeout,
                min_bytes_per_second=settings.min_receive_bytes_per_second,
                window_seconds=settings.receive_rate_window_seconds)  # fmt: skip
    handlers: list[evt.EventHandlerType] = [
        (evt.EVT_C_STORE, handle_store, [ctx]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_CONN_OPEN, handle_open, [ctx, admission, pace]),
        (evt.EVT_REQUESTED, handle_requested, [ctx, admission]),
        (evt.EVT_CONN_CLOSE, handle_close, [ctx, admission]),
        (evt.EVT_REJECTED, handle_rejected, [ctx]),
    ]
    tls_context = server_tls_context(settings)
    if tls_context is not None:
        tls_context = cast(ssl.SSLContext, HandshakeInThread(tls_context))
    servers = ScpServers()
    try:
        for listener in listeners(settings):
            server = ae.start_server(
                (settings.host, listener.port),
                block=False,
                evt_handlers=handlers,
                ssl_context=tls_context if listener.tls else None,
            )
            assert server is not None  # block=False always returns the server
            server.contexts = _SupportedContexts(server.contexts)
            servers.append(server)
    except BaseException:
        servers.shutdown()  # a port in use: do not leave the other one listening
        raise
    return servers


class ScpServers(list):
    """The running pynetdicom servers of one SCP, first the one on `node.port`; stopped and
    drained together. `server_address` and `ssl_context` are the first server's."""

    @property
    def server_address(self) -> Any:
        return self[0].server_address

    @property
    def active_associations(self) -> list[Any]:
        return [assoc for server in self for assoc in server.active_associations]

    def ports(self) -> dict[str, int]:
        """{"plaintext"|"tls": port} of the servers (bound ports: 0 in the settings is real)."""
        return {("tls" if s.ssl_context else "plaintext"): int(s.server_address[1]) for s in self}

    def shutdown(self) -> None:
        for server in self:
            server.shutdown()


class _SupportedContexts(list):
    """The SCP's supported presentation contexts, cheap to copy for each association.

    pynetdicom deep-copies them when it accepts a connection, so that negotiation cannot change
    the server's own: for 199 storage classes x 33 transfer syntaxes that rebuilds (and
    re-validates with regular expressions) ~7,000 UIDs before the A-ASSOCIATE-AC goes out
    (50-60 ms measured with 171 classes). UIDs are immutable strings: new context objects with
    new lists are enough.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copies = []
        for context in self:
            duplicate = copy.copy(context)
            for name, value in vars(context).items():
                if isinstance(value, list):
                    setattr(duplicate, name, list(value))
            copies.append(duplicate)
        return copies
