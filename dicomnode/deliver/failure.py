"""Why an association was not established, in words an administrator can act on.

pynetdicom reports a refused connection, an unreachable host and a peer's A-ABORT alike as
"aborted" (`Association.is_aborted`): the socket error is only logged. This module watches the
association's events (connection opened, ACSE primitives received) and, when the connection
never opened, asks the network once more to name the cause.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT

from dicomnode.imaging.reasons import reason

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


@dataclass
class AssociationWatch:
    """Bind `handlers` to an association request; `reason(assoc)` explains a failure."""

    host: str
    port: int
    timeout: float
    tls: bool = False
    opened: bool = False
    received: list[Any] = field(default_factory=list)

    @property
    def handlers(self) -> list[evt.EventHandlerType]:
        return [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_ACSE_RECV, self._received)]

    def _opened(self, _event: Any) -> None:
        self.opened = True

    def _received(self, event: Any) -> None:
        self.received.append(event.primitive)

    def _settle(self, assoc: Any) -> None:
        """pynetdicom runs the event handlers on its own threads: the connection's opening and
        the peer's A-ASSOCIATE-RJ or A-ABORT can be recorded a moment after `associate` has
        returned (seen under load). Wait for them briefly before naming the cause (only a
        failed echo pays this): up to 2 s once connected or rejected, else 0.5 s."""
        start = time.monotonic()
        while not self.received and time.monotonic() - start < 2.0:
            if not (assoc.is_rejected or self.opened) and time.monotonic() - start > 0.5:
                return  # never connected: nothing will arrive
            time.sleep(0.01)

    def reason(self, assoc: Any) -> str:
        self._settle(assoc)
        if assoc.is_rejected:
            return _rejection(self.received)
        if not self.opened:
            return connect_failure(self.host, self.port, timeout=self.timeout, tls=self.tls)
        if any(isinstance(p, A_ABORT | A_P_ABORT) for p in self.received):
            return reason("aborted_by_peer")
        return reason("no_associate_answer", timeout=f"{self.timeout:g}")


def _rejection(received: list[Any]) -> str:
    """The peer's A-ASSOCIATE-RJ in pynetdicom's words (each one a `reasons.TERMS` entry)."""
    for primitive in received:
        if isinstance(primitive, A_ASSOCIATE) and primitive.result in (0x01, 0x02):
            return reason("rejected_because", result=primitive.result_str,
                          source=primitive.source_str, why=primitive.reason_str)  # fmt: skip
    return reason("rejected")


def connect_failure(host: str, port: int, *, timeout: float, tls: bool = False) -> str:
    """The cause of a failed TCP connection to host:port, found by trying once more."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        return reason("connection_refused", host=host, port=port)
    except socket.gaierror as exc:
        return reason("host_not_found", host=host, error=exc.strerror)
    except TimeoutError:
        return reason("timed_out", host=host, port=port, timeout=f"{timeout:g}")
    except OSError as exc:
        if exc.errno in _UNREACHABLE:
            return reason("unreachable", host=host, port=port, error=exc.strerror)
        error = exc.strerror or type(exc).__name__
        return reason("cannot_connect", host=host, port=port, error=error)
    if tls:
        return reason("tls_handshake", host=host, port=port)
    return reason("connect_flaky", host=host, port=port)
