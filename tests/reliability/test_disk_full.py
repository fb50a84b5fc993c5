"""Disk full: the data dir on a small tmpfs the test mounts (root). Once the disk is full
(really full: ENOSPC, or below `min_free_mb`) every store is answered 0xA700, nothing partial
stays in the spool, no job is recorded, and the first store after space is freed succeeds."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import httpx
import pytest

from tests.reliability.helpers import (
    SC_CLASS,
    SR_CLASSES,
    db_rows,
    expected_sc_uid,
    figures,
    make_copies,
    small_cr,
    sop_uid,
    spool_files,
    tmpfs,
)
from tests.support.data import new_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import StatusSCP, storescu, wait_until


def _fill(directory: Path, *, leave_bytes: int = 0) -> Path:
    """Write a filler file until the file system is full (then give back `leave_bytes`)."""
    filler = directory / "filler"
    chunk = b"\0" * (1024 * 1024)
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            small = b"\0" * 4096
            try:
                while True:
                    fh.write(small)
            except OSError:
                pass
    if leave_bytes:
        size = filler.stat().st_size
        with filler.open("r+b") as fh:
            fh.truncate(size - leave_bytes)
    return filler


@pytest.mark.parametrize("mode", ["enospc", "min_free_mb"])
def test_full_disk_answers_a700_leaves_nothing_partial_and_recovers(tmp_path, node_factory, mode):
    with tmpfs(tmp_path / "disk", size_mb=48) as disk:
        data_dir = disk / "var"
        config = write_node_config(
            tmp_path / "node",
            node={"data_dir": str(data_dir), "min_free_mb": 8 if mode == "min_free_mb" else 0},
        )
        port = read_ports(config)[0]
        node = node_factory(config).wait_ready()
        try:
            base = small_cr(tmp_path / "base.dcm", size=256)
            first = make_copies(base, tmp_path / "first", 3, study_uid=new_uid("disk", mode, 1))
            assert storescu(first, port=port).statuses == [0x0000] * 3
            wait_until(
                lambda: len(db_rows(data_dir, "select id from job where lower(state) = "
                                    "'classified'")) == 3,
                timeout=120, what="first images classified",
            )  # fmt: skip
            received = data_dir / "spool" / "in"
            before = {p for p in spool_files(data_dir) if p.is_relative_to(received)}
            # Full: to the last block (ENOSPC), or to 4 MiB free with min_free_mb = 8.
            filler = _fill(disk, leave_bytes=4 * 1024 * 1024 if mode == "min_free_mb" else 0)
            refused = make_copies(base, tmp_path / "refused", 12,
                                  study_uid=new_uid("disk", mode, 2))  # fmt: skip
            result = storescu(refused, port=port)
            assert result.statuses == [0xA700] * len(refused), result.statuses
            # Nothing partial: no new spool file, no temporary file, no job row.
            assert {p for p in spool_files(data_dir) if p.is_relative_to(received)} == before
            assert not list((data_dir / "spool" / "tmp").iterdir())
            assert len(db_rows(data_dir, "select id from job")) == 3
            assert node.running
            # Space freed: the very next store succeeds and is processed.
            filler.unlink()
            again = storescu(refused[:1], port=port)
            assert again.statuses == [0x0000]
            wait_until(
                lambda: len(db_rows(data_dir, "select id from job where lower(state) = "
                                    "'classified'")) == 4,
                timeout=120, what="image after recovery classified",
            )  # fmt: skip
            figures(f"disk full ({mode})", refused_with_a700=len(refused), partial_files=0,
                    jobs_from_refused=0, first_store_after_freeing="0x0000")  # fmt: skip
        finally:
            node.stop()


# ------------------------------------------------------- disk full *after* acknowledgement


def _free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _fill_to(directory: Path, filler: Path, *, free: int) -> None:
    """Fill the file system to the last block, then give back exactly `free` bytes (whole
    4 KiB pages: a tmpfs accounts in pages)."""
    assert free % 4096 == 0
    chunk = b"\0" * (1024 * 1024)
    with filler.open("ab", buffering=0) as fh:
        for data in (chunk, chunk[:4096]):
            try:
                while True:
                    fh.write(data)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    size = filler.stat().st_size
    os.truncate(filler, max(0, size // 4096 * 4096 - free))
    assert _free_bytes(directory) - free in (0, 4096), (_free_bytes(directory), free)
    if _free_bytes(directory) > free:  # the filler's last page was partial
        with filler.open("ab", buffering=0) as fh:
            fh.write(b"\0" * 4096)
    assert _free_bytes(directory) == free, (_free_bytes(directory), free)


def _pages(size: int) -> int:
    return -(-size // 4096) * 4096


UID_ROOT = "1.2.826.0.1.3680043.8.498.4711."


@pytest.mark.parametrize("mode", ["enospc", "min_free_mb"])
def test_disk_filling_after_ack_makes_jobs_wait_then_deliver_once(tmp_path, node_factory, mode):
    """An image was acknowledged; then the disk fills before its results (header, SC, SR)
    are written. Nothing is failed or lost: the job, and later a study report, wait, retried
    with backoff and visible in the API and /metrics; once space is freed the SCs and SRs
    reach the destination exactly once, with the derived UIDs.

    The spool is alone on the small file system (the database elsewhere, as with a separate
    spool volume), so what fills is exactly what the test controls."""
    peer = StatusSCP(aet="RESULTS").start()
    min_free_mb = 8 if mode == "min_free_mb" else 0
    reserve = min_free_mb * 1024 * 1024
    with tmpfs(tmp_path / "disk", size_mb=24) as disk:
        data_dir, spool = tmp_path / "var", disk / "spool"
        config = write_node_config(
            tmp_path / "node",
            node={"data_dir": str(data_dir), "spool_dir": str(spool), "uid_root": UID_ROOT,
                  "min_free_mb": min_free_mb, "study_stable_seconds": 5,
                  "resource_retry_initial_seconds": 0.5, "resource_retry_max_seconds": 2},
            # SC and SR only: the counts below are of those (the GSPS is written and queued
            # like the SC; tests/integration/test_gsps_delivery.py delivers it).
            destinations=[{"name": "results", "ae_title": "RESULTS", "host": "127.0.0.1",
                           "port": peer.port, "objects": ["sr", "sc"]}],
        )  # fmt: skip
        port = read_ports(config)[0]
        node = node_factory(config).wait_ready()
        filler = disk / "filler"
        try:
            base = small_cr(tmp_path / "base.dcm", size=256)

            def metric(kind: str) -> float:
                text = httpx.get(f"{node.api_url}/metrics", timeout=10).text
                return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("dicomnode_jobs_deferred_total{")
                           and f'kind="{kind}"' in line)  # fmt: skip

            def job_row(sop: str) -> tuple:
                return db_rows(data_dir, "select id, lower(state), reason, attempts from job "
                               "where sop_instance_uid = ?", sop)[0]  # fmt: skip

            def delivered(count: int) -> bool:
                rows = db_rows(data_dir, "select lower(state) from delivery")
                return len(rows) == count and all(r[0] == "delivered" for r in rows)

            # 1. Room for the received file only (plus at most a page): acknowledged, but its
            #    header/SC cannot be written. The job waits and is retried, never failed.
            (image_b,) = make_copies(base, tmp_path / "b", 1,
                                     study_uid=new_uid("after-ack", mode, "b"))  # fmt: skip
            sop_b = sop_uid(image_b)
            _fill_to(disk, filler, free=reserve + _pages(image_b.stat().st_size + 512))
            assert storescu([image_b], port=port).statuses == [0x0000]
            job_id, _state, reason, attempts = wait_until(
                lambda: (row := job_row(sop_b))[3] >= 3 and row,
                timeout=60, what="image B tried three times while the disk is full",
            )  # fmt: skip
            job = httpx.get(f"{node.api_url}/api/jobs/{job_id}", timeout=10).json()
            assert job["state"] in ("queued", "processing"), job
            if job["state"] == "queued":
                assert job["reason"].startswith("waiting: results cannot be written"), job
                assert job["retry_at"], job
            cause = "min_free_mb" if mode == "min_free_mb" else "ENOSPC"
            assert cause in (job["reason"] or reason), (job, reason)
            assert metric("image") >= 2
            assert not db_rows(data_dir, "select id from job where lower(state) = 'failed'")
            assert peer.attempts == 0
            assert node.running

            # 2. Space freed: the job resumes by itself; its SC and SR are delivered.
            filler.unlink()
            wait_until(lambda: delivered(2), timeout=120, what="SC and SR of study B delivered")
            assert job_row(sop_b)[1] == "classified"

            # 3. A study report: image C is classified (its SC written), then the disk fills
            #    before the study is stable; the SR cannot be written and waits.
            study_c = new_uid("after-ack", mode, "c")
            (image_c,) = make_copies(base, tmp_path / "c", 1, study_uid=study_c)
            assert storescu([image_c], port=port).statuses == [0x0000]
            sop_c = sop_uid(image_c)
            wait_until(lambda: job_row(sop_c)[1] == "classified", timeout=60,
                       what="image C classified")  # fmt: skip
            _fill_to(disk, filler, free=max(0, reserve - 1024 * 1024))
            version = db_rows(data_dir, "select report_version from study where "
                              "study_instance_uid = ?", study_c)  # fmt: skip
            assert version == [(0,)], "study C was reported before the disk was filled (slow?)"
            wait_until(lambda: metric("report") >= 2, timeout=60,
                       what="study C's report deferred twice (retried with backoff)")  # fmt: skip
            assert db_rows(data_dir, "select report_version from study where "
                           "study_instance_uid = ?", study_c) == [(0,)]  # fmt: skip

            # 4. Space freed again: the report is built and delivered; everything exactly once.
            filler.unlink()
            wait_until(lambda: delivered(4), timeout=120, what="every SC and SR delivered")
            expected_sc = {expected_sc_uid(s, uid_root=UID_ROOT) for s in (sop_b, sop_c)}
            by_class: dict[str, list[str]] = {}
            for ds in peer.datasets:
                by_class.setdefault(str(ds.SOPClassUID), []).append(str(ds.SOPInstanceUID))
            assert sorted(by_class.pop(SC_CLASS)) == sorted(expected_sc), by_class
            srs = [uid for cls, uids in by_class.items() if cls in SR_CLASSES for uid in uids]
            assert len(srs) == 2 and len(set(srs)) == 2 and len(by_class) == 1, by_class
            assert peer.attempts == len(peer.stored) == 4  # exactly once, nothing repeated
            assert db_rows(data_dir, "select lower(state) from job") == [("classified",)] * 2
            figures(f"disk full after ack ({mode})", image_attempts_while_full=attempts,
                    image_deferrals=metric("image"), report_deferrals=metric("report"),
                    failed_jobs=0, results_delivered=len(peer.stored),
                    duplicates=peer.attempts - len(set(peer.stored)), lost=0)  # fmt: skip
        finally:
            node.stop()
            peer.stop()
