"""A sender cannot fill the disk through the log: hostile text gives one summary line per
received object and stage, not one line per odd byte (pydicom warns per escape sequence)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from tests.support.data import new_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import storescu, wait_until
from tests.support.smallcr import db_rows, small_cr

FILES = 12
#: Text elements the node reads on receipt and copies into its results.
HOSTILE_TAGS = ((0x00100010, "PN"), (0x00081030, "LO"), (0x00080090, "PN"), (0x0008103E, "LO"))
ESCAPES = (b"\x1b$Z", b"\x1b(Q", b"\x1b-X", b"\x1b$)Z", b"\x1b%G", b"\x1b(J")
CANARY = "FLOODCANARY"


def _hostile(path: Path, rng: random.Random) -> Path:
    ds = pydicom.dcmread(path)
    ds.SpecificCharacterSet = rng.choice([["", "ISO 2022 IR 87"], "ISO 2022 IR 87",
                                          ["ISO 2022 IR 6", "ISO 2022 IR 149"]])  # fmt: skip
    for tag, vr in HOSTILE_TAGS:
        raw = CANARY.encode() + b"".join(rng.choice(ESCAPES) + b"a" for _ in range(14))
        raw = raw[:64] + (b" " if len(raw[:64]) % 2 else b"")
        ds[tag] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_hostile_text_gives_summary_lines_not_a_flood(tmp_path, node_factory):
    rng = random.Random(2026)
    study = new_uid("log-flood", "study")
    files = [
        _hostile(small_cr(tmp_path / "in" / f"{i}.dcm", study_uid=study), rng) for i in range(FILES)
    ]
    config = write_node_config(tmp_path / "node")
    node = node_factory(config).wait_ready()
    storescu(files, port=read_ports(config)[0]).check()
    db = tmp_path / "node" / "var" / "dicomnode.db"

    def settled() -> bool:
        done = db_rows(db, "SELECT count(*) FROM job WHERE state NOT IN ('queued','processing')")
        return done[0][0] == FILES

    wait_until(settled, timeout=120, what="every job in a terminal state")
    lines = node.log_path.read_text(errors="replace").splitlines()
    library = [
        line
        for line in lines
        if any(f'"logger": "{name}' in line for name in ("py.warnings", "pydicom", "highdicom"))
    ]
    summaries = [json.loads(line) for line in lines if "dicomnode.library_warnings" in line]
    # One summary per received object, per job stage (prepare, complete) and study report.
    assert len(summaries) <= FILES * 3 + 2, len(summaries)
    assert len(library) <= 20, library[:3]  # outside a dataset: the burst of the rate limit
    assert any("escape sequence" in s["event"] for s in summaries), summaries[:2]
    assert len(lines) < FILES * 12, f"{len(lines)} log lines for {FILES} images"
    assert CANARY not in node.log_path.read_text(errors="replace")
