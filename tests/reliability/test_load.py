"""Load run (`make reliability`): 1,000 images over parallel associations, end to end.

Reports images acknowledged, processed, delivered, lost (must be 0), the node's peak RSS and
its open file descriptors before and after (a leak would show as growth).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.reliability.helpers import (
    SC_CLASS,
    db_rows,
    figures,
    make_copies,
    open_fds,
    peak_rss_kb,
    small_cr,
    sop_uid,
)
from tests.support.data import new_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import StatusSCP, StoreResult, storescu, wait_until


def run_load(tmp_path, node_factory, *, senders: int, per_sender: int) -> None:
    scp = StatusSCP().start()
    try:
        config = write_node_config(
            tmp_path / "node",
            destinations=[{"name": "peer", "ae_title": scp.aet, "host": "127.0.0.1",
                           "port": scp.port}],
            node={"max_associations": senders + 4},
        )  # fmt: skip
        port = read_ports(config)[0]
        data_dir = tmp_path / "node" / "var"
        node = node_factory(config).wait_ready()
        fds_before = open_fds(node.pid)
        base = small_cr(tmp_path / "base.dcm", size=256)
        batches = [
            make_copies(
                base, tmp_path / "in" / str(s), per_sender, study_uid=new_uid("load", tmp_path, s)
            )
            for s in range(senders)
        ]
        results: list[StoreResult] = []
        threads = [threading.Thread(target=lambda b=b: results.append(
            storescu(b, port=port, timeout=600))) for b in batches]  # fmt: skip
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        received_s = time.monotonic() - started
        acked = {sop_uid(f) for r in results for f, s in zip(r.files, r.statuses, strict=True)
                 if s == 0x0000}  # fmt: skip

        def settled() -> bool:
            pending = db_rows(data_dir, "select count(*) from delivery where lower(state) "
                              "!= 'delivered'")[0][0]  # fmt: skip
            open_jobs = db_rows(data_dir, "select count(*) from job where lower(state) in "
                                "('queued', 'processing')")[0][0]  # fmt: skip
            unreported = db_rows(data_dir, "select count(*) from study where report_version = 0")
            sc = sum(1 for ds in scp.datasets if ds.SOPClassUID == SC_CLASS)
            return open_jobs == pending == unreported[0][0] == 0 and sc >= len(acked)

        wait_until(settled, timeout=3600, what="all images processed and delivered")
        total_s = time.monotonic() - started
        jobs = db_rows(data_dir, "select sop_instance_uid, lower(state) from job")
        in_db = {uid for uid, _ in jobs}
        processed = sum(1 for _, state in jobs if state == "classified")
        delivered_sc = {str(ds.SOPInstanceUID) for ds in scp.datasets
                        if ds.SOPClassUID == SC_CLASS}  # fmt: skip
        peak = peak_rss_kb(node.pid)
        fds_after = open_fds(node.pid)
        lost = len(acked - in_db)
        figures(
            "load run", images=senders * per_sender, associations=senders,
            acknowledged=len(acked), processed=processed, delivered_sc=len(delivered_sc),
            delivered_total=len(set(scp.stored)), lost=lost, peak_rss_mb=peak // 1024,
            open_fds_before=fds_before, open_fds_after=fds_after,
            receive_seconds=round(received_s, 1), end_to_end_seconds=round(total_s, 1),
        )  # fmt: skip
        assert len(acked) == senders * per_sender
        assert lost == 0 and processed == len(acked) and len(delivered_sc) == len(acked)
        assert len(set(scp.stored)) - len(delivered_sc) >= senders  # one SR per study at least
        assert fds_after <= fds_before + 16
    finally:
        scp.stop()


@pytest.mark.slow
def test_load_thousand_images(tmp_path, node_factory):
    run_load(tmp_path, node_factory, senders=4, per_sender=250)
