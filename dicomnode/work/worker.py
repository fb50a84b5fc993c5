"""Background loops: the job worker (classify, then report stable studies) and the outbox.

They run in threads started by the composition root (`node.py`); each loop wakes on an event
(a new job was committed) or on a short poll, and stops when asked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from dicomnode.imaging import reasons
from dicomnode.store.jobs import Jobs
from dicomnode.store.tables import Job, JobState, utcnow
from dicomnode.work.pipeline import Pipeline, ReportDeferred

log = structlog.stdlib.get_logger("dicomnode.worker")


def unexpected_reason(exc: BaseException) -> str:
    """What a job failed by an error no step anticipated says to an operator: not the image's
    fault as far as the node knows, where to look, and what to do (no values, no PHI)."""
    return reasons.reason("unexpected", error=type(exc).__name__)


class Loop(threading.Thread):
    """Run `step` repeatedly; sleep `idle` seconds (or until woken) when it did nothing."""

    def __init__(self, name: str, step: Callable[[], bool], *, idle: float) -> None:
        super().__init__(name=name, daemon=True)
        self.step = step
        self.idle = idle
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = self.step()
            except SQLAlchemyError as exc:
                log.error("database error in loop; will retry", loop=self.name,
                          error=type(exc).__name__)  # fmt: skip
                busy = False
            except Exception:
                # A bug must not kill the loop (and with it the node): log it and go on.
                log.exception("unexpected error in loop; will retry", loop=self.name)
                busy = False
            if not busy:
                self.wake.wait(self.idle)
                self.wake.clear()

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        self.wake.set()
        self.join(timeout)


class JobWorker:
    """Claim → process jobs; between them, build reports for stable studies.

    Up to `max_batch` queued jobs are claimed together and classified in one forward pass
    (micro-batching); a shallow queue gives batches of one, so latency stays that of one image.
    """

    def __init__(self, *, jobs: Jobs, pipeline: Pipeline, owner: str, stable_seconds: float,
                 lease_seconds: float = 600.0, max_batch: int = 1) -> None:  # fmt: skip
        self.max_batch = max(1, max_batch)
        self.jobs = jobs
        self.pipeline = pipeline
        self.owner = owner
        self.stable_seconds = stable_seconds
        self.lease_seconds = lease_seconds
        self.stopping: Callable[[], bool] = lambda: False
        #: Jobs whose outcome could not be recorded (database unwritable): retried each step, as
        #: the lease heartbeat would otherwise keep them `processing` for as long as we run.
        self._unrecorded: dict[int, tuple[JobState, str, float]] = {}
        #: Study report claims not yet given back (same reason): study UID → retry after (s).
        self._unreleased: dict[str, float] = {}
        # Several worker loops may share this worker (node.py): one records at a time.
        self._recording = threading.Lock()

    def step(self) -> bool:
        self._record_pending()
        claimed = self.jobs.claim_batch(
            owner=self.owner, lease_seconds=self.lease_seconds, limit=self.max_batch
        )
        if claimed:
            try:
                self.pipeline.process_batch(claimed)
            except Exception as exc:
                self._crashed(claimed, exc)
            return True
        return self.report_stable_studies()

    def _crashed(self, claimed: Sequence[Job], exc: Exception) -> None:
        """Record an unexpected error on the jobs still in hand, instead of leaving them
        `processing`: a resource error (disk, database) puts them back to wait; anything else
        (a bug, not bad input) fails them visibly, retryable from the API."""
        transient = isinstance(exc, OSError | OperationalError | InterfaceError)
        if transient:
            log.warning("job batch interrupted by a resource error; will retry",
                        job_ids=[job.id for job in claimed], error=type(exc).__name__)  # fmt: skip
        else:
            log.exception("job crashed", job_ids=[job.id for job in claimed])
        state = JobState.QUEUED if transient else JobState.FAILED
        reason = (reasons.reason("deferred_error", error=type(exc).__name__) if transient
                  else unexpected_reason(exc))  # fmt: skip
        for job in claimed:
            assert job.id is not None
            delay = self.pipeline.backoff(max(1, job.attempts))
            self._unrecorded[job.id] = (state, reason, delay)
        self._record_pending()

    def _record_pending(self) -> None:
        if not (self._unrecorded or self._unreleased):
            return
        if not self._recording.acquire(blocking=False):
            return  # another loop is at it; what is left is retried at the next step
        try:
            self._record_pending_locked()
        finally:
            self._recording.release()

    def _record_pending_locked(self) -> None:
        for job_id, (state, reason, delay) in list(self._unrecorded.items()):
            try:
                current = self.jobs.get_job(job_id)
                if current is None or current.state != JobState.PROCESSING:
                    pass  # recorded before the error, or taken over
                elif state == JobState.QUEUED:
                    retry_at = utcnow() + timedelta(seconds=delay)
                    if self.jobs.defer(job_id, owner=self.owner, reason=reason,
                                       retry_at=retry_at):  # fmt: skip
                        cause = reason.split()[1]  # the exception's name
                        self.pipeline.metrics.deferred.labels(kind="image", cause=cause).inc()
                elif self.jobs.finish(job_id, state=state, owner=self.owner, reason=reason):
                    self.pipeline.metrics.failed.inc()
            except SQLAlchemyError as exc:
                log.error("cannot record job outcome; will retry", job_id=job_id,
                          error=type(exc).__name__)  # fmt: skip
                return
            self._unrecorded.pop(job_id, None)
        for study_uid, retry_after in list(self._unreleased.items()):
            try:
                self.jobs.release_study_report(study_uid, owner=self.owner,
                                               retry_after=retry_after)  # fmt: skip
            except SQLAlchemyError as exc:
                log.error("cannot release a study report claim; will retry",
                          error=type(exc).__name__)  # fmt: skip
                return
            self._unreleased.pop(study_uid, None)

    def report_stable_studies(self) -> bool:
        """Build the next report of every stable study, each claimed first, so that with
        several nodes on one database each version is built by exactly one of them."""
        reported = False
        while not self.stopping():
            claimed = self.jobs.claim_study_report(
                owner=self.owner, lease_seconds=self.lease_seconds,
                stable_seconds=self.stable_seconds,
            )  # fmt: skip
            if claimed is None:
                return reported
            study_uid, _version = claimed
            made = None
            retry_after = self.lease_seconds
            try:
                made = self.pipeline.report_study(study_uid, owner=self.owner)
            except ReportDeferred as deferred:  # disk full: retried with backoff
                retry_after = deferred.retry_after
            finally:
                # Recorded: the claim is already gone. Not built (or a bug): try again later,
                # without starving the other studies.
                if made is None:
                    self._unreleased[study_uid] = retry_after
                    self._record_pending()
            reported = True
        return reported
