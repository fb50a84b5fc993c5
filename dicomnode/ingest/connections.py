"""The SCP's accepted connections: socket tuning, who may hold a place, and what is dropped.

Each accepted socket gets TCP_NODELAY and a receive that reads whole PDUs and meters them
(`dicomnode.ingest.pdu_guard`: sizes, deadlines, data rate). Until its whole A-ASSOCIATE-RQ
has arrived a connection only counts against the negotiating budget of
`dicomnode.ingest.slots`; then it asks for one of `max_associations` slots. Whatever the
node ends is logged, counted and audited without PHI (address:port, AE title, reason). The TLS
handshake runs in each connection's own thread, under the same deadlines.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

import structlog
from pynetdicom import evt

from dicomnode.audit import AuditAction, AuditEventID, AuditOutcome
from dicomnode.ingest.admission import StoreContext, peer_address
from dicomnode.ingest.pdu_guard import NO_PACE, Pace, PduMeter, metered_recv
from dicomnode.ingest.slots import Dropped, Slots

log = structlog.stdlib.get_logger("dicomnode.scp")


#: A-ASSOCIATE-RJ: rejected-transient, service provider (presentation), local limit exceeded.
_LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


def handle_requested(event: Any, ctx: StoreContext, slots: Slots) -> None:
    """EVT_REQUESTED (a whole A-ASSOCIATE-RQ has arrived): the association takes one of
    `max_associations` slots, or is rejected when none is free. pynetdicom's own count (every
    connection, from the moment it is accepted) is set out of the way in `make_ae`.

    pynetdicom lets this handler reject; it then negotiates nothing, and this does what its own
    rejection does (send, EVT_REJECTED, wait for the connection to close)."""
    assoc = event.assoc
    if slots.requested(assoc):
        return
    ctx.metrics.rejected.labels(status="A-ASSOCIATE-RJ").inc()
    log.warning("association rejected: max_associations reached", peer=peer_address(assoc),
                calling_ae_title=str(assoc.requestor.ae_title or ""))  # fmt: skip
    assoc.acse.send_reject(*_LOCAL_LIMIT_EXCEEDED)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def handle_open(
    event: Any,
    ctx: StoreContext | None = None,
    slots: Slots | None = None,
    pace: Pace = NO_PACE,
) -> None:
    """Tune every accepted socket: TCP_NODELAY (without it each image stalls 40–90 ms) and a
    receive that reads whole PDUs at once (pynetdicom reads 4 KiB per Python call); with `ctx`,
    metered so that a PDU or a dataset over the limits, or bytes arriving slower than `pace`,
    abort the association as they arrive. With `slots`, the connection counts as
    negotiating, and those it pushes out of that budget are dropped."""
    assoc = event.assoc
    try:
        transport = assoc.dul.socket
        sock = transport.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ctx is None:
                transport.recv = _bulk_recv(transport)
            else:
                transport.recv = _metered(sock, assoc, ctx, slots=slots, pace=pace)
    except (AttributeError, OSError):
        pass
    if slots is not None and ctx is not None:
        address = event.address[0] if isinstance(event.address, tuple) else str(event.address)
        for dropped in slots.open(assoc, str(address)):
            _drop(dropped, ctx)


def _negotiating(assoc: Any) -> bool:
    """No A-ASSOCIATE-RQ yet: the peer's AE title is unknown."""
    return getattr(assoc.requestor, "primitive", None) is None


def _wake(assoc: Any) -> None:
    """pynetdicom's acceptor waits acse_timeout for an A-ASSOCIATE-RQ, holding its thread:
    wake it now, so that it closes the connection at once."""
    if _negotiating(assoc):
        with contextlib.suppress(AttributeError):
            assoc.dul.to_user_queue.put(None)


def _drop(dropped: Dropped, ctx: StoreContext) -> None:
    """Close a negotiating connection pushed out of its budget (`dicomnode.ingest.slots`)."""
    assoc: Any = dropped.key
    _wake(assoc)
    with contextlib.suppress(AttributeError, OSError):
        # The plain socket's shutdown (an SSLSocket's would drop its state under the reader's
        # feet): a read blocked on it returns at once, and pynetdicom closes the connection.
        socket.socket.shutdown(assoc.dul.socket.socket, socket.SHUT_RDWR)
    _report_drop(ctx, assoc, reason=dropped.reason, negotiating=True)


def _report_drop(
    ctx: StoreContext, assoc: Any, *, reason: str, negotiating: bool, received_bytes: int = 0
) -> None:
    """Log, count and audit a connection the node ended (PHI-free: address, AE title, reason).

    Before its A-ASSOCIATE-RQ, a connection is a security matter (`dropped`); after it, an
    association aborted while receiving."""
    calling = "" if negotiating else str(getattr(assoc.requestor, "ae_title", "") or "")
    peer = peer_address(assoc)
    if negotiating:
        ctx.metrics.rejected.labels(status="dropped").inc()
        log.warning("connection dropped before association", peer=peer, reason=reason)
        event, outcome = AuditEventID.SECURITY_ALERT, AuditOutcome.MINOR_FAILURE
        action, detail = AuditAction.EXECUTE, f"connection dropped: {reason}"
    else:
        ctx.metrics.rejected.labels(status="A-ABORT").inc()
        log.warning("association aborted while receiving", calling_ae_title=calling, peer=peer,
                    reason=reason, received_bytes=received_bytes)  # fmt: skip
        event, outcome = AuditEventID.INSTANCES_TRANSFERRED, AuditOutcome.SERIOUS_FAILURE
        action, detail = AuditAction.CREATE, f"association aborted: {reason}"
    if ctx.audit is not None:
        ctx.audit.record(event=event, action=action, actor=calling, outcome=outcome, peer=peer,
                         detail=detail)  # fmt: skip


def _metered(
    sock: Any, assoc: Any, ctx: StoreContext, *, slots: Slots | None, pace: Pace
) -> Callable[[int], bytearray]:
    """A receive counting each dataset and timing each PDU as it arrives
    (see `dicomnode.ingest.pdu_guard`)."""
    meter = PduMeter(max_dataset_bytes=ctx.max_dataset_bytes,
                     max_pdu_bytes=int(getattr(assoc.ae, "maximum_pdu_size", 0) or 0),
                     pace=pace)  # fmt: skip

    def aborted(reason: str) -> None:
        # Before the A-ASSOCIATE-RQ: a TLS client on the plaintext port, an HTTP probe, a peer
        # trickling its request. Its place is free at once, not after the drain.
        negotiating = _negotiating(assoc)
        _wake(assoc)
        if slots is not None:
            slots.close(assoc)
        _report_drop(ctx, assoc, reason=reason, negotiating=negotiating,
                     received_bytes=meter.dataset_bytes)  # fmt: skip

    return metered_recv(sock=sock, meter=meter, on_exceeded=aborted,
                        after_read=lambda: _quick_ack(sock))  # fmt: skip


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def _quick_ack(sock: Any) -> None:
    """Acknowledge at once (Linux re-arms delayed ACKs): a sender that leaves Nagle's algorithm
    on (dcmtk without TCP_NODELAY=1) otherwise holds its last small segment up to 40 ms for our
    ACK (measured: one small image 112 → 71 ms)."""
    if _TCP_QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


def _bulk_recv(transport: Any) -> Callable[[int], bytearray]:
    """`AssociationSocket.recv` with the same contract (block until `nr_bytes` are read, return
    what was read if the peer closes) but reading into one buffer in as few calls as the
    kernel allows: a 128 KiB PDU is one or two calls instead of 32."""

    def recv(nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        nr_read = 0
        sock = transport.socket
        while nr_read < nr_bytes:
            count = sock.recv_into(view[nr_read:], nr_bytes - nr_read)
            if not count:
                del view
                return buffer[:nr_read]
            nr_read += count
        del view
        _quick_ack(sock)
        return buffer

    return recv


class HandshakeInThread:
    """The SCP's TLS context, with each connection's handshake done on its first read, in its
    association's thread, under the deadlines of `dicomnode.ingest.pdu_guard`.

    pynetdicom wraps each accepted socket in its accept loop, where the default handshake
    blocks with no timeout: one silent TCP connection to the TLS port stopped every TLS
    sender."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context

    def wrap_socket(self, sock: socket.socket, server_side: bool = False, **_: Any) -> Any:
        return self._context.wrap_socket(
            sock, server_side=server_side, do_handshake_on_connect=False
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def thread_finished(assoc: Any) -> bool:
    """An Association (a thread) that has run and ended."""
    return getattr(assoc, "ident", None) is not None and not assoc.is_alive()
