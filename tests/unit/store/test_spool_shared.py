"""A spool shared by several nodes: a starting node removes only its own (or stale) partials."""

import os
import time

from dicomnode.store.spool import Spool


def test_start_keeps_another_live_nodes_partial_write(tmp_path):
    root = tmp_path / "shared"
    a = Spool(root, tmp_tag="node-a")
    b = Spool(root, tmp_tag="node-b")
    assert a.tmp_prefix != b.tmp_prefix
    a_partial = a.tmp / f"{a.tmp_prefix}crashed.part"
    b_partial = b.tmp / f"{b.tmp_prefix}in-flight.part"
    old_partial = b.tmp / "in-someone-long-gone.part"
    for path in (a_partial, b_partial, old_partial):
        path.write_bytes(b"partial")
    hour_ago = time.time() - 7200
    os.utime(old_partial, (hour_ago, hour_ago))
    Spool(root, tmp_tag="node-a")  # node A restarts
    assert not a_partial.exists()  # its own crashed write: gone
    assert b_partial.exists()  # node B is writing it right now: kept
    assert not old_partial.exists()  # nobody writes for two hours: stale, gone


def test_a_shared_spool_reads_what_another_node_wrote(tmp_path):
    root = tmp_path / "shared"
    a, b = Spool(root, tmp_tag="node-a"), Spool(root, tmp_tag="node-b")
    rel = a.relative_path("1.2.3.4", kind="in")
    assert rel == b.relative_path("1.2.3.4", kind="in")
    a.write_bytes(rel, b"DICM")
    assert b.path(rel).read_bytes() == b"DICM"
    assert list(a.tmp.iterdir()) == []


def test_an_untagged_spool_cleans_every_leftover(tmp_path):
    spool = Spool(tmp_path / "spool")
    leftover = spool.tmp / "in-abc.part"
    leftover.write_bytes(b"x")
    Spool(tmp_path / "spool")
    assert not leftover.exists()
