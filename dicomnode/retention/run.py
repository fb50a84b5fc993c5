"""A retention run: how it deletes what the policy selected (`dicomnode.retention.policy`)
without leaving half a state behind, its report, and the APScheduler cron job that runs it.

A run marks what it is about to delete (one transaction), deletes the files (a missing file is
fine), then changes the rows and drops the marks (one transaction, with the audit events). A
run killed midway leaves marks; the next run finishes them first, whatever the clock says then.
Pruning the audit trail needs no marks: each batch is a plain delete of rows past their age.
The database side is `dicomnode.retention.store`, Orthanc's `dicomnode.retention.orthanc`.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import structlog

from dicomnode.audit import Audit, AuditAction, AuditEvent, AuditEventID, AuditOutcome
from dicomnode.retention.policy import (
    Deletion,
    Mark,
    OrthancSeries,
    RetentionPolicy,
    StudyRow,
    aware,
    select_expired,
    select_orthanc_series,
)

log = structlog.stdlib.get_logger("dicomnode.retention")

ACTOR = "dicomnode:retention"
#: Audit events deleted per transaction.
AUDIT_BATCH = 5000


class RetentionStore(Protocol):
    """The database side of a run (`dicomnode.retention.store.SqlRetentionStore`)."""

    def pending_marks(self) -> list[Mark]: ...
    def snapshot(self) -> list[StudyRow]: ...
    def mark(self, deletions: Sequence[Deletion]) -> list[Mark]: ...
    def complete(self, marks: Sequence[Mark], events: Sequence[AuditEvent]) -> None: ...


class OrthancResults(Protocol):
    peer: str

    def own_series(self) -> list[OrthancSeries]: ...
    def delete(self, orthanc_id: str) -> None: ...


class FileDeleter(Protocol):
    root: Path

    def delete(self, relative: str) -> bool: ...


class RetentionBusy(RuntimeError):
    """Another retention run holds the lock."""


@dataclass
class RetentionReport:
    dry_run: bool
    now: datetime
    finished: list[Deletion] = field(default_factory=list)  # marks left by an interrupted run
    deletions: list[Deletion] = field(default_factory=list)
    orthanc: list[OrthancSeries] = field(default_factory=list)
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)
    #: Audit events older than this are pruned (None: `audit_days` = 0, kept for ever).
    audit_cutoff: datetime | None = None
    #: How many were (dry run: would be) pruned.
    audit_events: int = 0

    def counts(self) -> dict[str, int]:
        every = self.finished + self.deletions
        return {
            "source_images": sum(d.kind == "source" for d in every),
            "result_files": sum(d.kind == "result" for d in every),
            "studies": sum(d.kind == "study" for d in every),
            "files": sum(len(d.paths) for d in every),
            "orthanc_series": len(self.orthanc),
            "audit_events": self.audit_events,
        }


def _lock_path(files: FileDeleter) -> Path:
    """Next to the spool (in the data dir), not in it: the spool holds only DICOM files."""
    return files.root.parent / "retention.lock"


@contextlib.contextmanager
def _run_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetentionBusy("another retention run is in progress") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_retention(
    *,
    store: RetentionStore,
    files: FileDeleter,
    audit: Audit,
    policy: RetentionPolicy,
    now: datetime,
    uid_root: str,
    dry_run: bool = False,
    orthanc: OrthancResults | None = None,
    stop: threading.Event | None = None,
    batch_size: int = 200,
    on_batch: Callable[[int], None] | None = None,
    audit_batch_size: int = AUDIT_BATCH,
) -> RetentionReport:
    """One run: finish what an interrupted run marked, then select and delete what expired,
    then prune the audit trail."""
    report = RetentionReport(dry_run=dry_run, now=aware(now))
    if policy.audit_days > 0:
        report.audit_cutoff = report.now - timedelta(days=policy.audit_days)
    with _run_lock(_lock_path(files)):
        pending = store.pending_marks()
        if not dry_run and pending:
            log.info("finishing deletions of an interrupted retention run", count=len(pending))
            _execute(pending, store=store, files=files, audit=audit)
        report.finished = [m.deletion for m in pending]
        report.deletions = select_expired(store.snapshot(), now=report.now, policy=policy)
        if orthanc is not None and policy.orthanc_results_days > 0:
            try:
                report.orthanc = select_orthanc_series(
                    orthanc.own_series(),
                    now=report.now,
                    days=policy.orthanc_results_days,
                    uid_root=uid_root,
                )
            except OSError as exc:
                report.errors.append(f"Orthanc unreachable ({type(exc).__name__})")
        if dry_run:
            if report.audit_cutoff is not None:
                report.audit_events = audit.count_before(report.audit_cutoff)
            return report
        for start in range(0, len(report.deletions), batch_size):
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
            chunk = report.deletions[start : start + batch_size]
            marks = store.mark(chunk)
            _execute(marks, store=store, files=files, audit=audit)
            if on_batch is not None:
                on_batch(start + len(chunk))
        if not report.interrupted and orthanc is not None:
            _delete_orthanc(report, orthanc=orthanc, audit=audit)
        if not report.interrupted and report.audit_cutoff is not None:
            _prune_audit(report, audit=audit, days=policy.audit_days, stop=stop,
                         batch_size=audit_batch_size)  # fmt: skip
    _log_summary(report)
    return report


def finish_interrupted(*, store: RetentionStore, files: FileDeleter, audit: Audit) -> int:
    """Only finish the deletions an interrupted run marked (at node start-up)."""
    with _run_lock(_lock_path(files)):
        pending = store.pending_marks()
        if pending:
            log.info("finishing deletions of an interrupted retention run", count=len(pending))
            _execute(pending, store=store, files=files, audit=audit)
        return len(pending)


def _execute(
    marks: Sequence[Mark], *, store: RetentionStore, files: FileDeleter, audit: Audit
) -> None:
    for mark in marks:
        for relative in mark.deletion.paths:
            files.delete(relative)  # already gone is fine
    store.complete(marks, _audit_events(marks, audit))


def _audit_events(marks: Sequence[Mark], audit: Audit) -> list[AuditEvent]:
    groups: dict[tuple[str, str, str], list[Deletion]] = defaultdict(list)
    for mark in marks:
        d = mark.deletion
        groups[(d.kind, d.study_instance_uid, d.reason)].append(d)
    events = []
    for (kind, study_uid, reason), items in groups.items():
        if kind == "study":
            event, count = AuditEventID.STUDY_DELETED, sum(len(d.job_ids) for d in items)
            detail = f"records and files of the study deleted: {reason}"
        else:
            event, count = AuditEventID.INSTANCES_ACCESSED, len(items)
            what = "source images" if kind == "source" else "result files"
            detail = f"{what} deleted: {reason}"
        events.append(
            audit.make(
                event=event,
                action=AuditAction.DELETE,
                actor=ACTOR,
                study_uid=study_uid,
                object=f"study:{audit.hash(study_uid)}",
                count=count,
                detail=detail,
            )
        )
    return events


def _delete_orthanc(report: RetentionReport, *, orthanc: OrthancResults, audit: Audit) -> None:
    for series in report.orthanc:
        try:
            orthanc.delete(series.orthanc_id)
            outcome, detail = AuditOutcome.SUCCESS, "result series deleted from Orthanc"
        except OSError as exc:
            outcome = AuditOutcome.SERIOUS_FAILURE
            detail = f"deleting the result series from Orthanc failed ({type(exc).__name__})"
            report.errors.append(detail)
        audit.record(
            event=AuditEventID.INSTANCES_ACCESSED,
            action=AuditAction.DELETE,
            actor=ACTOR,
            peer=orthanc.peer,
            outcome=outcome,
            object=f"series:{audit.hash(series.series_instance_uid)}",
            detail=detail,
        )


def _prune_audit(
    report: RetentionReport,
    *,
    audit: Audit,
    days: float,
    stop: threading.Event | None,
    batch_size: int,
) -> None:
    """Delete audit events older than the cutoff, batch by batch, then record one event with
    the count (the cutoff date and the setting; never anything about what the rows held)."""
    assert report.audit_cutoff is not None
    while True:
        if stop is not None and stop.is_set():
            report.interrupted = True
            break
        pruned = audit.prune(before=report.audit_cutoff, limit=batch_size)
        report.audit_events += pruned
        if pruned < batch_size:
            break
    if report.audit_events:
        rest = "; interrupted, the rest goes in the next run" if report.interrupted else ""
        audit.record(
            event=AuditEventID.AUDIT_LOG_USED,
            action=AuditAction.DELETE,
            actor=ACTOR,
            count=report.audit_events,
            detail=f"audit events older than audit_days={days:g} deleted "
            f"(recorded before {report.audit_cutoff.date().isoformat()}){rest}",
        )


def _log_summary(report: RetentionReport) -> None:
    log.info(
        "retention run finished",
        dry_run=report.dry_run,
        interrupted=report.interrupted,
        errors=len(report.errors),
        **report.counts(),
    )


def describe(report: RetentionReport, *, hash_uid: Callable[[str], str]) -> list[str]:
    """Lines for the CLI: one per deletion (hashed study, never a raw UID), then a summary."""
    verb = "would delete" if report.dry_run else "deleted"
    lines = []
    labels = {"source": "source image", "result": "result file", "study": "study records"}
    for prefix, items in (
        ("finished (interrupted run): ", report.finished),
        ("", report.deletions),
    ):
        for d in items:
            ids = (
                f"job {','.join(map(str, d.job_ids))}"
                if d.kind == "source"
                else f"result {','.join(map(str, d.result_ids))}"
                if d.kind == "result"
                else f"{len(d.job_ids)} jobs, {len(d.result_ids)} results, {len(d.paths)} files"
            )
            lines.append(
                f"{prefix}{verb} {labels[d.kind]}: study {hash_uid(d.study_instance_uid)}"
                f" ({ids}): {d.reason}"
            )
    for s in report.orthanc:
        lines.append(
            f"{verb} Orthanc series {hash_uid(s.series_instance_uid)} ({s.series_description})"
        )
    if report.audit_cutoff is not None and (report.audit_events or report.dry_run):
        lines.append(
            f"{verb} {report.audit_events} audit events recorded before "
            f"{report.audit_cutoff.date().isoformat()} (audit_days)"
        )
    counts = report.counts()
    if report.interrupted:
        lines.append("interrupted: the rest is deleted by the next run")
    lines += [f"error: {e}" for e in report.errors]
    lines.append(
        f"summary: {verb} {counts['source_images']} source images, "
        f"{counts['result_files']} result files, {counts['studies']} studies' records "
        f"({counts['files']} files), {counts['orthanc_series']} Orthanc series, "
        f"{counts['audit_events']} audit events"
    )
    return lines


# --- the schedule ---------------------------------------------------------------------------


class RetentionScheduler:
    """An APScheduler 3 BackgroundScheduler with one cron job. Started by the composition root."""

    def __init__(self, *, schedule: str, run: Callable[[], object]) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger

        self.trigger = CronTrigger.from_crontab(schedule)
        self.scheduler = BackgroundScheduler(
            daemon=True,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        self.scheduler.add_job(run, self.trigger, id="retention", name="retention")

    def start(self) -> None:
        self.scheduler.start()

    @property
    def next_run_time(self) -> datetime | None:
        job = self.scheduler.get_job("retention")
        return getattr(job, "next_run_time", None) if job else None

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
