"""Crash durability: parallel storescu bursts, `kill -9` at a random moment, restart, repeat.

What must hold (DESIGN: "0x0000 only after durable write + commit"; "nothing acknowledged is
lost"; "every step is idempotent"):

- every SOP Instance UID a sender saw acknowledged with 0x0000 has its job row and its spooled
  file right after the restart (checked every round, before the node processes anything);
- at the end every job is classified, and the results delivered to the destination are
  exactly the node's result set: one SC per classified image, with the UID derived from the
  source (so a retried delivery re-sends the same UID, never a new object), and per study the
  SR versions the node recorded, the last of which references every classified image;
- nothing is delivered that the node has no record of, and no delivery is left pending.

A delivery retried after a crash may hand the same SOP Instance UID to the peer twice (the
peer stores it once: same UID, same content); the number of such re-sends is printed.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

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
)
from tests.support.data import new_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import StatusSCP, StoreResult, storescu, wait_until

UID_ROOT = "1.2.826.0.1.3680043.8.498.4711."


def _burst(files: list[Path], port: int, out: list[StoreResult]) -> None:
    out.append(storescu(files, port=port, timeout=60))


def _count(data_dir: Path, sql: str) -> int:
    return int(db_rows(data_dir, sql)[0][0])


def run_crash_rounds(
    tmp_path: Path, node_factory, *, rounds: int, senders: int, per_sender: int, seed: int
) -> None:
    rng = random.Random(seed)
    base = small_cr(tmp_path / "base.dcm")
    scp = StatusSCP().start()
    try:
        config = write_node_config(
            tmp_path / "node",
            # SC and SR: what the durability checks count (a GSPS is queued as the SC is).
            destinations=[{"name": "peer", "ae_title": scp.aet, "host": "127.0.0.1",
                           "port": scp.port, "objects": ["sr", "sc"]}],
            node={"max_associations": senders + 4, "uid_root": UID_ROOT},
        )  # fmt: skip
        port = read_ports(config)[0]
        data_dir = tmp_path / "node" / "var"
        node = node_factory(config).wait_ready()
        acked: set[str] = set()
        statuses: Counter[str] = Counter()
        kills: Counter[str] = Counter()
        partials = 0
        for r in range(rounds):
            batches = [
                make_copies(base, tmp_path / "in" / f"r{r}s{s}", per_sender,
                            study_uid=new_uid("crash", seed, r, s))
                for s in range(senders)
            ]  # fmt: skip
            before = _count(data_dir, "select count(*) from job")
            results: list[StoreResult] = []
            threads = [threading.Thread(target=_burst, args=(b, port, results)) for b in batches]
            for t in threads:
                t.start()
            # Every third round the kill lands while the backlog is processed and delivered.
            moment = "processing" if r % 3 == 2 else "receiving"
            if moment == "receiving":
                target = before + rng.randint(1, senders * per_sender - 1)
                wait_until(
                    lambda t=target, ths=threads: _count(data_dir, "select count(*) from job") >= t
                    or not any(th.is_alive() for th in ths),
                    timeout=120, what="burst reaching the kill point",
                )  # fmt: skip
            else:
                for t in threads:
                    t.join(timeout=180)
                done = _count(data_dir, "select count(*) from job where lower(state) != 'queued'")
                wait_until(
                    lambda d=done: _count(
                        data_dir, "select count(*) from job where lower(state) != 'queued'") > d
                    or _count(data_dir, "select count(*) from job where lower(state) = 'queued'")
                    == 0,
                    timeout=120, what="the worker making progress",
                )  # fmt: skip
            node.kill9()
            kills[moment] += 1
            for t in threads:
                t.join(timeout=180)
            assert not any(t.is_alive() for t in threads), "a storescu burst did not end"
            for result in results:
                for f, status in zip(result.files, result.statuses, strict=True):
                    statuses["none" if status is None else f"0x{status:04X}"] += 1
                    if status == 0x0000:
                        acked.add(sop_uid(f))
            # Straight after the crash: every acknowledged instance has its row and its file.
            rows = db_rows(data_dir, "select sop_instance_uid, spool_path from job")
            in_db = {uid: path for uid, path in rows}
            lost = acked - in_db.keys()
            assert not lost, f"round {r}: {len(lost)} acknowledged instances lost"
            missing = [u for u in acked if not (data_dir / "spool" / in_db[u]).is_file()]
            assert not missing, f"round {r}: {len(missing)} acknowledged files missing"
            partial = set((data_dir / "spool" / "tmp").iterdir())
            node.start().wait_ready()
            # Partial writes of the crashed process are removed at start-up.
            assert not partial & set((data_dir / "spool" / "tmp").iterdir())
            partials += len(partial)
            for batch in batches:
                for f in batch:
                    f.unlink()

        def settled() -> bool:
            open_jobs = _count(data_dir, "select count(*) from job where lower(state) in "
                               "('queued', 'processing')")  # fmt: skip
            unreported = _count(
                data_dir,
                "select count(*) from study where reported_job_count < (select count(*) "
                "from job where job.study_instance_uid = study.study_instance_uid "
                "and lower(job.state) = 'classified')",
            )
            pending = _count(
                data_dir, "select count(*) from delivery where lower(state) != 'delivered'"
            )
            return open_jobs == 0 and unreported == 0 and pending == 0

        wait_until(settled, timeout=600, what="all jobs processed, reported and delivered")
        node.stop()

        jobs = db_rows(
            data_dir, "select sop_instance_uid, study_instance_uid, lower(state) from job"
        )
        states = Counter(state for _, _, state in jobs)
        assert states == {"classified": len(jobs)}, states
        classified = {uid for uid, _, _ in jobs}
        assert acked <= classified
        results = db_rows(data_dir, "select lower(kind), sop_instance_uid, study_instance_uid, "
                          "version from result")  # fmt: skip
        sc_results = {uid for kind, uid, _, _ in results if kind == "sc"}
        sr_results = {uid for kind, uid, _, _ in results if kind == "sr"}
        # One SC per classified image, with the UID derived from its source.
        assert sc_results == {expected_sc_uid(u, uid_root=UID_ROOT) for u in classified}
        # What the peer got is exactly the node's result set: nothing extra, nothing missing.
        received = Counter(scp.stored)
        by_uid = {str(ds.SOPInstanceUID): ds for ds in scp.datasets}
        got_sc = {u for u, ds in by_uid.items() if ds.SOPClassUID == SC_CLASS}
        got_sr = {u for u, ds in by_uid.items() if ds.SOPClassUID in SR_CLASSES}
        assert got_sc | got_sr == set(by_uid), "the peer received objects of another class"
        assert got_sc == sc_results
        assert got_sr == sr_results
        for uid in got_sc:
            source = by_uid[uid].SourceImageSequence[0].ReferencedSOPInstanceUID
            assert uid == expected_sc_uid(source, uid_root=UID_ROOT)
        # The latest SR of every study references every classified image of that study.
        latest: dict[str, tuple[int, str]] = {}
        for kind, uid, study, version in results:
            if kind == "sr" and version > latest.get(study, (0, ""))[0]:
                latest[study] = (version, uid)
        studies = {study for _, study, _ in jobs}
        assert set(latest) == studies
        for study, (_, uid) in latest.items():
            evidence = {
                ref.ReferencedSOPInstanceUID
                for series in by_uid[uid]
                .CurrentRequestedProcedureEvidenceSequence[0]
                .ReferencedSeriesSequence
                for ref in series.ReferencedSOPSequence
            }
            assert evidence == {u for u, s, _ in jobs if s == study}
        resent = sum(n - 1 for n in received.values())
        figures(
            "crash durability",
            rounds=rounds, kills=dict(kills), images_sent=rounds * senders * per_sender,
            store_statuses=dict(statuses), acknowledged=len(acked), lost=0,
            stored_without_ack=len(classified - acked), partial_files_cleaned=partials,
            classified=len(classified),
            sc_delivered=len(got_sc), sr_delivered=len(got_sr), resent_same_uid=resent,
        )  # fmt: skip
    finally:
        scp.stop()


def test_kill_9_during_parallel_bursts_loses_nothing_acknowledged(tmp_path, node_factory):
    run_crash_rounds(tmp_path, node_factory, rounds=5, senders=3, per_sender=24, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 3,600 images and 20 restarts: ~12 min on 2 busy cores, not 10
def test_kill_9_twenty_rounds(tmp_path, node_factory):
    run_crash_rounds(tmp_path, node_factory, rounds=20, senders=3, per_sender=60, seed=2)
