"""Association abuse: floods, idle peers, unknown callers, aborts mid-dataset, deflate bombs."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification

from tests.reliability.helpers import db_rows, figures, rss_kb, small_cr, spool_files
from tests.reliability.malformed import CR_CLASS, deflate_bomb, file_with, split_file
from tests.support.data import new_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import echoscu, storescu, wait_until


def _ae(aet: str = "ABUSER") -> AE:
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(Verification)
    ae.add_requested_context(CR_CLASS, ["1.2.840.10008.1.2.1"])
    ae.add_requested_context(CR_CLASS, ["1.2.840.10008.1.2.1.99"])
    return ae


def test_association_limits_timeouts_and_allow_list(tmp_path, node_factory):
    config = write_node_config(
        tmp_path / "node",
        node={"max_associations": 3, "acse_timeout": 2, "network_timeout": 3,
              "dimse_timeout": 5, "allowed_calling_ae_titles": ["GOOD"]},
    )  # fmt: skip
    port = read_ports(config)[0]
    node = node_factory(config).wait_ready()

    # An unknown calling AE title is rejected; a listed one is accepted.
    assert echoscu(port=port, aet="EVIL", called="DICOMNODE").returncode != 0
    assert echoscu(port=port, aet="GOOD", called="DICOMNODE").returncode == 0

    # More than max_associations at once: the extra one is rejected at once, not queued.
    ae = _ae("GOOD")
    held = [ae.associate("127.0.0.1", port, ae_title="DICOMNODE") for _ in range(3)]
    assert all(a.is_established for a in held)
    t0 = time.monotonic()
    extra = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    reject_seconds = time.monotonic() - t0
    assert extra.is_rejected
    for a in held:
        a.release()
    wait_until(lambda: echoscu(port=port, aet="GOOD", called="DICOMNODE").returncode == 0,
               timeout=30, what="associations accepted again after release")  # fmt: skip

    # An idle TCP connection (no A-ASSOCIATE-RQ) is closed after acse_timeout (ARTIM).
    raw = socket.create_connection(("127.0.0.1", port))
    raw.settimeout(60)
    t0 = time.monotonic()
    assert raw.recv(1024) == b""  # closed by the node
    idle_tcp_seconds = time.monotonic() - t0
    raw.close()

    # An idle association is aborted after network_timeout.
    idle = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert idle.is_established
    t0 = time.monotonic()
    wait_until(lambda: not idle.is_established, timeout=60, what="idle association closed")
    idle_assoc_seconds = time.monotonic() - t0
    assert idle.is_aborted or idle.is_released
    assert node.running
    figures("association abuse", extra_rejected_in_s=round(reject_seconds, 2),
            idle_tcp_closed_after_s=round(idle_tcp_seconds, 1),
            idle_association_closed_after_s=round(idle_assoc_seconds, 1),
            unknown_ae="rejected")  # fmt: skip


def test_abort_in_the_middle_of_a_dataset_leaves_no_job_and_no_file(tmp_path, node_factory):
    config = write_node_config(tmp_path / "node")
    port = read_ports(config)[0]
    data_dir = tmp_path / "node" / "var"
    node = node_factory(config).wait_ready()
    image = small_cr(tmp_path / "a.dcm", size=512)
    ds = pydicom.dcmread(image)
    _, dataset_bytes = split_file(image.read_bytes())

    aborted = 0
    for fraction in (0.1, 0.5, 0.99):
        assoc = _ae().associate("127.0.0.1", port, ae_title="DICOMNODE")
        assert assoc.is_established
        context = next(c for c in assoc.accepted_contexts if c.abstract_syntax == CR_CLASS)
        req = C_STORE()
        req.MessageID = 1
        req.AffectedSOPClassUID = CR_CLASS
        req.AffectedSOPInstanceUID = ds.SOPInstanceUID
        req.Priority = 2
        req.DataSet = io.BytesIO(dataset_bytes)
        msg = C_STORE_RQ()
        msg.primitive_to_message(req)
        pdus = list(msg.encode_msg(context.context_id, 16384))
        for primitive in pdus[: max(2, int(len(pdus) * fraction))]:
            pdu = P_DATA_TF()
            pdu.from_primitive(primitive)
            assoc.dul.socket.send(pdu.encode())
        assoc.abort()
        aborted += 1
    # Give the node every chance to (wrongly) store something, then check nothing is there.
    assert storescu([small_cr(tmp_path / "b.dcm")], port=port).statuses == [0x0000]
    jobs = {uid for (uid,) in db_rows(data_dir, "select sop_instance_uid from job")}
    assert str(ds.SOPInstanceUID) not in jobs and len(jobs) == 1
    spooled = [p.relative_to(data_dir / "spool").parts[0] for p in spool_files(data_dir)]
    assert spooled.count("in") == 1  # the valid image only
    assert "tmp" not in spooled  # no partial file either
    assert node.running
    figures("abort mid-dataset", aborted=aborted, jobs_from_aborted=0, files_from_aborted=0)


def test_deflate_bomb_is_refused_without_exhausting_memory(tmp_path, node_factory, raw_sending):
    config = write_node_config(tmp_path / "node", node={"max_dataset_mb": 64})
    port = read_ports(config)[0]
    node = node_factory(config).wait_ready()
    uid = new_uid("bomb", tmp_path)
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_CLASS
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    bomb: Path = tmp_path / "bomb.dcm"
    bomb.write_bytes(file_with(meta, deflate_bomb(3000)))  # ~3 MB inflating to 3 GB
    before = rss_kb(node.pid)
    assoc = _ae().associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    status = assoc.send_c_store(bomb)
    assoc.release()
    after = rss_kb(node.pid)
    assert int(status.Status) == 0xA700
    assert (after - before) // 1024 < 200
    spool = tmp_path / "node" / "var" / "spool"
    assert not [p for p in spool_files(spool.parent) if p.relative_to(spool).parts[0] == "in"]
    assert node.running
    figures("deflate bomb", compressed_kb=bomb.stat().st_size // 1024, inflates_to_mb=3000,
            status="0xA700", rss_growth_mb=(after - before) // 1024)  # fmt: skip


def test_a_non_dicom_client_frees_its_slot_at_once(tmp_path, node_factory):
    """A TLS client on the plaintext port, or an HTTP health check, is aborted on its first
    bytes, and its slot of max_associations is free again long before acse_timeout."""
    config = write_node_config(tmp_path / "node",
                               node={"max_associations": 1, "acse_timeout": 60})  # fmt: skip
    port = read_ports(config)[0]
    node = node_factory(config).wait_ready()
    probes = {
        "tls": bytes.fromhex("16030102000100") + b"\x03\x03" + bytes(32),  # a ClientHello start
        "http": b"GET /healthz HTTP/1.1\r\nHost: pacs\r\n\r\n",
        "small": bytes([0x0A, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00]),  # unknown PDU type
    }
    freed_after = {}
    for name, probe in probes.items():
        raw = socket.create_connection(("127.0.0.1", port))
        raw.sendall(probe)  # and stays connected, like a client waiting for an answer
        t0 = time.monotonic()
        wait_until(lambda: echoscu(port=port, called="DICOMNODE", timeout=5).returncode == 0,
                   timeout=20, what=f"slot free again after a {name} probe")  # fmt: skip
        freed_after[name] = round(time.monotonic() - t0, 1)
        raw.settimeout(10)
        answer = raw.recv(64)
        assert answer[:1] in (b"\x07", b""), answer  # an A-ABORT, or closed
        raw.close()
    assert node.running
    figures(
        "non-DICOM clients",
        acse_timeout_s=60,
        **{f"{k}_slot_freed_after_s": v for k, v in freed_after.items()},
    )
