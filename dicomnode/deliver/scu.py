"""Sending DICOM objects: one association per send, every status checked, always released."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomnode.config import Destination, NodeSettings
from dicomnode.deliver.failure import AssociationWatch
from dicomnode.imaging.reasons import reason


class AssociationFailed(ConnectionError):
    """The peer could not be reached, rejected the association or aborted it."""


@dataclass(frozen=True)
class SendOutcome:
    path: Path
    status: int | None  # None: no response (association lost)
    error: str | None = None
    #: When the peer's response arrived (UTC): for a success, when the peer had stored it.
    answered_at: datetime | None = None

    @property
    def ok(self) -> bool:
        # 0xB000, 0xB007, 0xB006 are warnings: the peer stored the object.
        return self.status is not None and (self.status == 0 or self.status >> 12 == 0xB)


def _nodelay(event: Any) -> None:
    with contextlib.suppress(AttributeError, OSError):
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def _quickack(event: Any) -> None:
    """Acknowledge the peer's next segments at once (Linux re-arms delayed ACKs, so after every
    PDU sent). A peer that leaves Nagle's algorithm on (Debian's Orthanc does, unless started
    with TCP_NODELAY=1) sends its C-STORE response in two segments and holds the second until
    the first is acknowledged: with our delayed ACK that is a 40 ms stall per stored object
    (measured: 63–69 → 28 ms for a 2.4 MB SC into Orthanc)."""
    if _TCP_QUICKACK is not None:
        with contextlib.suppress(AttributeError, OSError):
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


def keep_responses(assoc: Any) -> None:
    """Work around a race in pynetdicom 3.0's association reactor (pydicom/pynetdicom#875):
    `send_c_store` pauses the reactor through a flag that can be stale for one loop, and a fast
    peer's response may then be taken by the reactor, logged as "Received unexpected C-STORE
    service message" and dropped; the sender waits dimse_timeout and the object is sent again
    (seen once under load, to a pynetdicom peer). A response the reactor takes is put back for
    the waiting sender, once."""
    serve = assoc._serve_request

    def serve_or_give_back(msg: Any, context_id: int) -> None:
        if not msg.is_valid_request and msg.is_valid_response:
            if not getattr(msg, "_given_back", False):
                msg._given_back = True
                assoc.dimse.msg_queue.put((context_id, msg))
            return
        serve(msg, context_id)

    assoc._serve_request = serve_or_give_back


#: Handlers of every association the node requests.
_SOCKET_HANDLERS: list[evt.EventHandlerType] = [
    (evt.EVT_CONN_OPEN, _nodelay),
    (evt.EVT_PDU_SENT, _quickack),
]


def _ae(calling_ae_title: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout  # else an unreachable host holds the caller for minutes
    return ae


def client_tls_context(node: NodeSettings) -> ssl.SSLContext:
    """TLS for sending: the peer is verified against the node's CA certificate (or the system
    CAs), and the node presents its own certificate when it has one (mutual TLS)."""
    ca = str(node.tls_ca_certificate) if node.tls_ca_certificate else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if node.tls_certificate and node.tls_private_key:
        context.load_cert_chain(str(node.tls_certificate), str(node.tls_private_key))
    return context


def send_files(
    paths: Sequence[Path],
    *,
    destination: Destination,
    calling_ae_title: str,
    timeout: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> list[SendOutcome]:
    """C-STORE `paths` over one association. Raises AssociationFailed if none could be made.

    `timeout` bounds association set-up, each response and an idle connection, so a peer that
    accepts and never answers cannot hold the outbox. `tls` is required when the destination
    is configured with `tls = true`.
    """
    if destination.tls and tls is None:
        raise AssociationFailed(reason("tls_required"))
    datasets = [(p, dcmread(p)) for p in paths]
    ae = _ae(calling_ae_title, timeout)
    for sop_class in sorted({str(ds.SOPClassUID) for _, ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    watch = AssociationWatch(host=destination.host, port=destination.port, timeout=timeout,
                             tls=destination.tls)  # fmt: skip
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        evt_handlers=[*_SOCKET_HANDLERS, *watch.handlers],
        tls_args=(tls, destination.host) if destination.tls and tls is not None else None,
    )
    if not assoc.is_established:
        raise AssociationFailed(watch.reason(assoc))
    keep_responses(assoc)
    outcomes: list[SendOutcome] = []
    try:
        for path, ds in datasets:
            if not assoc.is_established:
                outcomes.append(SendOutcome(path, None, reason("association_lost")))
                continue
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:
                outcomes.append(SendOutcome(path, None, reason("not_sent", error=exc)))
                continue
            code = int(status.Status) if status and "Status" in status else None
            outcomes.append(
                SendOutcome(path, code, None if code is not None else reason("no_response"),
                            answered_at=datetime.now(UTC) if code is not None else None)
            )  # fmt: skip
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()
    return outcomes


def echo(*, host: str, port: int, called_ae_title: str, calling_ae_title: str,
         timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> int:  # fmt: skip
    """C-ECHO (over TLS when `tls` is given); returns the status (0 = success). Raises
    AssociationFailed."""
    ae = _ae(calling_ae_title, timeout)
    ae.add_requested_context(Verification)
    watch = AssociationWatch(host=host, port=port, timeout=timeout, tls=tls is not None)
    assoc = ae.associate(host, port, ae_title=called_ae_title,
                         evt_handlers=[*_SOCKET_HANDLERS, *watch.handlers],
                         tls_args=(tls, host) if tls is not None else None)  # fmt: skip
    if not assoc.is_established:
        raise AssociationFailed(watch.reason(assoc))
    try:
        status = assoc.send_c_echo()
        if not status or "Status" not in status:
            raise AssociationFailed(reason("no_echo_response"))
        return int(status.Status)
    finally:
        if assoc.is_established:
            assoc.release()
