"""`max_dataset_mb` while receiving: a dataset over the limit aborts its association as it
arrives, so the node's memory grows by far less than the dataset; nothing of it is kept, the
abort is logged (without PHI) and audited, and the next store succeeds. Instances pulled from
Orthanc honour the same limit."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
from pynetdicom import AE

from tests.reliability.helpers import (
    db_rows,
    figures,
    make_copies,
    peak_rss_kb,
    rss_kb,
    small_cr,
    sop_uid,
    spool_files,
)
from tests.reliability.malformed import CR_CLASS
from tests.support.data import new_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import storescu, wait_until

LIMIT_MB = 2
BIG_MB = 96
CANARY = "Canary^Oversize"


def big_cr(path: Path, *, mb: int) -> Path:
    """A CR of about `mb` MiB (zero pixels), with a canary patient name."""
    ds = pydicom.dcmread(small_cr(path.with_suffix(".small.dcm"), size=64))
    side = int((mb * 2**20 / 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes(side * side * 2)
    ds.PatientName = CANARY
    ds.SOPInstanceUID = new_uid("big", path.resolve())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _ae() -> AE:
    ae = AE(ae_title="BIGSENDER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(CR_CLASS, ["1.2.840.10008.1.2.1"])
    return ae


def _reset_peak_rss(pid: int) -> int:
    """Reset the process's peak RSS (VmHWM) to its current RSS; returns that (KiB)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_kb(pid)


def test_a_dataset_over_the_limit_is_aborted_while_it_arrives(tmp_path, node_factory, raw_sending):
    config = write_node_config(tmp_path / "node", node={"max_dataset_mb": LIMIT_MB})
    port, api_port = read_ports(config)
    data_dir = tmp_path / "node" / "var"
    node = node_factory(config).wait_ready()
    assert node.pid is not None
    big = big_cr(tmp_path / "big.dcm", mb=BIG_MB)
    base = small_cr(tmp_path / "base.dcm", size=800)  # 1.2 MiB: under the limit
    # Several datasets under the limit in one association: the count is per dataset.
    under = make_copies(base, tmp_path / "under", 3, study_uid=new_uid("limits", "under"))
    assert storescu(under, port=port).statuses == [0x0000] * 3
    # Let the worker finish with them (inference allocates), so RSS below is the receiver's.
    wait_until(lambda: db_rows(data_dir, "select report_version from study") == [(1,)],
               timeout=120, what="the three images classified and reported")  # fmt: skip

    # 1. pynetdicom, sending the file in chunks: aborted once 2 MiB have arrived.
    baseline = _reset_peak_rss(node.pid)
    assoc = _ae().associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    status = assoc.send_c_store(big)
    # An A-ABORT from the node (not a dropped connection); the SCU records it just after.
    wait_until(lambda: assoc.is_aborted, timeout=30, what="the association aborted by the node")
    assert "Status" not in status  # no C-STORE response: the handler never ran
    growth_pynetdicom_kb = peak_rss_kb(node.pid) - baseline

    # 2. dcmtk storescu (reads the whole file first): the same.
    baseline = _reset_peak_rss(node.pid)
    sent = storescu([big], port=port)
    assert sent.statuses == [None], sent.stderr[-2000:]
    # storescu is still writing when the A-ABORT comes: it sees the connection drop.
    assert "store failed" in sent.stderr.lower(), sent.stderr[-2000:]
    growth_storescu_kb = peak_rss_kb(node.pid) - baseline

    # 3. A P-DATA-TF PDU header claiming 4 GiB: aborted before anything is allocated.
    baseline = _reset_peak_rss(node.pid)
    raw = _ae().associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert raw.is_established
    raw.dul.socket.send(b"\x04\x00\xff\xff\xff\xf0")
    wait_until(lambda: raw.is_aborted, timeout=30, what="the 4 GiB PDU aborted")
    growth_pdu_kb = peak_rss_kb(node.pid) - baseline

    # Memory: far below the dataset (the limit plus a PDU, and the interpreter's noise).
    for growth in (growth_pynetdicom_kb, growth_storescu_kb, growth_pdu_kb):
        assert growth < BIG_MB * 1024 // 4, (growth_pynetdicom_kb, growth_storescu_kb,
                                             growth_pdu_kb)  # fmt: skip

    # Nothing kept: no job, no spooled or partial file from the big dataset.
    big_uid = sop_uid(big)
    assert not db_rows(data_dir, "select id from job where sop_instance_uid = ?", big_uid)
    spooled = [p.relative_to(data_dir / "spool").parts[0] for p in spool_files(data_dir)]
    assert spooled.count("in") == 3 and "tmp" not in spooled

    # Visible: three aborts in the audit trail, the log and /metrics; no PHI in the log.
    def audited() -> list[tuple]:
        rows = db_rows(data_dir, "select actor, detail from audit_event where detail like "
                       "'association aborted%'")  # fmt: skip
        return rows if len(rows) == 3 else []

    rows = wait_until(audited, timeout=30, what="three aborts audited")
    assert {actor for actor, _ in rows} == {"BIGSENDER", "STORESCU"}
    details = sorted(detail for _, detail in rows)
    assert details.count("association aborted: dataset larger than max_dataset_mb") == 2
    assert "association aborted: P-DATA-TF PDU larger than the node accepts" in details
    log = node.log_path.read_text(errors="replace")
    assert log.count("association aborted while receiving") == 3
    assert CANARY not in log and "Canary" not in log and big_uid not in log
    metrics = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=10).text
    assert 'dicomnode_stores_rejected_total{status="A-ABORT"} 3.0' in metrics

    # The next valid store succeeds and is processed.
    (after,) = make_copies(base, tmp_path / "after", 1, study_uid=new_uid("limits", "after"))
    assert storescu([after], port=port).statuses == [0x0000]
    wait_until(lambda: db_rows(data_dir, "select id from job where sop_instance_uid = ? and "
                               "lower(state) = 'classified'", sop_uid(after)),
               timeout=120, what="the next image classified")  # fmt: skip
    assert node.running
    figures("oversize dataset while receiving", limit_mb=LIMIT_MB, dataset_mb=BIG_MB,
            aborted=3, rss_growth_kb={"pynetdicom": growth_pynetdicom_kb,
                                      "storescu": growth_storescu_kb, "4GiB_pdu": growth_pdu_kb},
            jobs_from_aborted=0, files_from_aborted=0, next_store="0x0000")  # fmt: skip


def test_instances_pulled_from_orthanc_honour_max_dataset_mb(tmp_path, orthanc, node_factory):
    study = new_uid("limits", "pull")
    small = make_copies(small_cr(tmp_path / "s.dcm", size=256), tmp_path / "small", 1,
                        study_uid=study)  # fmt: skip
    large = make_copies(small_cr(tmp_path / "l.dcm", size=1200), tmp_path / "large", 1,
                        study_uid=study, prefix="big")  # fmt: skip
    assert large[0].stat().st_size > LIMIT_MB * 2**20 > small[0].stat().st_size
    storescu([*small, *large], port=orthanc.dicom_port, called=orthanc.aet).check()
    config = write_node_config(
        tmp_path / "node", node={"max_dataset_mb": LIMIT_MB},
        extra_sections={"orthanc": {"url": orthanc.http_url, "record_outcome": False}},
    )  # fmt: skip
    data_dir = tmp_path / "node" / "var"
    node = node_factory(config).wait_ready()
    study_id = orthanc.study_of(sop_uid(small[0]))
    queued = httpx.post(f"{node.api_url}/api/orthanc/studies/{study_id}", timeout=30)
    assert queued.status_code == 202 and queued.json()["queued"] == 2, queued.text
    pull_queue = data_dir / "orthanc-pull.json"
    wait_until(lambda: pull_queue.exists() and not pull_queue.read_text().strip("{} \n"),
               timeout=60, what="pull queue drained")  # fmt: skip
    jobs = {uid for (uid,) in db_rows(data_dir, "select sop_instance_uid from job")}
    assert jobs == {sop_uid(small[0])}  # the large one refused for good, not retried
    refused = db_rows(data_dir, "select actor, detail from audit_event where detail = "
                      "'refused 0xA700: dataset larger than max_dataset_mb'")  # fmt: skip
    assert refused == [("ORTHANC-PULL", "refused 0xA700: dataset larger than max_dataset_mb")]
    assert "pulled instance refused" in node.log_path.read_text(errors="replace")
    spooled = [p.relative_to(data_dir / "spool").parts[0] for p in spool_files(data_dir)]
    assert spooled.count("in") == 1
    figures("orthanc pull over max_dataset_mb", limit_mb=LIMIT_MB,
            large_mb=round(large[0].stat().st_size / 2**20, 1), ingested=1,
            refused=1)  # fmt: skip
