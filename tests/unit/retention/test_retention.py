"""Retention: the pure selection with an injected clock, then real runs on SQLite + a spool."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import func, select
from sqlmodel import Session

from dicomnode.audit import Audit, AuditAction, AuditEvent, AuditEventID
from dicomnode.config import ConfigError, load_settings
from dicomnode.retention.policy import (
    OWN_SERIES_DESCRIPTIONS,
    DeliveryRow,
    ImageRow,
    OrthancSeries,
    ResultRow,
    RetentionPolicy,
    StudyRow,
    select_expired,
    select_orthanc_series,
)
from dicomnode.retention.run import RetentionScheduler, describe, run_retention
from dicomnode.retention.store import RetentionMark, SqlRetentionStore
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.spool import Spool
from dicomnode.store.tables import Delivery, Job, JobState, Result, ResultKind, Study
from tests.support.jobs import claim

NOW = datetime(2030, 6, 1, 3, 0, tzinfo=UTC)
POLICY = RetentionPolicy(spool_days=7, results_days=30, records_days=90, stable_seconds=10)


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


def image(
    job_id: int, *, state: str = "classified", age: float = 1, spool: bool = True
) -> ImageRow:
    return ImageRow(
        job_id, state, f"in/{job_id}.dcm" if spool else "", f"hdr/{job_id}.dcm", days_ago(age)
    )


def result(
    rid: int,
    *,
    age: float = 1,
    delivered: float | None = 1,
    state: str = "delivered",
    job_id: int | None = None,
) -> ResultRow:
    deliveries = (DeliveryRow(state, days_ago(delivered) if delivered is not None else None),)
    return ResultRow(rid, f"out/{rid}.dcm", days_ago(age), deliveries, job_id)


def study(uid: str = "1.2.3", *, last: float = 1, reported: int = 1, images=(), results=()):
    return StudyRow(uid, days_ago(last), reported, days_ago(last), tuple(images), tuple(results))


def kinds(deletions) -> list[tuple[str, tuple]]:
    return sorted((d.kind, d.job_ids or d.result_ids) for d in deletions)


# --- pure selection ---------------------------------------------------------------------------


def test_sources_go_once_the_study_is_delivered_results_after_results_days():
    s = study(images=[image(1)], results=[result(10, job_id=1), result(11, age=40, delivered=35)])
    assert kinds(select_expired([s], now=NOW, policy=POLICY)) == [
        ("result", (11,)),
        ("source", (1,)),
    ]


def test_undelivered_results_protect_the_whole_study_for_ever():
    for state in ("pending", "failed"):
        s = study(
            last=400,
            images=[image(1, age=400)],
            results=[result(10, age=400, delivered=None, state=state)],
        )
        assert select_expired([s], now=NOW, policy=POLICY) == []


def test_a_study_in_progress_is_left_alone():
    queued = study(images=[image(1, age=30), image(2, state="queued", age=30)], reported=1)
    receiving = StudyRow("1.2.4", NOW - timedelta(seconds=3), 1, None, (image(3, age=30),))
    unreported = study(images=[image(4, age=30), image(5, age=30)], reported=1)
    processing = study(images=[image(6, state="processing", age=30)], reported=0)
    studies = [queued, receiving, unreported, processing]
    assert select_expired(studies, now=NOW, policy=POLICY) == []
    # The same studies a moment later, finished and reported, do expire.
    done = study(images=[image(4, age=30), image(5, age=30)], reported=2)
    assert kinds(select_expired([done], now=NOW, policy=POLICY)) == [
        ("source", (4,)),
        ("source", (5,)),
    ]


def test_without_destinations_or_for_failed_images_sources_wait_spool_days():
    no_dest = [ResultRow(10, "out/10.dcm", days_ago(3), ())]
    young = study(images=[image(1, age=3)], results=no_dest)
    failed = study(
        "1.2.5", images=[image(2, state="failed", age=3)], reported=0, results=[result(11)]
    )
    assert select_expired([young, failed], now=NOW, policy=POLICY) == []
    later = NOW + timedelta(days=5)
    assert kinds(select_expired([young, failed], now=later, policy=POLICY)) == [
        ("source", (1,)),
        ("source", (2,)),
    ]


def test_records_go_after_records_days_with_every_file():
    s = study(
        last=100,
        images=[image(1, age=100), image(2, age=100, spool=False)],
        reported=2,
        results=[result(10, age=100, delivered=95)],
    )
    [d] = select_expired([s], now=NOW, policy=POLICY)
    assert d.kind == "study" and d.job_ids == (1, 2) and d.result_ids == (10,)
    assert set(d.paths) == {"in/1.dcm", "hdr/1.dcm", "hdr/2.dcm", "out/10.dcm"}
    # Activity counts from the last delivery: a recent one keeps the records.
    recent = study(
        last=100, images=[image(1, age=100)], results=[result(10, age=100, delivered=20)]
    )
    assert all(d.kind != "study" for d in select_expired([recent], now=NOW, policy=POLICY))


def test_zero_days_keeps_that_kind_for_ever_and_deleted_things_are_not_selected_again():
    keep = RetentionPolicy(spool_days=0, results_days=0, records_days=0, stable_seconds=10)
    s = study(
        last=1000,
        images=[image(1, age=1000, state="failed")],
        reported=0,
        results=[result(10, age=1000, delivered=1000)],
    )
    assert select_expired([s], now=NOW, policy=keep) == []
    gone = study(
        images=[image(1, spool=False)],
        results=[ResultRow(10, "", days_ago(50), (DeliveryRow("delivered", days_ago(50)),))],
    )
    assert select_expired([gone], now=NOW, policy=POLICY) == []


def test_orthanc_selection_takes_only_old_own_series():
    root = "1.2.826.0.1.3680043.8.498.4711."
    desc = sorted(OWN_SERIES_DESCRIPTIONS)
    series = [
        OrthancSeries("a", root + "1", desc[0], days_ago(40)),
        OrthancSeries("b", root + "2", desc[1], days_ago(10)),  # too young
        OrthancSeries("c", "1.2.840.99.1", desc[0], days_ago(40)),  # not ours
        OrthancSeries("d", root + "3", "CHEST PA", days_ago(40)),  # not a result series
    ]
    assert [
        s.orthanc_id for s in select_orthanc_series(series, now=NOW, days=30, uid_root=root)
    ] == ["a"]
    assert select_orthanc_series(series, now=NOW, days=0, uid_root=root) == []


def test_an_images_kept_regions_go_with_its_header():
    """The suspected regions kept for a later report version (next to the header) go when
    the records go, never before."""
    located = replace(image(1, age=100), regions_path="hdr/1.regions.json")
    s = study(last=100, images=[located], results=[result(10, age=100, delivered=95)])
    [d] = select_expired([s], now=NOW, policy=POLICY)
    assert "hdr/1.regions.json" in d.paths and "hdr/1.dcm" in d.paths
    recent = study(last=1, images=[located], results=[result(10, age=1, delivered=1)])
    assert all("hdr/1.regions.json" not in d.paths
               for d in select_expired([recent], now=NOW, policy=POLICY))  # fmt: skip


def test_own_series_descriptions_match_the_builders():
    from dicomnode.objects.gsps import GSPS_SERIES_DESCRIPTION
    from dicomnode.objects.sc import SC_SERIES_DESCRIPTION
    from dicomnode.objects.sr import SR_SERIES_DESCRIPTION

    own = {SC_SERIES_DESCRIPTION, SR_SERIES_DESCRIPTION, GSPS_SERIES_DESCRIPTION}
    assert own == OWN_SERIES_DESCRIPTIONS


# --- configuration and schedule ---------------------------------------------------------------


def test_retention_config_defaults_and_invalid_cron_names_the_key(tmp_path):
    s = load_settings(None, environ={})
    assert s.retention.schedule == "0 3 * * *" and s.retention.orthanc_results_days == 0
    with pytest.raises(ConfigError, match=r"retention\.schedule.*cron"):
        load_settings(None, environ={"DICOMNODE_RETENTION__SCHEDULE": "61 3 * * *"})
    with pytest.raises(ConfigError, match=r"retention\.schedule"):
        load_settings(None, environ={"DICOMNODE_RETENTION__SCHEDULE": "nightly"})
    with pytest.raises(ConfigError, match="results_orthanc_url"):
        load_settings(None, environ={"DICOMNODE_RETENTION__ORTHANC_RESULTS_DAYS": "30"})


def test_scheduler_fires_the_cron_job():
    fired = threading.Event()
    scheduler = RetentionScheduler(schedule="* * * * *", run=fired.set)
    scheduler.start()
    try:
        assert scheduler.next_run_time is not None
        scheduler.scheduler.get_job("retention").modify(next_run_time=datetime.now(UTC))
        assert fired.wait(30), "the retention job did not run"
    finally:
        scheduler.shutdown()
    assert not scheduler.scheduler.running


# --- runs on a real database and spool --------------------------------------------------------


class Node:
    """A database and spool filled the way the node fills them (through Jobs)."""

    def __init__(self, root: Path) -> None:
        self.engine = make_engine(f"sqlite:///{root / 'db.sqlite'}")
        self.jobs = Jobs(self.engine)
        self.spool = Spool(root / "spool")
        self.audit = Audit(self.engine, salt="s")
        self.store = SqlRetentionStore(self.engine, self.spool)

    def add_study(self, uid: str, n: int, *, deliver: str | None = "delivered") -> list[str]:
        """A finished, reported study of n classified images, each with an SC, plus an SR."""
        paths = []
        for i in range(n):
            sop = f"{uid}.{i + 1}"
            rel = self.spool.relative_path(sop, kind="in")
            self.spool.write_bytes(rel, b"img")
            hdr = self.spool.relative_path(sop, kind="hdr")
            self.spool.write_bytes(hdr, b"hdr")
            job_id, _ = self.jobs.enqueue(
                Received(
                    sop, "1.2.840.10008.5.1.4.1.1.1", uid, uid + ".0", "CR", "", "", "TEST", rel, {}
                )
            )
            claim(self.jobs, owner="t", lease_seconds=60)
            self.jobs.finish(job_id, state=JobState.CLASSIFIED, probability=0.5)
            paths += [rel, hdr, self._result(uid, f"{sop}.9", job_id, deliver)]
        paths.append(self._result(uid, f"{uid}.99", None, deliver))
        self.jobs.record_report(
            study_instance_uid=uid, version=1, job_count=n, outcome="negative", max_probability=0.5
        )
        return paths

    def _result(self, uid: str, sop: str, job_id: int | None, deliver: str | None) -> str:
        rel = self.spool.relative_path(sop, kind="out")
        self.spool.write_bytes(rel, b"res")
        r = self.jobs.add_result(
            kind=ResultKind.SC,
            sop_instance_uid=sop,
            study_instance_uid=uid,
            path=rel,
            destinations=["pacs"] if deliver else [],
            job_id=job_id,
        )
        for d in self.jobs.deliveries_for([r.id]):
            if deliver == "delivered":
                self.jobs.delivery_succeeded(d.id, status=0)
            elif deliver == "failed":
                self.jobs.delivery_failed(d.id, status=0xA700, error="x", retry_at=None)
        return rel

    def count(self, table) -> int:
        with Session(self.engine) as s:
            return int(s.execute(select(func.count()).select_from(table)).scalar_one())

    def run(self, *, now: datetime, **kwargs):
        return run_retention(
            store=self.store,
            files=self.spool,
            audit=self.audit,
            policy=POLICY,
            now=now,
            uid_root="9.9.",
            **kwargs,
        )


def test_dry_run_deletes_nothing_and_a_run_deletes_what_it_printed(tmp_path):
    node = Node(tmp_path)
    old = node.add_study("1.2.826.0.1.3680043.8.498.1", 2)
    kept = node.add_study("1.2.826.0.1.3680043.8.498.2", 1, deliver="failed")
    later = datetime.now(UTC) + timedelta(days=200)
    files_before = sorted(p for p in (tmp_path / "spool").rglob("*.dcm"))
    dry = node.run(now=later, dry_run=True)
    assert [d.kind for d in dry.deletions] == ["study"]
    assert sorted(p for p in (tmp_path / "spool").rglob("*.dcm")) == files_before
    assert node.count(Job) == 3 and node.count(AuditEvent) == 0
    lines = describe(dry, hash_uid=node.audit.hash)
    assert lines[0].startswith("would delete study records") and "1.2.826" not in "".join(lines)

    done = node.run(now=later)
    assert [d.kind for d in done.deletions] == ["study"]
    assert not any(node.spool.exists(p) for p in old)
    assert all(node.spool.exists(p) for p in kept)  # its delivery failed: never deleted
    assert node.count(Job) == 1 and node.count(Study) == 1 and node.count(Result) == 2
    assert node.count(Delivery) == 2 and node.count(RetentionMark) == 0
    [event] = node.audit.query()
    assert event.event == "DICOMStudyDeleted" and event.action == "D" and event.count == 2
    assert event.study == node.audit.hash("1.2.826.0.1.3680043.8.498.1")
    assert "1.2.826" not in event.object + event.detail


def test_delivered_sources_go_first_then_result_files_keeping_headers(tmp_path):
    node = Node(tmp_path)
    paths = node.add_study("1.2.826.0.1.3680043.8.498.3", 2)
    sources = [p for p in paths if p.startswith("in/")]
    headers = [p for p in paths if p.startswith("hdr/")]
    results = [p for p in paths if p.startswith("out/")]
    node.run(now=datetime.now(UTC) + timedelta(minutes=1))
    assert not any(node.spool.exists(p) for p in sources)
    assert all(node.spool.exists(p) for p in headers + results)
    assert all(j.spool_path == "" for j in node.jobs.list_jobs())
    assert node.run(now=datetime.now(UTC) + timedelta(minutes=1)).deletions == []
    node.run(now=datetime.now(UTC) + timedelta(days=31))
    assert not any(node.spool.exists(p) for p in results)
    assert all(node.spool.exists(p) for p in headers) and node.count(Job) == 2
    events = node.audit.query(newest_first=False)
    assert [(e.event, e.count) for e in events] == [
        ("DICOMInstancesAccessed", 2),
        ("DICOMInstancesAccessed", 3),
    ]
    assert "source images deleted" in events[0].detail


def test_marks_of_an_interrupted_run_are_finished_whatever_the_clock(tmp_path):
    node = Node(tmp_path)
    node.add_study("1.2.826.0.1.3680043.8.498.4", 1)
    node.add_study("1.2.826.0.1.3680043.8.498.5", 1)
    later = datetime.now(UTC) + timedelta(days=200)
    plan = node.run(now=later, dry_run=True).deletions
    # Simulate a kill after the marks and the first study's files: rows still there.
    marks = node.store.mark(plan)
    for p in marks[0].deletion.paths:
        node.spool.delete(p)
    assert node.count(Job) == 2 and node.count(RetentionMark) == 2
    report = node.run(now=datetime.now(UTC))  # today: nothing would expire by itself
    assert len(report.finished) == 2 and report.deletions == []
    assert node.count(Job) == 0 and node.count(Study) == 0 and node.count(RetentionMark) == 0
    assert list((tmp_path / "spool").rglob("*.dcm")) == []


def test_a_stop_request_ends_the_run_between_batches(tmp_path):
    node = Node(tmp_path)
    for i in range(3):
        node.add_study(f"1.2.826.0.1.3680043.8.498.6{i}", 1)
    stop = threading.Event()
    report = node.run(
        now=datetime.now(UTC) + timedelta(days=200),
        stop=stop,
        batch_size=1,
        on_batch=lambda n: stop.set(),
    )
    assert report.interrupted and node.count(Study) == 2 and node.count(RetentionMark) == 0


# --- the audit trail (retention.audit_days) ---------------------------------------------------


def _audit_rows(node: Node, *, ages_days: list[float], now: datetime) -> None:
    node.audit.save(
        [
            node.audit.make(
                event=AuditEventID.INSTANCES_TRANSFERRED,
                action=AuditAction.CREATE,
                actor="MODALITY",
                study_uid="1.2.826.0.1.3680043.8.498.70",
                time=now - timedelta(days=age),
            )
            for age in ages_days
        ]
    )


def _run(node: Node, policy: RetentionPolicy, **kwargs):
    return run_retention(
        store=node.store,
        files=node.spool,
        audit=node.audit,
        policy=policy,
        uid_root="9.9.",
        **kwargs,
    )


def _count_audit_deletes(node: Node) -> list[str]:
    """Every DELETE statement on audit_event the engine runs (observed, not replaced)."""
    seen: list[str] = []

    @sqlalchemy_event.listens_for(node.engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("DELETE FROM AUDIT_EVENT"):
            seen.append(statement)

    return seen


def test_audit_events_past_audit_days_are_pruned_in_batches_and_the_pruning_is_audited(tmp_path):
    node = Node(tmp_path)
    now = datetime.now(UTC)
    policy = replace(POLICY, audit_days=365)
    # 12 past the limit (one a minute past it), 3 within it (one a minute short of it).
    _audit_rows(node, ages_days=[400.0] * 11 + [365 + 1 / 1440], now=now)
    _audit_rows(node, ages_days=[1.0, 30.0, 365 - 1 / 1440], now=now)

    dry = _run(node, policy, now=now, dry_run=True)
    assert dry.audit_events == 12 and node.count(AuditEvent) == 15
    lines = describe(dry, hash_uid=node.audit.hash)
    cutoff = (now - timedelta(days=365)).date().isoformat()
    assert f"would delete 12 audit events recorded before {cutoff} (audit_days)" in lines
    assert lines[-1].endswith(", 12 audit events")

    deletes = _count_audit_deletes(node)
    report = _run(node, policy, now=now, audit_batch_size=5)
    assert report.audit_events == 12 and len(deletes) == 3  # 5 + 5 + 2, three transactions
    rows = node.audit.query(limit=100, newest_first=False)
    kept = [r for r in rows if r.event == "DICOMInstancesTransferred"]
    assert len(kept) == 3
    assert all(r.time.replace(tzinfo=UTC) > now - timedelta(days=365) for r in kept)
    [pruned] = [r for r in rows if r.event == "AuditLogUsed"]
    assert (pruned.action, pruned.count, pruned.actor) == ("D", 12, "dicomnode:retention")
    assert pruned.study == "" and pruned.object == "" and pruned.outcome == 0
    assert (
        pruned.detail
        == f"audit events older than audit_days=365 deleted (recorded before {cutoff})"
    )
    assert "1.2.826" not in pruned.detail

    again = _run(node, policy, now=now)
    assert again.audit_events == 0 and node.count(AuditEvent) == 4  # no event for nothing


def test_audit_days_zero_keeps_the_trail_and_a_stop_ends_pruning_between_batches(tmp_path):
    node = Node(tmp_path)
    now = datetime.now(UTC)
    _audit_rows(node, ages_days=[5000.0] * 7, now=now)
    forever = _run(node, replace(POLICY, audit_days=0), now=now)
    assert forever.audit_cutoff is None and forever.audit_events == 0
    assert node.count(AuditEvent) == 7
    assert not any(
        "audit events" in line and "summary" not in line
        for line in describe(forever, hash_uid=node.audit.hash)
    )

    stop = threading.Event()
    deletes = _count_audit_deletes(node)
    sqlalchemy_event.listen(
        node.engine, "after_cursor_execute", lambda *a: stop.set() if deletes else None
    )
    report = _run(node, replace(POLICY, audit_days=2190), now=now, stop=stop, audit_batch_size=3)
    assert report.interrupted and report.audit_events == 3 and len(deletes) == 1
    [pruned] = node.audit.query(event="AuditLogUsed")
    assert pruned.count == 3 and "interrupted" in pruned.detail
    assert node.count(AuditEvent) == 4 + 1


def test_audit_days_default_is_six_years_and_reaches_the_policy():
    settings = load_settings(None, environ={})
    assert settings.retention.audit_days == 2190
    assert RetentionPolicy.from_settings(settings).audit_days == 2190
    custom = load_settings(None, environ={"DICOMNODE_RETENTION__AUDIT_DAYS": "3650"})
    assert RetentionPolicy.from_settings(custom).audit_days == 3650
    with pytest.raises(ConfigError, match=r"retention\.audit_days"):
        load_settings(None, environ={"DICOMNODE_RETENTION__AUDIT_DAYS": "-1"})
