"""The one atomic durable write: whole or absent, chunk by chunk, nothing left behind."""

from __future__ import annotations

import pytest

from dicomnode.durable import atomic_write


def test_the_target_appears_whole_from_chunks_and_no_temporary_file_stays(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_write(target) as fh:
        for chunk in (b"DI", memoryview(b"CM"), b"!" * 70_000):
            fh.write(chunk)
        assert not target.exists()  # nothing is visible before the rename
    assert target.read_bytes() == b"DICM" + b"!" * 70_000
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_failed_write_leaves_the_old_content_and_no_temporary_file(tmp_path):
    target = tmp_path / "queue.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("disk went away")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["queue.json"]


def test_the_temporary_file_can_live_in_a_tmp_dir_named_by_its_prefix(tmp_path):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "in").mkdir()
    target = tmp_path / "in" / "x.dcm"
    with atomic_write(target, tmp_dir=tmp_path / "tmp", prefix="in-node_a-") as fh:
        fh.write(b"x")
        [partial] = (tmp_path / "tmp").iterdir()
        assert partial.name.startswith("in-node_a-") and partial.name.endswith(".part")
    assert target.read_bytes() == b"x" and list((tmp_path / "tmp").iterdir()) == []
