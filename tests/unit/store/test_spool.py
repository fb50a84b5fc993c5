import os

import pytest

from dicomnode.store.spool import Spool, SpoolFull


def test_write_is_atomic_and_paths_do_not_contain_the_key(tmp_path):
    spool = Spool(tmp_path / "spool")
    hostile = "../../etc/passwd"
    rel = spool.relative_path(hostile, kind="in")
    assert ".." not in rel and "passwd" not in rel
    path = spool.write_bytes(rel, b"DICM-bytes")
    assert path.read_bytes() == b"DICM-bytes"
    assert path.is_relative_to(tmp_path / "spool")
    assert list(spool.tmp.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path):
    spool = Spool(tmp_path / "spool")

    def chunks():
        yield b"partial"
        raise OSError("disk went away")

    rel = spool.relative_path("1.2.3", kind="in")
    with pytest.raises(OSError, match="disk went away"):
        spool.write_stream(rel, chunks())
    assert not spool.exists(rel)
    assert list(spool.tmp.iterdir()) == []


def test_leftover_partial_files_are_removed_at_start(tmp_path):
    spool = Spool(tmp_path / "spool")
    (spool.tmp / "in-x.part").write_bytes(b"half")
    Spool(tmp_path / "spool")
    assert list(spool.tmp.iterdir()) == []


def test_paths_cannot_escape(tmp_path):
    spool = Spool(tmp_path / "spool")
    with pytest.raises(ValueError):
        spool.path("../outside")


def test_min_free_space_is_enforced(tmp_path):
    free_mb = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize // 2**20
    with pytest.raises(SpoolFull):
        Spool(tmp_path / "s", min_free_mb=free_mb + 1024).check_space()
    Spool(tmp_path / "t", min_free_mb=1).check_space()
