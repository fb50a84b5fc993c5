"""Hostile input: ≥ 200 generated malformed datasets, hostile identifiers, hostile preambles.

Each malformed case gets a failure status, or is acknowledged and recorded as a `failed` or
`skipped` job with a reason (cases a decoder may still read can also be classified). The node
never crashes, its memory stays bounded, and the next valid image is still classified.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE

from dicomnode.deliver.scu import keep_responses
from tests.reliability.helpers import db_rows, figures, peak_rss_kb, rss_kb, small_cr, spool_files
from tests.reliability.malformed import CR_CLASS, CT_CLASS, SC_CLASS, SYNTAXES, generate
from tests.support.data import new_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import storescu, wait_until

#: Resident memory the node may gain over the whole fuzz run (it loads nothing per case).
RSS_GROWTH_LIMIT_MB = 400


class Sender:
    """One pynetdicom association at a time; reconnects if the node drops it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ae = AE(ae_title="FUZZER")
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 120
        for sop_class in (CR_CLASS, SC_CLASS, CT_CLASS):
            for syntax in SYNTAXES:  # one context each: the node accepts one syntax per context
                self.ae.add_requested_context(sop_class, [syntax])
        self.assoc = None
        self.reconnects = 0

    def send(self, path: Path) -> int | None:
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = self.ae.associate("127.0.0.1", self.port, ae_title="DICOMNODE")
            keep_responses(self.assoc)  # pynetdicom#875: a response lost under load
            self.reconnects += 1
            assert self.assoc.is_established, "the node refused the association"
        try:
            status = self.assoc.send_c_store(path)
        except (ValueError, AttributeError) as exc:
            raise AssertionError(f"{path.name}: could not be sent ({exc})") from exc
        return int(status.Status) if status and "Status" in status else None

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()


def _job_states(data_dir: Path) -> dict[str, tuple[str, str | None]]:
    rows = db_rows(data_dir, "select sop_instance_uid, lower(state), reason from job")
    return {uid: (state, reason) for uid, state, reason in rows}


def test_malformed_datasets_are_refused_or_recorded_and_the_node_survives(
    tmp_path, node_factory, raw_sending
):
    base = small_cr(tmp_path / "base.dcm", size=256)
    cases = generate(base, tmp_path / "cases", seed=7)
    assert len(cases) >= 200
    config = write_node_config(tmp_path / "node", node={"max_dataset_mb": 256})
    port = read_ports(config)[0]
    data_dir = tmp_path / "node" / "var"
    node = node_factory(config).wait_ready()
    sender = Sender(port)
    # Warm up (imports, model, first decode) before taking the memory baseline.
    warm = small_cr(tmp_path / "warm.dcm", size=256)
    assert sender.send(warm) == 0x0000
    wait_until(lambda: _job_states(data_dir).get(_uid(warm), ("",))[0] == "classified",
               timeout=120, what="warm-up image classified")  # fmt: skip
    rss_before = rss_kb(node.pid)

    statuses: dict[str, int | None] = {}
    for case in cases:
        statuses[case.name] = sender.send(case.path)
        assert node.running, f"the node died on case {case.name}\n{node.describe()}"
    sender.close()

    def all_terminal() -> bool:
        states = _job_states(data_dir)
        return all(s not in ("queued", "processing") for s, _ in states.values())

    wait_until(all_terminal, timeout=300, what="every accepted case processed")
    states = _job_states(data_dir)
    problems = []
    outcome: Counter[str] = Counter()
    for case in cases:
        status = statuses[case.name]
        if status is None:
            problems.append(f"{case.name}: no response")
            continue
        if status != 0x0000:
            outcome["refused"] += 1
            if status < 0xA000:
                problems.append(f"{case.name}: 0x{status:04X} is not a failure status")
            continue
        state, reason = states.get(case.sop_instance_uid, ("missing", None))
        outcome[state] += 1
        if state == "missing":
            problems.append(f"{case.name}: acknowledged but no job")
        elif state in ("failed", "skipped") and not reason:
            problems.append(f"{case.name}: {state} without a reason")
        elif case.strict and state not in ("failed", "skipped"):
            problems.append(f"{case.name}: acknowledged and {state}, expected failure")
    # The node is alive, started once, and its memory did not run away.
    assert node.running
    rss_after = rss_kb(node.pid)
    peak = peak_rss_kb(node.pid)
    # The next valid image is still classified.
    after = small_cr(tmp_path / "after.dcm", size=256)
    assert storescu([after], port=port).statuses == [0x0000]
    wait_until(lambda: _job_states(data_dir).get(_uid(after), ("",))[0] == "classified",
               timeout=120, what="valid image after the fuzz run classified")  # fmt: skip
    histogram = Counter("none" if s is None else f"0x{s:04X}" for s in statuses.values())
    figures(
        "malformed datasets",
        cases_tried=len(cases), strict_cases=sum(c.strict for c in cases),
        categories=dict(Counter(c.category for c in cases)), statuses=dict(histogram),
        acknowledged_then=dict(outcome), crashes=0 if node.running else 1,
        associations=sender.reconnects, rss_before_mb=rss_before // 1024,
        rss_after_mb=rss_after // 1024, peak_rss_mb=peak // 1024, problems=len(problems),
    )  # fmt: skip
    assert not problems, "\n".join(problems)
    assert (rss_after - rss_before) // 1024 < RSS_GROWTH_LIMIT_MB


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# ------------------------------------------------------------------------ hostile identifiers

HOSTILE = ["../../x", "../../../../tmp/evil", "/etc/passwd", "..\\..\\x", "1.2.3/../../x",
           "1.2." + "9" * 80, "1.2.3\x00x", "C:\\x", "~/x", "1.2.3.4 ", "1..2.3"]  # fmt: skip


def _tree(root: Path, skip: Path) -> set[Path]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath).is_relative_to(skip):
            continue
        for name in [*dirnames, *filenames]:
            out.add(Path(dirpath) / name)
    return out


def test_hostile_identifiers_never_name_a_path(tmp_path, node_factory, raw_sending):
    config = write_node_config(tmp_path / "node")
    port = read_ports(config)[0]
    data_dir = tmp_path / "node" / "var"
    node = node_factory(config).wait_ready()
    base = small_cr(tmp_path / "base.dcm", size=256)
    cases = tmp_path / "cases"
    cases.mkdir()
    watched = tmp_path.parent
    before = _tree(watched, skip=data_dir)
    sender = Sender(port)
    statuses: Counter[str] = Counter()
    accepted = []
    from tests.reliability.malformed import encode_file, file_with, split_file

    for i, hostile in enumerate(HOSTILE):
        for where in ("sop", "patient", "study", "series"):
            ds = dcmread(base)
            uid = new_uid("hostile", i, where)
            ds.SOPInstanceUID = uid
            ds.file_meta.MediaStorageSOPInstanceUID = uid
            from pydicom import config as pydicom_config

            with pydicom_config.disable_value_validation():
                if where == "sop":
                    ds.SOPInstanceUID = hostile
                elif where == "patient":
                    ds.PatientID = hostile
                    ds.PatientName = hostile
                elif where == "study":
                    ds.StudyInstanceUID = hostile
                else:
                    ds.SeriesInstanceUID = hostile
            _, body = split_file(encode_file(ds))
            meta = ds.file_meta
            meta.MediaStorageSOPInstanceUID = uid
            if where == "sop" and len(hostile) <= 64 and "\\" not in hostile:
                # The command carries it too (a backslash would make it a list: not sendable).
                meta.MediaStorageSOPInstanceUID = hostile
            path = cases / f"{i:02d}-{where}.dcm"
            path.write_bytes(file_with(meta, body))
            status = sender.send(path)
            statuses["none" if status is None else f"0x{status:04X}"] += 1
            if status == 0x0000:
                accepted.append(str(meta.MediaStorageSOPInstanceUID))
    sender.close()
    wait_until(lambda: all(s not in ("queued", "processing")
                           for s, _ in _job_states(data_dir).values()),
               timeout=120, what="accepted hostile cases processed")  # fmt: skip
    after = _tree(watched, skip=data_dir)
    new = {p for p in after - before if not p.is_relative_to(cases)}
    new -= {p for p in new if p.is_relative_to(tmp_path / "node") and p.name == "dicomnode.log"}
    assert not new, f"files written outside the spool: {sorted(new)[:10]}"
    # Inside the data dir: only the database, the salt and hashed spool paths.
    for path in spool_files(data_dir):
        rel = path.relative_to(data_dir / "spool")
        assert rel.parts[0] in ("in", "out", "hdr", "tmp"), rel
        if rel.parts[0] != "tmp":
            hashed = rel.name.split(".")[0]  # <hash>.dcm, <hash>.json, <hash>.regions.json
            assert len(rel.parts) == 4 and len(hashed) == 40 and hashed.isalnum(), rel
    # Besides: the retention lock, the inference-runtime cache (named by the weights' sha256)
    # and HTTP uploads (random ids) - fixed or generated names, never one from a dataset.
    names = {p.name for p in data_dir.iterdir()}
    assert names <= {"dicomnode.db", "dicomnode.db-wal", "dicomnode.db-shm", "log-salt", "spool",
                     "retention.lock", "models", "uploads"}  # fmt: skip
    for cached in (data_dir / "models").rglob("*") if (data_dir / "models").exists() else ():
        assert all(part.isascii() and ".." not in part for part in cached.parts), cached
    # Hostile UIDs are refused; hostile patient identifiers are harmless data.
    jobs = _job_states(data_dir)
    assert all(uid in jobs for uid in accepted)
    for uid in jobs:
        assert all(c.isdigit() or c == "." for c in uid)
    figures("hostile identifiers", cases=len(HOSTILE) * 4, statuses=dict(statuses),
            accepted=len(accepted), files_outside_spool=0)  # fmt: skip
    assert node.running


# ------------------------------------------------------------------------ hostile preambles


@pytest.mark.parametrize(
    "preamble",
    [b"MZ\x90\x00" + b"\x00" * 56 + b"\x80\x00\x00\x00" + b"\x00" * 64,  # PE (DOS header)
     b"\x7fELF\x02\x01\x01" + b"\x00" * 121,  # ELF
     b"#!/bin/sh\nrm -rf /\n".ljust(128, b"\n"),  # shell script
     b"%PDF-1.7\n".ljust(128, b" "),
     bytes(range(128))],
    ids=["pe", "elf", "shell", "pdf", "bytes"],
)  # fmt: skip
def test_executable_preamble_is_never_spooled(tmp_path, preamble):
    """`store_bytes` (the one ingestion path, also used for uploads) writes a zero preamble:
    a DICOM/PE or DICOM/ELF polyglot received is not kept as one in the spool."""
    from dicomnode.ingest.admission import StoreContext, StoreStatus, store_bytes
    from dicomnode.metrics import Metrics
    from dicomnode.store.db import make_engine
    from dicomnode.store.jobs import Jobs
    from dicomnode.store.spool import Spool
    from tests.reliability.malformed import encode_file

    ds = dcmread(small_cr(tmp_path / "base.dcm", size=32))
    data = preamble + encode_file(ds)[128:]
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ctx = StoreContext(spool=Spool(tmp_path / "spool"), jobs=Jobs(engine), metrics=Metrics(),
                       salt="s")  # fmt: skip
    status, _ = store_bytes(ctx, data, calling="TEST")
    assert status == StoreStatus.SUCCESS
    [spooled] = [p for p in (tmp_path / "spool" / "in").rglob("*.dcm")]
    written = spooled.read_bytes()
    assert written[:128] == b"\x00" * 128 and written[128:] == data[128:]
    engine.dispose()
