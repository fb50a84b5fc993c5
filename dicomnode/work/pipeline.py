"""Orchestration of one job and of one study report, with every dependency passed in.

job:    spool file → eligible? → preprocess (`work.prepare`) → classify (+ heatmap) → the
        image's objects (`objects.outputs`: the SC) → outbox (`work.results`) → record
study:  quiet for study_stable_seconds → the study's objects (the SR) over all classified
        images (new version when late images arrive, naming the previous one) → outbox → record
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import structlog
from pydicom import Dataset, dcmread

from dicomnode.backoff import backoff_seconds
from dicomnode.config import Settings
from dicomnode.imaging.dicom_errors import READ_ERRORS
from dicomnode.imaging.reasons import reason
from dicomnode.library_warnings import summarised
from dicomnode.metrics import Metrics
from dicomnode.model.classifier import Classifier, Outcome, Prediction, outcome_for
from dicomnode.objects.outputs import (
    STUDY_OUTPUTS,
    ClassifiedImage,
    OutputRefused,
    OutputUIDs,
    StudyImages,
    StudyOutput,
    image_outputs,
    study_outputs,
)
from dicomnode.objects.sources import SourceRejected
from dicomnode.store.jobs import Jobs
from dicomnode.store.reports import report_model
from dicomnode.store.spool import Spool, SpoolFull
from dicomnode.store.tables import Job, JobState, ResultKind, utcnow
from dicomnode.uids import hash_uid
from dicomnode.work import results as kept  # the spool's headers and results, the outbox
from dicomnode.work.prepare import NotClassified, display_image

log = structlog.stdlib.get_logger("dicomnode.pipeline")


#: An OSError with one of these while *reading* the spooled file is the machine's state, not the
#: input's: the job waits and is retried (see `Pipeline._defer`). Any OSError while *writing*
#: results is, since the node built those bytes itself.
_TRANSIENT_READ_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR}


class ReportDeferred(Exception):
    """A study report could not be written (disk full, …); claim it again after `retry_after`."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"report deferred for {retry_after:.0f} s")
        self.retry_after = retry_after


def resource_cause(exc: OSError) -> str:
    """A short, PHI-free name for why a write failed: `min_free_mb`, `ENOSPC`, `EIO`, …."""
    if isinstance(exc, SpoolFull):
        return "min_free_mb"
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


class Pipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        jobs: Jobs,
        spool: Spool,
        classifier: Classifier,
        metrics: Metrics,
        on_result: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.on_result = on_result  # wakes the outbox: a result is ready to deliver
        self.jobs = jobs
        self.spool = spool
        self.classifier = classifier
        self.metrics = metrics
        self.uids = OutputUIDs(root=settings.node.uid_root, model_version=classifier.card.version)
        self.salt = settings.node.log_salt
        self.destinations = settings.destinations
        wanted = settings.model.decode_min_size
        # Decode only what the model and the overlay need (0: always full resolution).
        self.decode_min_size = max(wanted, classifier.card.input_size) if wanted else 0
        self.retry_initial = settings.node.resource_retry_initial_seconds
        self.retry_max = settings.node.resource_retry_max_seconds
        #: Study UID → consecutive report write failures (backoff; forgotten on restart).
        self._report_failures: dict[str, int] = {}
        #: Batches in hand across the worker threads: with more than one, each is classified
        #: on one core (`Backend.run(busy=True)`) instead of all cores for each in turn.
        self._in_hand = 0
        self._in_hand_lock = threading.Lock()

    # --- one image ----------------------------------------------------------------------------

    def process(self, job: Job) -> JobState:
        """Run one claimed job to a terminal state and record it. Never raises for bad input."""
        return self.process_batch([job])[0]

    def process_batch(self, jobs: Sequence[Job]) -> list[JobState]:
        """Run claimed jobs to terminal states, classifying their images in one forward pass.

        Each job is prepared (read, eligibility, preprocess) and completed (SC, record) on its
        own, so one bad image never fails the others.
        """
        with self._in_hand_lock:
            self._in_hand += 1
        try:
            return self._process_batch(jobs)
        finally:
            with self._in_hand_lock:
                self._in_hand -= 1

    def _process_batch(self, jobs: Sequence[Job]) -> list[JobState]:
        prepared: list[tuple[Job, Dataset, np.ndarray, float]] = []
        states: dict[int, JobState] = {}
        for job in jobs:
            assert job.id is not None
            outcome = self._prepare(job)
            if isinstance(outcome, JobState):
                states[job.id] = outcome
            else:
                prepared.append((job, *outcome))
        if prepared:
            started = time.perf_counter()
            predictions = self.classifier.predict_batch(
                [image for _, _, image, _ in prepared], busy=self._in_hand > 1
            )
            inference_ms = (time.perf_counter() - started) * 1000 / len(prepared)
            for (job, ds, image, preprocess_ms), prediction in zip(
                prepared, predictions, strict=True
            ):
                self.metrics.inference_seconds.observe(inference_ms / 1000)
                assert job.id is not None
                states[job.id] = self._complete(
                    job, ds, image, prediction, preprocess_ms=preprocess_ms,
                    inference_ms=inference_ms,
                )  # fmt: skip
        return [states[job.id] for job in jobs if job.id is not None]

    @summarised("job")
    def _prepare(self, job: Job) -> JobState | tuple[Dataset, np.ndarray, float]:
        """(dataset, display image, preprocess ms), or the terminal state it ended in."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            job_id=job.id, study=hash_uid(job.study_instance_uid, self.salt)
        )
        try:
            ds = dcmread(self.spool.path(job.spool_path))
        except FileNotFoundError:
            return self._finish(job, JobState.FAILED, reason("spooled_missing"))
        except (OSError, *READ_ERRORS) as exc:
            if isinstance(exc, OSError) and exc.errno in _TRANSIENT_READ_ERRNOS:
                return self._defer(job, exc, doing="spooled file cannot be read")
            unreadable = reason("unreadable_dataset", error=type(exc).__name__)
            return self._finish(job, JobState.FAILED, unreadable)
        started = time.perf_counter()
        image = display_image(ds, uid_root=self.settings.node.uid_root,
                              min_image_size=self.classifier.card.min_image_size,
                              decode_min_size=self.decode_min_size)  # fmt: skip
        if isinstance(image, NotClassified):
            if image.state == JobState.SKIPPED:
                self.metrics.skipped.inc()
            return self._finish(job, image.state, image.reason)
        return ds, image, (time.perf_counter() - started) * 1000

    @summarised("job")
    def _complete(
        self,
        job: Job,
        ds: Dataset,
        image: np.ndarray,
        prediction: Prediction,
        *,
        preprocess_ms: float,
        inference_ms: float,
    ) -> JobState:
        assert job.id is not None
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            job_id=job.id, study=hash_uid(job.study_instance_uid, self.salt)
        )
        classified = ClassifiedImage(source=ds, image=image, prediction=prediction,
                                     sop_instance_uid=job.sop_instance_uid,
                                     study_instance_uid=job.study_instance_uid)  # fmt: skip
        try:
            built = image_outputs(classified, card=self.classifier.card, uids=self.uids,
                                  language=self.settings.outputs.language)  # fmt: skip
        except OutputRefused as exc:
            cause = exc.cause
            log.warning(f"{exc.output.noun} not built", error=type(cause).__name__,
                        exc_info=None if isinstance(cause, SourceRejected) else cause)  # fmt: skip
            return self._finish(job, JobState.FAILED, reason("classified_but", reason=exc.reason),
                                prediction=prediction, preprocess_ms=preprocess_ms,
                                inference_ms=inference_ms)  # fmt: skip
        try:
            kept.write_header(ds, spool=self.spool, regions=prediction.regions)
            for output, result in built:
                self._store_result(result, kind=ResultKind(output.kind), job_id=job.id, version=1)
        except OSError as exc:
            # The image was acknowledged and is fine: the disk is not. Wait, never fail.
            return self._defer(job, exc, doing="results cannot be written")
        self.metrics.classified.inc()
        return self._finish(job, JobState.CLASSIFIED, None, prediction=prediction,
                            preprocess_ms=preprocess_ms, inference_ms=inference_ms)  # fmt: skip

    def _finish(
        self,
        job: Job,
        state: JobState,
        reason: str | None,
        *,
        prediction: Prediction | None = None,
        preprocess_ms: float | None = None,
        inference_ms: float | None = None,
    ) -> JobState:
        assert job.id is not None
        kept = self.jobs.finish(
            job.id,
            state=state,
            owner=job.lease_owner,
            reason=reason,
            probability=prediction.probability if prediction else None,
            outcome=str(prediction.outcome) if prediction else None,
            model_version=self.classifier.card.version if prediction else None,
            model_name=self.classifier.card.name if prediction else None,
            model_trained=self.classifier.card.trained if prediction else None,
            preprocess_ms=preprocess_ms,
            inference_ms=inference_ms,
        )
        if not kept:
            # Our lease expired and another node took the job over: it records the outcome
            # (the same output UIDs), this node's is dropped.
            log.warning("job lease lost; outcome left to the node that took it over")
            return state
        if state == JobState.FAILED:
            self.metrics.failed.inc()
        log.info(
            "job finished",
            state=str(state),
            reason=reason,
            outcome=str(prediction.outcome) if prediction else None,
            probability=round(prediction.probability, 4) if prediction else None,
            model=self.classifier.card.display_name,
            preprocess_ms=round(preprocess_ms, 1) if preprocess_ms else None,
            inference_ms=round(inference_ms, 1) if inference_ms else None,
        )
        return state

    def _defer(self, job: Job, exc: OSError, *, doing: str) -> JobState:
        """Put the job back in the queue for a later attempt, with exponential backoff; its
        reason says why and when, so the wait is visible in the API."""
        assert job.id is not None
        cause = resource_cause(exc)
        attempt = max(1, job.attempts)
        delay = self.backoff(attempt)
        waiting = reason(
            "deferred", doing=doing, cause=cause, attempt=attempt, delay=f"{delay:.0f}"
        )
        kept = self.jobs.defer(job.id, owner=job.lease_owner, reason=waiting,
                               retry_at=utcnow() + timedelta(seconds=delay))  # fmt: skip
        if not kept:
            log.warning("job lease lost; outcome left to the node that took it over")
            return JobState.QUEUED
        self.metrics.deferred.labels(kind="image", cause=cause).inc()
        log.warning("job deferred: will retry", doing=doing, cause=cause, attempt=attempt,
                    retry_in_s=round(delay, 1))  # fmt: skip
        return JobState.QUEUED

    def backoff(self, attempt: int) -> float:
        return backoff_seconds(attempt, initial=self.retry_initial, maximum=self.retry_max)

    # --- one study ----------------------------------------------------------------------------

    @summarised("study report")
    def report_study(self, study_instance_uid: str, *, owner: str | None = None) -> int | None:
        """Build and queue the next SR version for a stable study; returns the version made.

        `owner`: the node holding the study's report claim (`Jobs.claim_study_report`); the
        version is recorded only while it still holds it.
        """
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(study=hash_uid(study_instance_uid, self.salt))
        study = self.jobs.study(study_instance_uid)
        classified = self.jobs.classified_jobs(study_instance_uid)
        if study is None or not classified:
            return None
        images: list[_ReportImage] = []
        for job in classified:
            header = kept.read_header(self.spool, job.sop_instance_uid)
            if header is None or job.probability is None:
                log.warning("image left out of the report: header missing", job_id=job.id)
                continue
            prediction = self._recorded_prediction(job.probability, job.sop_instance_uid)
            images.append(_ReportImage(job, header, prediction))
        if not images:
            return None
        version = study.report_version + 1
        built, left_out = self._build_report(
            study_instance_uid, version=version, images=images, previous=study.report_version
        )
        if left_out:
            self.jobs.leave_out_of_report(left_out)
            for job_id, reason in left_out.items():
                log.warning("image left out of the study report", job_id=job_id, reason=reason)
        if not built:
            # Every image is failed with its reason: the study is not due again until one is
            # retried from the API (the claim is given back now, not after the lease).
            if owner is not None:
                self.jobs.release_study_report(study_instance_uid, owner=owner)
            return None
        predictions = [image.prediction for image in images if image.job.id not in left_out]
        try:
            for output, ds in built:
                self._store_result(ds, kind=ResultKind(output.kind), job_id=None, version=version)
        except OSError as exc:
            failures = self._report_failures.get(study_instance_uid, 0) + 1
            self._report_failures[study_instance_uid] = failures
            delay = self.backoff(failures)
            cause = resource_cause(exc)
            self.metrics.deferred.labels(kind="report", cause=cause).inc()
            log.warning("study report deferred: cannot be written; will retry", cause=cause,
                        version=version, attempt=failures, retry_in_s=round(delay, 1))  # fmt: skip
            raise ReportDeferred(delay) from None
        self._report_failures.pop(study_instance_uid, None)
        top = max(p.probability for p in predictions)
        outcome = outcome_for(top, self.classifier.card)
        recorded = self.jobs.record_report(
            study_instance_uid=study_instance_uid,
            version=version,
            job_count=len(classified) - len(left_out),
            outcome=str(outcome),
            max_probability=top,
            owner=owner,
            model=report_model([i.job for i in images if i.job.id not in left_out]),
        )
        if not recorded:
            log.warning("report claim lost; version left to the node that took it over",
                        version=version)  # fmt: skip
            return None
        log.info("study reported", version=version, images=len(predictions), outcome=str(outcome),
                 probability=round(top, 4))  # fmt: skip
        return version

    def _build_report(
        self,
        study_instance_uid: str,
        *,
        version: int,
        images: Sequence[_ReportImage],
        previous: int,
    ) -> tuple[list[tuple[StudyOutput, Dataset]], dict[int, str]]:
        """The study's objects over every image they can hold, and why each other image is
        left out (by job id). An image a builder refuses never blocks the others; if none can
        be reported, there are no objects and every image has its reason."""
        study = StudyImages(
            study_instance_uid=study_instance_uid,
            sources=[image.header for image in images],
            predictions=[image.prediction for image in images],
            version=version,
        )
        earlier = {}
        for output in STUDY_OUTPUTS if previous >= 1 else ():
            uid = self.uids.instance(output, study_instance_uid, previous)
            if (found := kept.read_result(self.spool, uid)) is not None:
                earlier[output.kind] = found
        built, reasons = study_outputs(study, card=self.classifier.card, uids=self.uids,
                                       previous=earlier, on_refused=log_refusal)  # fmt: skip
        if not built:
            log.warning("study report cannot be built", images=len(images))
        return built, {  # the others are reported, or there is no report at all
            image.job.id: reason("classified_but", reason=reason("left_out", reason=reasons[index]))
            if built
            else reason("report_impossible", reason=reasons[index])
            for index, image in enumerate(images)
            if index in reasons and image.job.id is not None
        }

    def _recorded_prediction(self, probability: float, sop_instance_uid: str) -> Prediction:
        """An image's result as recorded: probability, and the regions kept with its header."""
        outcome: Outcome = outcome_for(probability, self.classifier.card)
        negative = outcome == Outcome.NEGATIVE
        regions = () if negative else kept.read_regions(self.spool, sop_instance_uid)
        return Prediction(probability=probability, outcome=outcome,
                          heatmap=np.zeros((1, 1), dtype=np.float32), regions=regions)  # fmt: skip

    # --- files --------------------------------------------------------------------------------

    def _store_result(self, ds: Dataset, *, kind: ResultKind, job_id: int | None,
                      version: int) -> None:  # fmt: skip
        kept.store_result(ds, spool=self.spool, jobs=self.jobs, kind=kind,
                          destinations=kept.destinations_taking(self.destinations, str(kind)),
                          job_id=job_id, version=version)  # fmt: skip
        self.on_result()


def log_refusal(exc: Exception) -> None:
    """The traceback behind a "details in the node log" reason (values withheld by the PHI
    filter of `logconfig`)."""
    log.warning("output builder refused a source", error=type(exc).__name__, exc_info=exc)


@dataclass(frozen=True)
class _ReportImage:
    """A classified image as the study report sees it: its job, stored header and result."""

    job: Job
    header: Dataset
    prediction: Prediction
