"""Slow peers: connections that trickle or idle cannot lock real senders out.

pynetdicom's timeouts apply per read and it counts a connection against max_associations from
the moment it is accepted. The node times whole PDUs, asks a minimum rate while data arrives,
and gives connections still negotiating their own budget (dicomnode.ingest.slots).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.reliability.helpers import db_rows, figures, small_cr
from tests.reliability.malformed import CR_CLASS
from tests.reliability.test_tls import _tls, make_pki
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import echoscu, storescu, wait_until

#: An A-ASSOCIATE-RQ header claiming 0x000F0000 bytes (under the 1 MiB control-PDU limit).
TRICKLE_HEADER = bytes([0x01, 0x00, 0x00, 0x0F, 0x00, 0x00])


class Trickler(threading.Thread):
    """A connection sending `TRICKLE_HEADER`, then one byte every `interval` seconds, until
    the node closes it or `stop()`; `closed_at` is when the node closed it."""

    def __init__(self, port: int, *, interval: float = 1.0, header: bytes = TRICKLE_HEADER):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.interval, self.header = interval, header
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            self.sock.sendall(self.header)
            # The pace of a slow sender, not a wait for a condition.
            while not self._stop_event.wait(self.interval):
                self.sock.sendall(b"\x00")
                if _closed_by_peer(self.sock):
                    break
        except OSError:
            pass
        self.closed_at = time.monotonic()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
        self.sock.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the peer has closed (EOF or reset); what it sent (an A-ABORT) is discarded."""
    sock.settimeout(0)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(None)


def _idle(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port))


def radiograph() -> Path:
    return Path(str(get_testdata_file("RG3_UNCR.dcm")))


def _dropped_rows(data_dir: Path) -> list[tuple[str, str, str]]:
    return db_rows(data_dir, "select event, peer, detail from audit_event where detail like "
                   "'connection dropped%'")  # fmt: skip


def test_trickling_and_idle_connections_leave_senders_their_slots(tmp_path, node_factory):
    """12 connections trickling an A-ASSOCIATE-RQ and 14 idle ones, more than max_associations
    (10, the default): a real echoscu and storescu succeed while all of them are still open,
    and the tricklers are dropped once acse_timeout has passed since each connected."""
    acse_timeout = 20  # room for a loaded machine: both must finish before it
    config = write_node_config(
        tmp_path / "node",
        node={"acse_timeout": acse_timeout, "max_negotiating": 32,
              "max_negotiating_per_address": 32},
    )  # fmt: skip
    port = read_ports(config)[0]
    data_dir = tmp_path / "node" / "var"
    node = node_factory(config).wait_ready()
    tricklers = [Trickler(port) for _ in range(12)]
    for t in tricklers:
        t.start()
    idle = [_idle(port) for _ in range(14)]
    try:
        wait_until(lambda: echoscu(port=port, called="DICOMNODE", timeout=5).returncode == 0,
                   timeout=acse_timeout / 2,
                   what="C-ECHO beside 26 negotiating connections")  # fmt: skip
        sent = storescu([radiograph()], port=port, timeout=acse_timeout)
        store_done = time.monotonic()
        assert sent.statuses == [0x0000], sent
        # Both got through while every trickler was still connected: no slot was theirs.
        assert all(t.closed_at is None or t.closed_at > store_done for t in tricklers)

        # The tricklers are dropped: their request did not arrive within acse_timeout.
        wait_until(lambda: all(t.closed_at is not None for t in tricklers),
                   timeout=acse_timeout + 30, what="every trickler dropped")  # fmt: skip
        held = [t.closed_at - t.opened_at for t in tricklers if t.closed_at is not None]
        assert min(held) >= acse_timeout - 1  # not before the deadline
    finally:
        for t in tricklers:
            t.stop()
        for s in idle:
            s.close()

    rows = wait_until(lambda: len(_dropped_rows(data_dir)) >= 12 and _dropped_rows(data_dir),
                      timeout=30, what="the drops audited")  # fmt: skip
    assert {event for event, _, _ in rows} == {"SecurityAlert"}
    assert all(peer.startswith("127.0.0.1:") for _, peer, _ in rows)
    assert any("A-ASSOCIATE-RQ not received within acse_timeout" in d for _, _, d in rows)
    log = node.log_path.read_text(errors="replace")
    assert log.count("connection dropped before association") >= 12
    ds = pydicom.dcmread(radiograph(), stop_before_pixels=True)
    assert str(ds.PatientName) not in log and str(ds.SOPInstanceUID) not in log
    assert node.running
    figures("slow peers: negotiating", tricklers=12, idle=14, max_associations=10,
            acse_timeout_s=acse_timeout, echo_and_store="succeeded",
            trickler_held_s=f"{min(held):.1f}-{max(held):.1f}")  # fmt: skip


def test_a_sender_gets_in_past_a_full_negotiating_budget(tmp_path, node_factory):
    """With the default budgets (8 negotiating per address), 20 idle connections from the
    sender's own address cannot keep it out: the oldest are dropped to make room, long before
    acse_timeout (60 s here)."""
    config = write_node_config(tmp_path / "node", node={"acse_timeout": 60})
    port = read_ports(config)[0]
    data_dir = tmp_path / "node" / "var"
    node = node_factory(config).wait_ready()
    idle = [_idle(port) for _ in range(20)]
    try:
        wait_until(lambda: echoscu(port=port, called="DICOMNODE", timeout=5).returncode == 0,
                   timeout=20, what="C-ECHO past 20 idle connections")  # fmt: skip
        assert storescu([radiograph()], port=port).statuses == [0x0000]
        # The first ones were dropped; the 8 newest negotiating places are never exceeded.
        wait_until(lambda: sum(_closed_by_peer(s) for s in idle[:12]) == 12, timeout=20,
                   what="the oldest idle connections closed")  # fmt: skip
    finally:
        for s in idle:
            s.close()
    rows = wait_until(lambda: _dropped_rows(data_dir), timeout=30, what="drops audited")
    assert any("max_negotiating_per_address reached" in d for _, _, d in rows)
    assert node.running


def _throttle(assoc, *, piece: int, pause: float) -> None:
    """Send everything after association in `piece`-byte steps `pause` seconds apart (the pace
    of a slow link, not a wait)."""
    sock = assoc.dul.socket.socket

    def send(bytestream: bytes) -> None:
        for i in range(0, len(bytestream), piece):
            try:
                sock.sendall(bytestream[i : i + piece])
            except OSError:  # closed by the node: pynetdicom then reads its A-ABORT
                return
            time.sleep(pause)

    assoc.dul.socket.send = send


def _sender(aet: str) -> AE:
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(Verification)
    ae.add_requested_context(CR_CLASS, ["1.2.840.10008.1.2.1"])
    return ae


@pytest.mark.timeout(180)
def test_a_data_set_trickling_in_is_aborted_and_a_slow_link_is_not(tmp_path, node_factory):
    """While a data set arrives, the default minimum (4096 bytes/s) averaged over a 2 s window:
    one byte every 0.25 s is aborted within a few windows (network_timeout, per read, would
    never fire); ~10 KiB/s, 2.5 times the minimum, over several windows, is received."""
    config = write_node_config(tmp_path / "node", node={"receive_rate_window_seconds": 2})
    port = read_ports(config)[0]
    data_dir = tmp_path / "node" / "var"
    node = node_factory(config).wait_ready()
    image = small_cr(tmp_path / "slow.dcm", size=160)  # ~51 KB: ~5 s, several windows

    slow = _sender("SLOWLINK").associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert slow.is_established
    _throttle(slow, piece=1024, pause=0.1)  # at most 10 KiB/s
    status = slow.send_c_store(image)
    slow.release()
    assert int(status.Status) == 0x0000

    trickle = _sender("TRICKLER").associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert trickle.is_established
    _throttle(trickle, piece=1, pause=0.25)
    second = small_cr(tmp_path / "t.dcm", size=128)
    sender = threading.Thread(target=trickle.send_c_store, args=(second,), daemon=True)
    sender.start()  # the throttled send blocks pynetdicom's DUL thread: the node's side decides
    rows = wait_until(
        lambda: db_rows(data_dir, "select actor, detail from audit_event where detail like "
                        "'association aborted%'"),
        timeout=60, what="the trickling data set aborted and audited")  # fmt: skip
    assert rows == [("TRICKLER", "association aborted: data arriving slower than "
                     "min_receive_bytes_per_second")]  # fmt: skip
    jobs = db_rows(data_dir, "select sop_instance_uid from job")
    assert len(jobs) == 1  # the slow link's image only
    assert node.running
    figures("slow peers: data rate", min_bytes_per_second=4096, window_s=2,
            slow_link="10 KiB/s received", trickle="4 B/s aborted")  # fmt: skip


def test_silent_and_trickling_connections_to_the_tls_port_leave_tls_senders_in(
    tmp_path, node_factory
):
    """The TLS handshake happens in each connection's own thread: a TCP connection that sends
    nothing (or trickles a ClientHello) to the TLS port does not stop a real TLS sender, and
    the trickler is dropped at acse_timeout like a plaintext one."""
    pki = make_pki(tmp_path / "pki")
    acse_timeout = 10
    config = write_node_config(
        tmp_path / "node",
        node={"tls_certificate": str(pki / "node.crt"), "tls_private_key": str(pki / "node.key"),
              "tls_ca_certificate": str(pki / "ca.crt"), "tls_required": True,
              "acse_timeout": acse_timeout},
    )  # fmt: skip
    port = read_ports(config)[0]
    node = node_factory(config).wait_ready()
    silent = [_idle(port) for _ in range(3)]
    hello = bytes.fromhex("16030100c8010000c40303") + bytes(32)  # a ClientHello's start
    trickler = Trickler(port, header=hello)
    trickler.start()
    try:
        tls = _tls(pki, "client")
        wait_until(lambda: echoscu(port=port, called="DICOMNODE", extra=tls,
                                   timeout=5).returncode == 0,
                   timeout=acse_timeout - 2,
                   what="TLS C-ECHO beside silent connections")  # fmt: skip
        assert storescu([radiograph()], port=port, extra=tls).statuses == [0x0000]
        wait_until(lambda: trickler.closed_at is not None, timeout=acse_timeout + 30,
                   what="the TLS trickler dropped")  # fmt: skip
    finally:
        trickler.stop()
        for s in silent:
            s.close()
    assert node.running


@pytest.mark.slow
def test_the_reported_attack_with_default_settings(tmp_path, node_factory):
    """Issue 17's reproduction, unchanged settings (acse_timeout 30 s, max_associations 10,
    8 negotiating per address): 12 connections trickling a request a byte every 2 s, then 14
    idle ones. Real senders get in at once, again and again, while the attack goes on; every
    trickler is gone by acse_timeout (pushed out earlier by the idle ones, or timed out)."""
    config = write_node_config(tmp_path / "node")
    port = read_ports(config)[0]
    node = node_factory(config).wait_ready()
    tricklers = [Trickler(port, interval=2.0) for _ in range(12)]
    for t in tricklers:
        t.start()
    idle = [_idle(port) for _ in range(14)]
    try:
        for round_ in range(3):
            wait_until(lambda: echoscu(port=port, called="DICOMNODE", timeout=5).returncode == 0,
                       timeout=10, what=f"C-ECHO during the attack (round {round_})")  # fmt: skip
            assert storescu([radiograph()], port=port).statuses == [0x0000]
            idle += [_idle(port) for _ in range(8)]  # the attack keeps connecting
        wait_until(lambda: all(t.closed_at is not None for t in tricklers), timeout=30 + 30,
                   what="every trickler dropped")  # fmt: skip
    finally:
        for t in tricklers:
            t.stop()
        for s in idle:
            s.close()
    assert node.running
