"""Background loops: the job worker (classify, then report stable studies) and the outbox.

They run in threads started by the composition root (`node.py`); each loop wakes on an event
(a new job was committed) or on a short poll, and stops when asked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from sqlalchemy.exc import SQLAlchemyError

from dicomnode.jobs import Jobs
from dicomnode.pipeline import Pipeline

log = structlog.stdlib.get_logger("dicomnode.worker")


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

    def step(self) -> bool:
        claimed = self.jobs.claim_batch(
            owner=self.owner, lease_seconds=self.lease_seconds, limit=self.max_batch
        )
        if claimed:
            try:
                self.pipeline.process_batch(claimed)
            except Exception as exc:
                # Unexpected (a bug, not bad input): record it on the jobs still in hand so it
                # is visible and retryable from the API, instead of leaving them `processing`.
                log.exception("job crashed", job_ids=[job.id for job in claimed])
                from dicomnode.tables import JobState

                reason = f"internal error ({type(exc).__name__})"
                for job in claimed:
                    assert job.id is not None
                    current = self.jobs.get_job(job.id)
                    if current is not None and current.state == JobState.PROCESSING:
                        self.jobs.finish(job.id, state=JobState.FAILED, owner=self.owner,
                                         reason=reason)  # fmt: skip
                        self.pipeline.metrics.failed.inc()
            return True
        return self.report_stable_studies()

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
            try:
                made = self.pipeline.report_study(study_uid, owner=self.owner)
            finally:
                # Recorded: the claim is already gone. Not built (or a bug): try again later,
                # without starving the other studies.
                if made is None:
                    self.jobs.release_study_report(
                        study_uid, owner=self.owner, retry_after=self.lease_seconds
                    )
            reported = True
        return reported
