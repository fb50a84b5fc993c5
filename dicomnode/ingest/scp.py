"""The C-STORE / C-ECHO SCP: the AE and its presentation contexts, event handlers, servers.

This is the pynetdicom-facing side of receiving. What a received dataset must satisfy, and how
it is spooled, queued and answered, is `dicomnode.ingest.admission` (the same policy for every
way in); the connections and their budgets are `dicomnode.ingest.connections` and
`dicomnode.ingest.slots`. The store handler never runs inference.
"""

from __future__ import annotations

import copy
import ssl
from typing import Any, cast

import structlog
from pydicom import Dataset
from pydicom._uid_dict import UID_dictionary
from pydicom.filereader import read_dataset
from pydicom.uid import UID
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

from dicomnode.audit import AuditAction, AuditEventID, AuditOutcome
from dicomnode.config import NodeSettings
from dicomnode.ingest.admission import (
    StoreContext,
    StoreStatus,
    audit_received,
    looks_like_uid,
    oversized,
    store_bytes,
    store_parts,
)
from dicomnode.ingest.connections import (
    HandshakeInThread,
    handle_open,
    handle_requested,
    thread_finished,
)
from dicomnode.ingest.limits import DECODE_ERRORS
from dicomnode.ingest.pdu_guard import Pace
from dicomnode.ingest.slots import Slots
from dicomnode.ingest.tls import listeners, server_tls_context
from dicomnode.library_warnings import summarised
from dicomnode.uids import hash_uid

log = structlog.stdlib.get_logger("dicomnode.scp")


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
    """(status, reason, audited): what reaches `store_bytes`/`store_parts` is audited there."""
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
    except DECODE_ERRORS as exc:
        reason = f"dataset cannot be decoded ({type(exc).__name__})"
        return StoreStatus.CANNOT_UNDERSTAND, reason, False
    if parts is None:  # deflated: inflate through pydicom, the one path for every syntax
        try:
            encoded = event.encoded_dataset()
        except DECODE_ERRORS as exc:
            reason = f"dataset cannot be decoded ({type(exc).__name__})"
            return StoreStatus.CANNOT_UNDERSTAND, reason, False
        status, reason = store_bytes(
            ctx, encoded, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
            calling=calling, association=event.assoc,
        )  # fmt: skip
        return status, reason, True
    header, chunks, size = parts
    status, reason = store_parts(
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


def _oversized(event: Any, limit: int) -> tuple[StoreStatus, str] | None:
    """`admission.oversized` on the C-STORE's dataset as received (before it is decoded); a
    deflated one is counted as it inflates by `store_bytes`, as for every other way in."""
    if not limit:
        return None
    raw = event.request.DataSet
    if not hasattr(raw, "getbuffer"):
        return None
    with raw.getbuffer() as view:
        return oversized(view, deflated=False, limit=limit)


def _at_pixel_data(tag: Any, _vr: Any, _length: int) -> bool:
    return bool(tag >= 0x7FE00010)


def handle_echo(event: Any) -> int:
    return 0x0000


def handle_close(event: Any, ctx: StoreContext, slots: Slots | None = None) -> None:
    """EVT_CONN_CLOSE: write the association's audit counts (released or aborted alike) and
    free whatever budget the connection held."""
    if slots is not None:
        slots.close(event.assoc)
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
#: open, counting those still negotiating; `Slots` enforces `max_associations` instead.
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
    slots = Slots(
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
        (evt.EVT_CONN_OPEN, handle_open, [ctx, slots, pace]),
        (evt.EVT_REQUESTED, handle_requested, [ctx, slots]),
        (evt.EVT_CONN_CLOSE, handle_close, [ctx, slots]),
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
