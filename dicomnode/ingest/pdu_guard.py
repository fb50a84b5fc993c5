"""Limits enforced while an association's bytes arrive, before pynetdicom buffers them.

pynetdicom reads a whole PDU into memory (its length comes from the peer), and keeps every
P-DATA-TF fragment of a dataset in memory until the dataset is complete; only then does the
C-STORE handler see it. So `max_dataset_mb` checked in the handler comes too late: a sender can
make the node hold any amount. `PduMeter` follows the stream as it is read (PDU headers, and in
P-DATA-TF PDUs the PDV item headers, PS3.8 9.3.5) and counts the value bytes of the dataset
being received; `metered_recv` wraps the socket's receive with it and, as soon as one PDU or one
dataset passes its limit, sends an A-ABORT and reports the connection closed, so pynetdicom drops
the association and what it buffered. Memory per association stays below the limit plus one PDU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

#: P-DATA-TF: the only PDU that carries datasets.
P_DATA_TF = 0x04
#: Every other PDU (association request, release, abort) is small; an A-ASSOCIATE-RQ with many
#: presentation contexts and user identity is a few tens of KiB.
MAX_CONTROL_PDU = 1024 * 1024
#: Allowance over the PDU size the node announced, for peers that count it loosely.
PDU_SLACK = 64 * 1024

_PDU_HEADER = 6  # type, reserved, length (4)
_PDV_HEADER = 6  # item length (4), presentation context ID, message control header


class PduMeter:
    """Follows one association's PDU stream, fed in arbitrary pieces; sets `exceeded` (a
    PHI-free reason) once a PDU or a dataset is larger than allowed."""

    def __init__(self, *, max_dataset_bytes: int, max_pdu_bytes: int = 0) -> None:
        self.max_dataset = max_dataset_bytes  # 0: no limit
        limits = [n + PDU_SLACK for n in (max_pdu_bytes, max_dataset_bytes) if n]
        self.max_pdata_pdu = min(limits) if limits else 0
        self.exceeded: str | None = None
        self.dataset_bytes = 0  # value bytes of the dataset being received
        self._header = bytearray()
        self._pdu_type = 0
        self._pdu_left = 0
        self._pdv_header = bytearray()
        self._pdv_left = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n and self.exceeded is None:
            if self._pdu_left == 0:
                take = min(_PDU_HEADER - len(self._header), n - i)
                self._header += view[i : i + take]
                i += take
                if len(self._header) == _PDU_HEADER:
                    self._start_pdu(self._header[0], int.from_bytes(self._header[2:6], "big"))
                    self._header.clear()
                continue
            take = min(self._pdu_left, n - i)
            if self._pdu_type == P_DATA_TF:
                self._pdata(view[i : i + take])
            i += take
            self._pdu_left -= take
            if self._pdu_left == 0:  # a PDV never spans PDUs
                self._pdv_header.clear()
                self._pdv_left = 0

    def _start_pdu(self, pdu_type: int, length: int) -> None:
        self._pdu_type, self._pdu_left = pdu_type, length
        if not 0x01 <= pdu_type <= 0x07:  # a TLS ClientHello (0x16), HTTP (0x47 'G'), a scan
            self.exceeded = f"not a DICOM PDU (type 0x{pdu_type:02X})"
        elif pdu_type == P_DATA_TF:
            if self.max_pdata_pdu and length > self.max_pdata_pdu:
                self.exceeded = "P-DATA-TF PDU larger than the node accepts"
        elif length > MAX_CONTROL_PDU:
            self.exceeded = f"PDU of type 0x{pdu_type:02X} is too large"

    def _pdata(self, chunk: memoryview) -> None:
        j, m = 0, len(chunk)
        while j < m and self.exceeded is None:
            if self._pdv_left == 0:
                take = min(_PDV_HEADER - len(self._pdv_header), m - j)
                self._pdv_header += chunk[j : j + take]
                j += take
                if len(self._pdv_header) == _PDV_HEADER:
                    value = max(0, int.from_bytes(self._pdv_header[0:4], "big") - 2)
                    self._start_pdv(control=self._pdv_header[5], value=value)
                    self._pdv_header.clear()
                continue
            take = min(self._pdv_left, m - j)
            j += take
            self._pdv_left -= take

    def _start_pdv(self, *, control: int, value: int) -> None:
        self._pdv_left = value
        if control & 0x01:  # a command fragment: a new message begins
            self.dataset_bytes = 0
            return
        self.dataset_bytes += value  # counted from the item header, before its bytes arrive
        if self.max_dataset and self.dataset_bytes > self.max_dataset:
            self.exceeded = "dataset larger than max_dataset_mb"
        elif control & 0x02:  # the dataset's last fragment
            self.dataset_bytes = 0


#: A-ABORT-RQ (PS3.8 9.3.8): source 0 (service-user, i.e. the node), reason not significant.
A_ABORT = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00])


#: After the A-ABORT, what the peer still sends is read and discarded for at most this long
#: (PS3.8 state Sta13: wait for the peer to close). Closing at once, with its data unread,
#: would reset the connection, and the peer could lose the A-ABORT with its receive buffer.
DRAIN_SECONDS = 5.0


def metered_recv(
    recv: Callable[[int], bytearray],
    *,
    sock: Any,
    meter: PduMeter,
    on_exceeded: Callable[[str], None],
    drain_seconds: float = DRAIN_SECONDS,
) -> Callable[[int], bytearray]:
    """`recv` (the transport's, same contract) with `meter` applied to what it returns.

    Past a limit: the peer gets an A-ABORT, `on_exceeded(reason)` is called once, what the peer
    still sends is discarded until it closes (or `drain_seconds`), and from then on every call
    returns short, which pynetdicom takes as the connection closing (it then shuts the socket
    and frees what it buffered for the association).
    """

    def guarded(nr_bytes: int) -> bytearray:
        if meter.exceeded is not None:
            return bytearray()
        data = recv(nr_bytes)
        meter.feed(data)
        if meter.exceeded is None:
            return data
        del data
        with contextlib.suppress(OSError):  # the peer may be gone: it is dropped either way
            sock.sendall(A_ABORT)
        on_exceeded(meter.exceeded)
        _drain(sock, drain_seconds)
        return bytearray()

    return guarded


def _drain(sock: Any, seconds: float) -> None:
    """Read and discard until the peer closes or `seconds` pass (memory: one 64 KiB buffer)."""
    deadline = time.monotonic() + seconds
    scratch = bytearray(64 * 1024)
    previous = sock.gettimeout()
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv_into(scratch):
                return
    except OSError:  # timed out, reset: done either way
        return
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)
