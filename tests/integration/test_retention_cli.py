"""`dicomnode retention`: dry run, a run killed with SIGKILL midway and finished by the next
run, and the node's own result series deleted from a real Orthanc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from dicomnode.audit import Audit, AuditAction, AuditEventID
from dicomnode.config import load_settings
from dicomnode.store.db import make_engine
from dicomnode.store.spool import Spool
from dicomnode.store.tables import Delivery, DeliveryState, Job, JobState, Result, ResultKind, Study
from tests.support.nodecfg import write_node_config
from tests.support.peers import wait_until
from tests.support.smallcr import db_rows, small_cr

ROOT = "1.2.826.0.1.3680043.8.498.4711."
FUTURE = (datetime.now(UTC) + timedelta(days=400)).isoformat()


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dicomnode.cli", *args]


def _fill(config: Path, studies: int, images: int) -> dict[str, list[str]]:
    """Finished, reported, delivered studies written the way the node lays them out (rows in
    one transaction, files without fsync: this is test set-up). Returns study → files."""
    settings = load_settings(config, environ={})
    engine = make_engine(settings.database_url)
    spool = Spool(settings.node.data_dir / "spool")
    files: dict[str, list[str]] = defaultdict(list)
    with Session(engine) as s:
        for n in range(studies):
            uid = f"1.2.826.0.1.3680043.8.498.900.{n}"
            s.add(
                Study(
                    study_instance_uid=uid,
                    reported_job_count=images,
                    report_version=1,
                    reported_at=datetime.now(UTC),
                    outcome="negative",
                )
            )
            outputs = [(f"{uid}.99", None)]
            for i in range(images):
                sop = f"{uid}.{i}"
                rel = spool.relative_path(sop, kind="in")
                job = Job(
                    sop_instance_uid=sop,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                    study_instance_uid=uid,
                    spool_path=rel,
                    state=JobState.CLASSIFIED,
                )
                s.add(job)
                s.flush()
                files[uid] += [rel, spool.relative_path(sop, kind="hdr")]
                outputs.append((f"{sop}.9", job.id))
            for sop, job_id in outputs:
                rel = spool.relative_path(sop, kind="out")
                result = Result(
                    kind=ResultKind.SC,
                    sop_instance_uid=sop,
                    study_instance_uid=uid,
                    job_id=job_id,
                    path=rel,
                )
                s.add(result)
                s.flush()
                s.add(
                    Delivery(
                        result_id=result.id,
                        destination="pacs",
                        state=DeliveryState.DELIVERED,
                        delivered_at=datetime.now(UTC),
                    )
                )
                files[uid].append(rel)
        s.commit()
    engine.dispose()
    for paths in files.values():
        for rel in paths:
            path = spool.path(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    return files


def _studies(db: Path) -> set[str]:
    return {row[0] for row in db_rows(db, "select study_instance_uid from study")}


def _marked(db: Path) -> set[str]:
    import json

    return {json.loads(p)["study"] for (p,) in db_rows(db, "select payload from retention_mark")}


def test_dry_run_prints_and_deletes_nothing_then_a_run_deletes_it(tmp_path):
    config = write_node_config(tmp_path / "node")
    files = _fill(config, 3, 2)
    spool = tmp_path / "node" / "var" / "spool"
    before = sorted(spool.rglob("*.dcm"))
    dry = subprocess.run(
        _cmd("retention", "--config", str(config), "--dry-run", "--now", FUTURE),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert sum(line.startswith("would delete study records") for line in lines) == 3
    assert (
        "summary: would delete 0 source images, 0 result files, 3 studies' records (21 files)"
        in dry.stdout
    )
    assert not any(uid in dry.stdout + dry.stderr for uid in files)
    assert sorted(spool.rglob("*.dcm")) == before
    run = subprocess.run(
        _cmd("retention", "--config", str(config), "--now", FUTURE),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "summary: deleted 0 source images, 0 result files, 3 studies' records" in run.stdout
    assert list(spool.rglob("*.dcm")) == []
    assert '"event": "retention run finished"' in run.stderr  # the summary log line


def test_a_run_killed_midway_leaves_no_half_state_and_the_next_run_finishes_it(tmp_path):
    config = write_node_config(tmp_path / "node")
    files = _fill(config, 1500, 2)
    db = tmp_path / "node" / "var" / "dicomnode.db"
    spool = Spool(tmp_path / "node" / "var" / "spool")
    proc = subprocess.Popen(
        _cmd("retention", "--config", str(config), "--now", FUTURE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: proc.poll() is not None or _marked(db),
            timeout=300,
            interval=0.005,
            what="the retention run to mark its first batch",
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    remaining, marked = _studies(db), _marked(db)
    assert remaining and len(remaining) < len(files) + 1
    for uid, paths in files.items():
        present = [spool.exists(p) for p in paths]
        if uid not in remaining:
            assert not any(present), "a study's rows are gone but some of its files remain"
        elif uid not in marked:
            assert all(present), "an unmarked study lost files"
    # Rows of every unfinished deletion are still there, under a mark: nothing is half done
    # without a record of it. The next run (today: nothing expires by itself) finishes them.
    assert marked <= remaining
    done = subprocess.run(
        _cmd("retention", "--config", str(config)), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "finished (interrupted run): deleted study records" in done.stdout
    assert _marked(db) == set() and _studies(db) == remaining - marked
    for uid in marked:
        assert not any(spool.exists(p) for p in files[uid])
    audited = db_rows(db, "select count(*) from audit_event where event = 'DICOMStudyDeleted'")
    assert audited == [(len(files) - len(remaining - marked),)]

    final = subprocess.run(
        _cmd("retention", "--config", str(config), "--now", FUTURE),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stderr
    assert _studies(db) == set() and list(spool.root.rglob("*.dcm")) == []


def test_old_result_series_of_the_node_are_deleted_from_orthanc(tmp_path, orthanc):
    _delete_old_result_series(tmp_path, orthanc, {})


def test_result_series_are_deleted_with_the_orthanc_credentials(tmp_path, orthanc_factory):
    """An Orthanc that asks for a user: retention authenticates with `[orthanc]`'s, like the pull
    and the outcome labels (the same client; its deletions used to go without: HTTP 401)."""
    users = {"dicomnode": "retention-test-password"}
    orthanc = orthanc_factory(users=users)
    [(user, password)] = users.items()
    credentials = {"url": orthanc.http_url, "username": user, "password": password}
    _delete_old_result_series(tmp_path, orthanc, {"orthanc": credentials})


def _delete_old_result_series(tmp_path, orthanc, sections) -> None:
    study = ROOT + "77.1"
    own = small_cr(
        tmp_path / "own.dcm",
        study_uid=study,
        SeriesInstanceUID=ROOT + "77.2",
        SeriesDescription="AI fracture triage overlay",
        Manufacturer="dicomnode",
    )
    source = small_cr(tmp_path / "source.dcm", study_uid=study, SeriesDescription="HAND")
    orthanc.upload(own)
    orthanc.upload(source)
    config = write_node_config(
        tmp_path / "node",
        extra_sections={
            "retention": {"orthanc_results_days": 30, "results_orthanc_url": orthanc.http_url},
            **sections,
        },
    )
    soon = subprocess.run(
        _cmd("retention", "--config", str(config)), capture_output=True, text=True, timeout=300
    )
    assert soon.returncode == 0 and "0 Orthanc series" in soon.stdout, soon.stdout + soon.stderr
    assert len(orthanc.instances()) == 2
    later = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    run = subprocess.run(
        _cmd("retention", "--config", str(config), "--now", later),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "deleted Orthanc series" in run.stdout and ROOT + "77" not in run.stdout
    [left] = orthanc.instances()
    assert orthanc.instance_tags(left)["SeriesDescription"] == "HAND"
    db = tmp_path / "node" / "var" / "dicomnode.db"
    [(peer, detail)] = db_rows(
        db, "select peer, detail from audit_event where object like 'series:%'"
    )
    assert peer.startswith("orthanc 127.0.0.1") and "deleted from Orthanc" in detail


def test_audit_events_past_audit_days_are_reported_and_pruned(tmp_path):
    config = write_node_config(tmp_path / "node", extra_sections={"retention": {"audit_days": 30}})
    settings = load_settings(config, environ={})
    engine = make_engine(settings.database_url)
    audit = Audit(engine, salt="test")
    study = ROOT + "88.1"
    now = datetime.now(UTC)
    audit.save(
        [
            audit.make(event=AuditEventID.INSTANCES_TRANSFERRED, action=AuditAction.CREATE,
                       actor="MODALITY", study_uid=study, time=now - timedelta(days=age))
            for age in (45, 40, 31, 29, 1)
        ]
    )  # fmt: skip
    engine.dispose()
    db = tmp_path / "node" / "var" / "dicomnode.db"
    cutoff = (now - timedelta(days=30)).date().isoformat()

    dry = subprocess.run(
        _cmd("retention", "--config", str(config), "--dry-run"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr
    assert f"would delete 3 audit events recorded before {cutoff} (audit_days)" in dry.stdout
    assert dry.stdout.rstrip().endswith(", 3 audit events")
    assert db_rows(db, "select count(*) from audit_event") == [(5,)]

    run = subprocess.run(
        _cmd("retention", "--config", str(config)), capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert f"deleted 3 audit events recorded before {cutoff}" in run.stdout
    assert '"audit_events": 3' in run.stderr  # the summary log line
    assert db_rows(
        db, "select actor from audit_event where event = 'DICOMInstancesTransferred'"
    ) == [
        ("MODALITY",),
        ("MODALITY",),
    ]
    [(action, count, detail)] = db_rows(
        db, "select action, count, detail from audit_event where event = 'AuditLogUsed'"
    )
    assert (action, count) == ("D", 3) and "audit_days=30" in detail
    assert study not in run.stdout + run.stderr + detail
