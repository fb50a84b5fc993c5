"""dicomnode.ingest.pdu_guard: the PDU stream is followed whatever the read sizes, each
dataset's value bytes are counted from the PDV item headers, and a limit passed aborts at once."""

from __future__ import annotations

import contextlib
import random
import socket
import threading

import pytest

from dicomnode.ingest.pdu_guard import A_ABORT, MAX_CONTROL_PDU, PduMeter, metered_recv


def pdv(value: bytes, *, command: bool, last: bool, context: int = 1) -> bytes:
    control = (0x01 if command else 0) | (0x02 if last else 0)
    return (len(value) + 2).to_bytes(4, "big") + bytes([context, control]) + value


def pdu(pdu_type: int, body: bytes) -> bytes:
    return bytes([pdu_type, 0]) + len(body).to_bytes(4, "big") + body


def p_data(*items: bytes) -> bytes:
    return pdu(0x04, b"".join(items))


def message(dataset_size: int, *, fragment: int = 16000) -> list[bytes]:
    """A C-STORE-like message: one command PDU, then the dataset in P-DATA-TF PDUs."""
    pdus = [p_data(pdv(b"c" * 100, command=True, last=True))]
    sizes = [fragment] * (dataset_size // fragment)
    if dataset_size % fragment:
        sizes.append(dataset_size % fragment)
    for i, size in enumerate(sizes):
        pdus.append(p_data(pdv(b"d" * size, command=False, last=i == len(sizes) - 1)))
    return pdus


def feed_in_random_pieces(meter: PduMeter, data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        step = rng.choice([1, 2, 5, 6, 7, 100, 4096, 70000])
        meter.feed(data[i : i + step])
        i += step


@pytest.mark.parametrize("seed", range(5))
def test_datasets_within_the_limit_pass_whatever_the_read_sizes(seed):
    meter = PduMeter(max_dataset_bytes=100_000, max_pdu_bytes=16384)
    stream = pdu(0x01, b"a" * 300)  # an association request
    for _ in range(3):  # three messages, each just under the limit: counts are per dataset
        stream += b"".join(message(100_000))
    stream += pdu(0x05, b"\0" * 4)  # a release request
    feed_in_random_pieces(meter, stream, seed)
    assert meter.exceeded is None
    assert meter.dataset_bytes == 0


@pytest.mark.parametrize("seed", range(5))
def test_a_dataset_over_the_limit_is_caught_at_the_fragment_that_passes_it(seed):
    meter = PduMeter(max_dataset_bytes=100_000, max_pdu_bytes=16384)
    pdus = message(1_000_000)
    fed = 0
    for one in pdus:
        feed_in_random_pieces(meter, one, seed)
        fed += 1
        if meter.exceeded:
            break
    assert meter.exceeded == "dataset larger than max_dataset_mb"
    assert fed == 1 + 7  # the command, then 7 fragments of 16000 > 100000 bytes
    assert meter.dataset_bytes > 100_000


def test_oversized_pdus_are_caught_from_their_header():
    meter = PduMeter(max_dataset_bytes=10 * 2**20, max_pdu_bytes=16384)
    meter.feed(b"\x04\x00\xff\xff\xff\xf0")  # a P-DATA-TF claiming 4 GiB
    assert meter.exceeded == "P-DATA-TF PDU larger than the node accepts"
    control = PduMeter(max_dataset_bytes=0)  # no dataset limit: control PDUs still bounded
    control.feed(bytes([0x01, 0]) + (MAX_CONTROL_PDU + 1).to_bytes(4, "big"))
    assert control.exceeded == "PDU of type 0x01 is too large"
    unlimited = PduMeter(max_dataset_bytes=0, max_pdu_bytes=0)
    unlimited.feed(b"".join(message(1_000_000)))
    assert unlimited.exceeded is None


@pytest.mark.timeout(60)
def test_metered_recv_sends_an_a_abort_and_reports_the_connection_closed():
    ours, peer = socket.socketpair()
    sender = threading.Thread(target=_send_all, args=(peer, b"".join(message(300_000))))
    sender.start()
    try:
        reasons: list[str] = []
        meter = PduMeter(max_dataset_bytes=100_000, max_pdu_bytes=16384)
        guarded = metered_recv(sock=ours, meter=meter, on_exceeded=reasons.append,
                               drain_seconds=1)  # fmt: skip
        results = []
        while True:  # the DUL's way: a 6-byte header, then the PDU's length
            header = guarded(6)
            if len(header) < 6:
                break
            body = guarded(int.from_bytes(header[2:6], "big"))
            results.append(len(body))
            if not body:
                break
        assert reasons == ["dataset larger than max_dataset_mb"]
        assert results[-1] == 0  # the PDU that passed the limit is never handed on
        assert sum(results) < 100_000 + 2 * 16384
        assert guarded(6) == bytearray()  # closed from now on
        sender.join(timeout=30)
        assert not sender.is_alive()  # the rest of what it sent was read and discarded
        peer.settimeout(30)
        assert peer.recv(64) == A_ABORT
    finally:
        ours.close()
        sender.join(timeout=30)
        peer.close()


def _send_all(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the reader stops (and closes) past the limit
        sock.sendall(data)
