"""Disk full: the data dir on a small tmpfs the test mounts (root). Once the disk is full
(really full: ENOSPC, or below `min_free_mb`) every store is answered 0xA700, nothing partial
stays in the spool, no job is recorded, and the first store after space is freed succeeds."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.reliability.helpers import db_rows, figures, make_copies, small_cr, spool_files, tmpfs
from tests.support.data import new_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import storescu, wait_until


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
