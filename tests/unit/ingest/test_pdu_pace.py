"""dicomnode.ingest.pdu_guard's rules on time (`Pace`): whole control PDUs within acse_timeout, a
minimum average rate while data arrives, whatever the read sizes and however bytes trickle.

A fake clock drives `PduMeter`; one test runs `metered_recv` on a real socket pair.
"""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from dicomnode.ingest.pdu_guard import A_ABORT, Pace, PduMeter, metered_recv
from tests.unit.ingest.test_pdu_guard import message, pdu


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ASSOCIATE_RQ = pdu(0x01, b"a" * 300)


def trickle(meter: PduMeter, clock: Clock, data: bytes, *, rate: float, seed: int) -> float:
    """Feed `data` in random pieces at `rate` bytes per second on average (random gaps);
    returns the time it took, stopping early once the meter is exceeded."""
    rng = random.Random(seed)
    start, i = clock.now, 0
    while i < len(data) and meter.exceeded is None:
        step = rng.choice([1, 2, 6, 100, 1000, 4096])
        piece = data[i : i + step]
        clock.now += len(piece) / rate * rng.uniform(0.5, 1.5)
        meter.feed(piece)
        i += step
    return clock.now - start


@pytest.mark.parametrize("seed", range(10))
def test_an_association_request_trickled_past_acse_timeout_is_refused(seed):
    clock = Clock()
    meter = PduMeter(max_dataset_bytes=0, pace=Pace(acse_timeout=10), clock=clock)
    # 0x000F0000 bytes claimed, a byte every 2 s: never complete in time.
    header = bytes([0x01, 0x00, 0x00, 0x0F, 0x00, 0x00])
    took = trickle(meter, clock, header + bytes(1000), rate=0.5, seed=seed)
    assert meter.exceeded == "A-ASSOCIATE-RQ not received within acse_timeout"
    assert 10 <= took < 10 + 2 * 4096 / 0.5  # at the first piece past the deadline
    assert not meter.requested


@pytest.mark.parametrize("seed", range(10))
def test_a_request_arriving_in_time_passes_however_it_is_cut(seed):
    clock = Clock()
    meter = PduMeter(max_dataset_bytes=0, pace=Pace(acse_timeout=10), clock=clock)
    took = trickle(meter, clock, ASSOCIATE_RQ, rate=len(ASSOCIATE_RQ) / 5, seed=seed)
    assert meter.exceeded is None and meter.requested
    clock.now += 3600  # then silence: no deadline applies between PDUs once associated
    meter.check()
    assert meter.exceeded is None and meter.time_left() is None
    assert took < 10


def test_the_time_left_counts_from_the_accept_and_from_each_control_pdu():
    clock = Clock()
    meter = PduMeter(max_dataset_bytes=0, pace=Pace(acse_timeout=10), clock=clock)
    clock.now += 4
    assert meter.time_left() == pytest.approx(6)  # the request: from the accept
    meter.feed(ASSOCIATE_RQ)
    clock.now += 100
    meter.feed(b"\x05\x00")  # an A-RELEASE-RQ begins
    assert meter.time_left() == pytest.approx(10)
    clock.now += 10
    meter.check()
    assert meter.exceeded == "PDU of type 0x05 not received within acse_timeout"


@pytest.mark.parametrize("seed", range(10))
def test_data_slower_than_the_minimum_is_caught_within_a_window(seed):
    clock = Clock()
    pace = Pace(acse_timeout=10, min_bytes_per_second=4096, window_seconds=5)
    meter = PduMeter(max_dataset_bytes=0, max_pdu_bytes=16384, pace=pace, clock=clock)
    meter.feed(ASSOCIATE_RQ)
    took = trickle(meter, clock, b"".join(message(200_000)), rate=1000, seed=seed)
    assert meter.exceeded == "data arriving slower than min_receive_bytes_per_second"
    assert took < 2 * 5 + 4096 / 1000 * 1.5  # within two windows and one piece


@pytest.mark.parametrize("seed", range(10))
def test_data_above_the_minimum_passes_and_pauses_between_messages_are_free(seed):
    clock = Clock()
    pace = Pace(acse_timeout=10, min_bytes_per_second=4096, window_seconds=5)
    meter = PduMeter(max_dataset_bytes=0, max_pdu_bytes=16384, pace=pace, clock=clock)
    meter.feed(ASSOCIATE_RQ)
    for _ in range(3):  # a slow link at twice the minimum, idle between messages
        trickle(meter, clock, b"".join(message(100_000)), rate=8192 * 1.4, seed=seed)
        assert meter.exceeded is None and meter.time_left() is None
        clock.now += 600
    assert meter.dataset_bytes == 0


def test_a_stalled_pdata_header_is_caught_by_check_alone():
    clock = Clock()
    pace = Pace(min_bytes_per_second=4096, window_seconds=5)
    meter = PduMeter(max_dataset_bytes=0, pace=pace, clock=clock)
    meter.feed(ASSOCIATE_RQ)
    meter.feed(b"\x04")  # a P-DATA-TF begins, then nothing
    assert meter.time_left() == pytest.approx(5)
    clock.now += 5
    meter.check()
    assert meter.exceeded == "data arriving slower than min_receive_bytes_per_second"


def test_a_disabled_pace_sets_no_deadline():
    clock = Clock()
    meter = PduMeter(max_dataset_bytes=0, clock=clock)
    meter.feed(bytes([0x01, 0x00, 0x00, 0x0F, 0x00, 0x00]))
    clock.now += 86400
    meter.check()
    assert meter.exceeded is None and meter.time_left() is None


@pytest.mark.timeout(60)
def test_metered_recv_ends_a_read_blocked_on_a_silent_peer_at_the_deadline():
    """The peer sends a request header claiming 0x000F0000 bytes, then one byte and nothing
    more: the read blocked in the kernel returns at acse_timeout, the peer gets an A-ABORT."""
    ours, peer = socket.socketpair()
    try:
        reasons: list[str] = []
        meter = PduMeter(max_dataset_bytes=0, pace=Pace(acse_timeout=1.0))
        guarded = metered_recv(sock=ours, meter=meter, on_exceeded=reasons.append,
                               drain_seconds=0.2)  # fmt: skip
        peer.sendall(bytes([0x01, 0x00, 0x00, 0x0F, 0x00, 0x00, 0x02]))
        assert guarded(6) == bytes([0x01, 0x00, 0x00, 0x0F, 0x00, 0x00])
        result: list[bytearray] = []
        reader = threading.Thread(target=lambda: result.append(guarded(0x000F0000)))
        started = time.monotonic()
        reader.start()
        reader.join(timeout=30)
        assert not reader.is_alive()
        assert result == [bytearray()]  # short: pynetdicom takes the connection as closed
        assert reasons == ["A-ASSOCIATE-RQ not received within acse_timeout"]
        assert time.monotonic() - started < 25  # ended by the deadline, not by the peer
        peer.settimeout(10)
        assert peer.recv(64) == A_ABORT
        assert ours.gettimeout() is None  # the socket's own timeout is left as it was
    finally:
        ours.close()
        peer.close()
