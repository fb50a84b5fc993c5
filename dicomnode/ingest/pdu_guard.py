"""Limits enforced while an association's bytes arrive, before pynetdicom buffers them.

pynetdicom reads a whole PDU into memory (its length comes from the peer), and keeps every
P-DATA-TF fragment of a dataset in memory until the dataset is complete; only then does the
C-STORE handler see it. So `max_dataset_mb` checked in the handler comes too late: a sender can
make the node hold any amount. `PduMeter` follows the stream as it is read (PDU headers, and in
P-DATA-TF PDUs the PDV item headers, PS3.8 9.3.5) and counts the value bytes of the dataset
being received; `metered_recv` wraps the socket's receive with it and, as soon as one PDU or one
dataset passes its limit, sends an A-ABORT and reports the connection closed, so pynetdicom drops
the association and what it buffered. Memory per association stays below the limit plus one PDU.

Time is metered as well (`Pace`): pynetdicom's timeouts apply per read, so a peer sending one
byte every few seconds never trips them and holds its thread and its slot for as long as it
likes. The whole A-ASSOCIATE-RQ must arrive within `acse_timeout` of the connection being
accepted, every other control PDU within `acse_timeout` of its first byte, and while a P-DATA-TF
PDU or a data set arrives, the bytes of each window of `window_seconds` must average at least
`min_bytes_per_second`. `metered_recv` reads with a socket timeout no longer than the next
deadline, so a peer that stops sending altogether is caught as well.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Pace:
    """How fast a peer must send (0 disables a rule); see the module docstring."""

    acse_timeout: float = 0.0
    min_bytes_per_second: float = 0.0
    window_seconds: float = 10.0


#: No rule on time (the default of `PduMeter`).
NO_PACE = Pace()

#: A-ASSOCIATE-RQ: until one has arrived completely, the peer's AE title is unknown.
A_ASSOCIATE_RQ = 0x01


class PduMeter:
    """Follows one association's PDU stream, fed in arbitrary pieces; sets `exceeded` (a
    PHI-free reason) once a PDU or a dataset is larger than allowed, or arrives slower than
    `pace` allows (checked at each `feed` and at `check`, with times from `clock`)."""

    def __init__(
        self,
        *,
        max_dataset_bytes: int,
        max_pdu_bytes: int = 0,
        pace: Pace = NO_PACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_dataset = max_dataset_bytes  # 0: no limit
        limits = [n + PDU_SLACK for n in (max_pdu_bytes, max_dataset_bytes) if n]
        self.max_pdata_pdu = min(limits) if limits else 0
        self.exceeded: str | None = None
        self.dataset_bytes = 0  # value bytes of the dataset being received
        #: True once a whole A-ASSOCIATE-RQ has arrived.
        self.requested = False
        self._header = bytearray()
        self._pdu_type = 0
        self._pdu_left = 0
        self._pdv_header = bytearray()
        self._pdv_left = 0
        self._pace, self._clock = pace, clock
        self._opened = clock()
        self._pdu_started: float | None = None  # first byte of the PDU in progress
        self._first_byte = 0  # its type, known from its first byte
        self._in_dataset = False  # a data set's fragments have begun, its last not yet come
        self._window: float | None = None  # start of the rate window while data arrives
        self._window_bytes = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        i, n = 0, len(view)
        metered = self._window is not None
        while i < n and self.exceeded is None:
            if self._pdu_left == 0:
                if not self._header and self._pdu_started is None:
                    self._begin(view[i])
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
                self._end_pdu()
        if metered or self._window is not None:  # a window ends or begins: close enough
            self._window_bytes += n
        self.check()

    def _begin(self, pdu_type: int) -> None:
        """The first byte of a PDU has arrived: its clock starts."""
        self._pdu_started, self._first_byte = self._clock(), pdu_type
        if pdu_type == P_DATA_TF and self._window is None:
            self._window, self._window_bytes = self._pdu_started, 0

    def _end_pdu(self) -> None:
        self._pdv_header.clear()
        self._pdv_left = 0
        if self._pdu_type == A_ASSOCIATE_RQ:
            self.requested = True
        self._pdu_started = None
        if not self._in_dataset:
            self._window = None

    def check(self) -> None:
        """Set `exceeded` if a deadline of `pace` has passed (see `time_left`)."""
        if self.exceeded is not None:
            return
        now, pace = self._clock(), self._pace
        if pace.acse_timeout:
            if not self.requested and now - self._opened >= pace.acse_timeout:
                self.exceeded = "A-ASSOCIATE-RQ not received within acse_timeout"
                return
            started = self._pdu_started
            if (started is not None and self._first_byte != P_DATA_TF
                    and now - started >= pace.acse_timeout):  # fmt: skip
                self.exceeded = (f"PDU of type 0x{self._first_byte:02X} not received "
                                 "within acse_timeout")  # fmt: skip
                return
        if pace.min_bytes_per_second and self._window is not None:
            elapsed = now - self._window
            if elapsed >= pace.window_seconds:
                if self._window_bytes < pace.min_bytes_per_second * elapsed:
                    self.exceeded = "data arriving slower than min_receive_bytes_per_second"
                else:  # the next window starts
                    self._window, self._window_bytes = now, 0

    def time_left(self) -> float | None:
        """Seconds until the next deadline of `pace` (None: none applies now)."""
        pace, deadlines = self._pace, []
        if pace.acse_timeout:
            if not self.requested:
                deadlines.append(self._opened + pace.acse_timeout)
            if self._pdu_started is not None and self._first_byte != P_DATA_TF:
                deadlines.append(self._pdu_started + pace.acse_timeout)
        if pace.min_bytes_per_second and self._window is not None:
            deadlines.append(self._window + pace.window_seconds)
        return min(deadlines) - self._clock() if deadlines else None

    def _start_pdu(self, pdu_type: int, length: int) -> None:
        self._pdu_type, self._pdu_left = pdu_type, length
        if length == 0:
            self._end_pdu()
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
            self._in_dataset = False
            return
        self.dataset_bytes += value  # counted from the item header, before its bytes arrive
        self._in_dataset = not control & 0x02
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
    *,
    sock: Any,
    meter: PduMeter,
    on_exceeded: Callable[[str], None],
    drain_seconds: float = DRAIN_SECONDS,
    after_read: Callable[[], None] = lambda: None,
) -> Callable[[int], bytearray]:
    """A receive for pynetdicom's transport (`AssociationSocket.recv`'s contract: block until
    `nr_bytes` are read, return what was read if the peer closes) that reads `sock` into one
    buffer in as few calls as the kernel allows, with `meter` applied to every piece.

    Each read waits no longer than `meter.time_left()`, so a deadline passes even when the peer
    sends nothing. Past a limit: the peer gets an A-ABORT, `on_exceeded(reason)` is called once,
    what the peer still sends is discarded until it closes (or `drain_seconds`), and from then
    on every call returns short, which pynetdicom takes as the connection closing (it then
    shuts the socket and frees what it buffered for the association). `after_read` runs after
    each complete read.
    """

    def guarded(nr_bytes: int) -> bytearray:
        if meter.exceeded is not None:
            return bytearray()
        buffer = bytearray(nr_bytes)
        nr_read = _read_into(sock, memoryview(buffer), meter)
        if meter.exceeded is None:
            if nr_read == nr_bytes:
                after_read()
                return buffer
            return buffer[:nr_read]
        del buffer
        _send_abort(sock, drain_seconds)
        on_exceeded(meter.exceeded)
        _drain(sock, drain_seconds)
        return bytearray()

    return guarded


def _read_into(sock: Any, view: memoryview, meter: PduMeter) -> int:
    """Fill `view` from `sock` until it is full, the peer closes or `meter` is exceeded;
    returns the count read. The socket's own timeout still applies (raised as before)."""
    own = sock.gettimeout()
    nr_read, nr_bytes = 0, len(view)
    try:
        while nr_read < nr_bytes and meter.exceeded is None:
            left = meter.time_left()
            ours = left is not None and (own is None or left < own)
            if left is not None and ours:
                sock.settimeout(max(left, 0.001))
            try:
                count = sock.recv_into(view[nr_read:], nr_bytes - nr_read)
            except TimeoutError:
                if not ours:
                    raise
                meter.check()  # a deadline: exceeded, or the next rate window begins
                continue
            finally:
                if ours:
                    sock.settimeout(own)
            if not count:
                break
            meter.feed(view[nr_read : nr_read + count])
            nr_read += count
    finally:
        view.release()
    return nr_read


def _send_abort(sock: Any, seconds: float) -> None:
    """Send the A-ABORT, waiting at most `seconds` (a peer that reads nothing cannot hold the
    node here); not over a TLS connection whose handshake never completed (nothing can carry
    it, and writing would wait for the peer's handshake)."""
    if isinstance(sock, ssl.SSLSocket) and sock.version() is None:
        return
    previous = sock.gettimeout()
    try:
        sock.settimeout(seconds)
        sock.sendall(A_ABORT)
    except OSError:  # the peer may be gone: it is dropped either way
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


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
