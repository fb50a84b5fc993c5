"""Orchestration of one job and of one study report, with every dependency passed in.

job:    spool file → eligible? → preprocess → classify (+ heatmap) → SC → outbox → record
study:  quiet for study_stable_seconds → SR over all classified images (new version when late
        images arrive, naming the previous one) → outbox → record
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from io import BytesIO

import numpy as np
import structlog
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from dicomnode import preprocess
from dicomnode.classifier import Classifier, Outcome, Prediction, outcome_for
from dicomnode.config import Settings
from dicomnode.jobs import Jobs
from dicomnode.library_warnings import summarised
from dicomnode.metrics import Metrics
from dicomnode.sc import build_sc
from dicomnode.sources import SourceRejected, build_leaving_out, describe_failure
from dicomnode.spool import Spool, SpoolFull
from dicomnode.sr import build_sr
from dicomnode.tables import Job, JobState, ResultKind, utcnow
from dicomnode.uids import derive_uid, hash_uid

log = structlog.stdlib.get_logger("dicomnode.pipeline")

_READ_ERRORS = (InvalidDicomError, ValueError, KeyError, TypeError, EOFError, OSError,
                AttributeError, IndexError, OverflowError, NotImplementedError)  # fmt: skip


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


@dataclass(frozen=True)
class OutputUIDs:
    """Every UID the node writes is derived, so repeating a job repeats its objects exactly."""

    root: str
    model_version: str

    def sc_series(self, study_uid: str) -> str:
        return derive_uid(self.root, study_uid, self.model_version, "sc-series")

    def sc_instance(self, source_sop_uid: str) -> str:
        return derive_uid(self.root, source_sop_uid, self.model_version, "sc")

    def sr_series(self, study_uid: str) -> str:
        return derive_uid(self.root, study_uid, self.model_version, "sr-series")

    def sr_instance(self, study_uid: str, version: int) -> str:
        return derive_uid(self.root, study_uid, self.model_version, "sr", str(version))


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
        self.uids = OutputUIDs(settings.node.uid_root, classifier.card.version)
        self.salt = settings.node.log_salt
        self.destinations = [d.name for d in settings.destinations]
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
            return self._finish(job, JobState.FAILED, "spooled file is missing")
        except OSError as exc:
            if exc.errno in _TRANSIENT_READ_ERRNOS:
                return self._defer(job, exc, doing="spooled file cannot be read")
            return self._finish(job, JobState.FAILED, f"cannot read dataset ({type(exc).__name__})")
        except _READ_ERRORS as exc:
            return self._finish(job, JobState.FAILED, f"cannot read dataset ({type(exc).__name__})")
        reason = preprocess.eligibility(
            ds,
            uid_root=self.settings.node.uid_root,
            min_size=self.classifier.card.min_image_size,
        )
        if reason is not None:
            self.metrics.skipped.inc()
            return self._finish(job, JobState.SKIPPED, reason)
        started = time.perf_counter()
        try:
            image = preprocess.to_grayscale(ds, min_size=self.decode_min_size)
        except preprocess.NotClassifiable as exc:
            return self._finish(job, JobState.FAILED, exc.reason)
        except _READ_ERRORS as exc:
            return self._finish(
                job, JobState.FAILED, f"pixel data cannot be decoded ({type(exc).__name__})"
            )
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
        try:
            sc = build_sc(
                source=ds,
                image=image,
                prediction=prediction,
                card=self.classifier.card,
                sop_instance_uid=self.uids.sc_instance(job.sop_instance_uid),
                series_instance_uid=self.uids.sc_series(job.study_instance_uid),
                instance_number=_instance_number(ds),
            )
        except Exception as exc:  # the builder refused this source: explained, not a crash
            reason = f"classified, but the overlay cannot be built: {describe_failure(exc)}"
            log.warning("overlay not built", error=type(exc).__name__,
                        exc_info=None if isinstance(exc, SourceRejected) else exc)  # fmt: skip
            return self._finish(job, JobState.FAILED, reason, prediction=prediction,
                                preprocess_ms=preprocess_ms, inference_ms=inference_ms)  # fmt: skip
        try:
            self._write_header(ds)
            self._store_result(sc, kind=ResultKind.SC, job_id=job.id, version=1)
        except OSError as exc:
            # The image was acknowledged and is fine: the disk is not. Wait, never fail.
            return self._defer(job, exc, doing="results cannot be written")
        self.metrics.classified.inc()
        return self._finish(
            job,
            JobState.CLASSIFIED,
            None,
            prediction=prediction,
            preprocess_ms=preprocess_ms,
            inference_ms=inference_ms,
        )

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
        reason = f"waiting: {doing} ({cause}); attempt {attempt}, next in {delay:.0f} s"
        kept = self.jobs.defer(job.id, owner=job.lease_owner, reason=reason,
                               retry_at=utcnow() + timedelta(seconds=delay))  # fmt: skip
        if not kept:
            log.warning("job lease lost; outcome left to the node that took it over")
            return JobState.QUEUED
        self.metrics.deferred.labels(kind="image", cause=cause).inc()
        log.warning("job deferred: will retry", doing=doing, cause=cause, attempt=attempt,
                    retry_in_s=round(delay, 1))  # fmt: skip
        return JobState.QUEUED

    def backoff(self, attempt: int) -> float:
        return float(min(self.retry_max, self.retry_initial * 2 ** min(attempt - 1, 30)))

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
            header = self._read_header(job.sop_instance_uid)
            if header is None or job.probability is None:
                log.warning("image left out of the report: header missing", job_id=job.id)
                continue
            images.append(_ReportImage(job, header, self._recorded_prediction(job.probability)))
        if not images:
            return None
        version = study.report_version + 1
        previous = self._previous_report(study_instance_uid, study.report_version)
        sr, left_out = self._build_report(
            study_instance_uid, version=version, images=images, previous=previous
        )
        if left_out:
            self.jobs.leave_out_of_report(left_out)
            for job_id, reason in left_out.items():
                log.warning("image left out of the study report", job_id=job_id, reason=reason)
        if sr is None:
            # Every image is failed with its reason: the study is not due again until one is
            # retried from the API (the claim is given back now, not after the lease).
            if owner is not None:
                self.jobs.release_study_report(study_instance_uid, owner=owner)
            return None
        predictions = [image.prediction for image in images if image.job.id not in left_out]
        try:
            self._store_result(sr, kind=ResultKind.SR, job_id=None, version=version)
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
        previous: Dataset | None,
    ) -> tuple[Dataset | None, dict[int, str]]:
        """The SR over every image it can hold, and why each other image is left out (by job
        id). An image the builder refuses never blocks the others; if none can be reported,
        there is no SR and every image has its reason."""

        def build(members: Sequence[_ReportImage]) -> Dataset:
            return build_sr(
                sources=[m.header for m in members],
                predictions=[m.prediction for m in members],
                card=self.classifier.card,
                sop_instance_uid=self.uids.sr_instance(study_instance_uid, version),
                series_instance_uid=self.uids.sr_series(study_instance_uid),
                instance_number=version,
                previous_versions=[previous] if previous is not None else [],
                uid_root=self.settings.node.uid_root,
            )

        sr, reasons = build_leaving_out(images, build, on_refused=log_refusal)
        if sr is None:
            log.warning("study report cannot be built", images=len(images))
        prefix = _LEFT_OUT if sr is not None else "study report cannot be built: "
        return sr, {
            image.job.id: prefix + reasons[index]
            for index, image in enumerate(images)
            if index in reasons and image.job.id is not None
        }

    def _recorded_prediction(self, probability: float) -> Prediction:
        import numpy as np

        outcome: Outcome = outcome_for(probability, self.classifier.card)
        return Prediction(probability=probability, outcome=outcome,
                          heatmap=np.zeros((1, 1), dtype=np.float32))  # fmt: skip

    def _previous_report(self, study_instance_uid: str, version: int) -> Dataset | None:
        if version < 1:
            return None
        uid = self.uids.sr_instance(study_instance_uid, version)
        path = self.spool.path(self.spool.relative_path(uid, kind="out"))
        try:
            return dcmread(path, stop_before_pixels=True)
        except (FileNotFoundError, *_READ_ERRORS):
            return None

    # --- files --------------------------------------------------------------------------------

    def _store_result(self, ds: Dataset, *, kind: ResultKind, job_id: int | None,
                      version: int) -> None:  # fmt: skip
        uid = str(ds.SOPInstanceUID)
        relative = self.spool.relative_path(uid, kind="out")
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        # Results respect min_free_mb as receiving does: the reserve is the database's.
        self.spool.check_space(buffer.getbuffer().nbytes)
        self.spool.write_bytes(relative, buffer.getbuffer())
        self.jobs.add_result(
            kind=kind,
            sop_instance_uid=uid,
            study_instance_uid=str(ds.StudyInstanceUID),
            path=relative,
            destinations=self.destinations,
            job_id=job_id,
            version=version,
        )
        self.on_result()

    def _write_header(self, ds: Dataset) -> None:
        """Keep the source's header (no pixels): the SR needs it after the image is deleted.
        An element pydicom cannot decode (e.g. a damaged VR) is left out, as the outputs
        leave it out (`sources.output_header`): it must not fail an image already classified."""
        header = Dataset()
        for tag in list(ds.keys()):  # tags: iterating a Dataset decodes every element
            # Command (0000) and file meta (0002) elements have no place in a dataset body: a
            # sender's stray one made the writer raise and the job crash.
            if tag >= 0x7FE00010 or tag.group < 0x0008:
                continue
            try:
                header.add(ds[tag])
            except _READ_ERRORS:
                continue
        header.file_meta = ds.file_meta
        buffer = BytesIO()
        header.save_as(buffer, enforce_file_format=False)
        relative = self.spool.relative_path(str(ds.SOPInstanceUID), kind="hdr")
        self.spool.check_space(buffer.getbuffer().nbytes)
        self.spool.write_bytes(relative, buffer.getbuffer())

    def _read_header(self, sop_instance_uid: str) -> Dataset | None:
        relative = self.spool.relative_path(sop_instance_uid, kind="hdr")
        try:
            return dcmread(self.spool.path(relative), force=True)
        except (FileNotFoundError, *_READ_ERRORS):
            return None


_LEFT_OUT = "classified, but left out of the study report: "


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


def _instance_number(ds: Dataset) -> int:
    try:
        value = int(ds.get("InstanceNumber") or 1)
    except _READ_ERRORS:  # absent, malformed, or an element pydicom cannot decode
        return 1
    return value if 0 < value < 2**31 else 1
