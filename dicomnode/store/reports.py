"""Study reports: which study is due for a report version, who builds it, what it said.

A study is due once it has been quiet for `study_stable_seconds`, all its jobs are finished, and
it has classified images the last version did not report. A node claims a due study (with a
lease, renewed while it builds) so that several nodes sharing one PostgreSQL database never build
the same version twice; a version is recorded only under the claim (fencing).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from dicomnode.store.repository import Repository
from dicomnode.store.tables import TERMINAL_JOB_STATES, Job, JobState, Study, utcnow


def report_due(study: Any, *, now: datetime, stable_seconds: float) -> Any:
    """SQL condition on `study` (the `Study` table or an alias of it): quiet for
    `stable_seconds`, all jobs finished, and new classified images since the last version."""
    unfinished = (
        select(col(Job.id))
        .where(col(Job.study_instance_uid) == study.study_instance_uid)
        .where(col(Job.state).not_in(TERMINAL_JOB_STATES))
        .exists()
    )
    classified = (
        select(func.count())
        .select_from(Job)
        .where(col(Job.study_instance_uid) == study.study_instance_uid)
        .where(col(Job.state) == JobState.CLASSIFIED)
        .scalar_subquery()
    )
    return and_(
        study.last_received_at <= now - timedelta(seconds=stable_seconds),
        ~unfinished,
        classified > study.reported_job_count,
    )


def report_model(jobs: list[Job]) -> tuple[str, str, bool] | None:
    """(name, version, trained) of the model that classified every image of a report; None
    when unknown or several (images classified before and after a model change)."""
    stamps = {(j.model_name, j.model_version, j.model_trained) for j in jobs}
    if len(stamps) != 1:
        return None
    name, version, trained = stamps.pop()
    if name is None or version is None or trained is None:
        return None
    return name, version, trained


class StudyReports(Repository):
    """The report columns of the `study` table, and the classified jobs a report holds."""

    def classified_jobs(self, study_instance_uid: str) -> list[Job]:
        with self.session() as s:
            stmt = (
                select(Job)
                .where(col(Job.study_instance_uid) == study_instance_uid)
                .where(col(Job.state) == JobState.CLASSIFIED)
                .order_by(col(Job.id))
            )
            return list(s.scalars(stmt).all())

    def study(self, study_instance_uid: str) -> Study | None:
        with self.session() as s:
            return s.get(Study, study_instance_uid)

    def record_report(
        self,
        *,
        study_instance_uid: str,
        version: int,
        job_count: int,
        outcome: str,
        max_probability: float,
        owner: str | None = None,
        model: tuple[str, str, bool] | None = None,
    ) -> bool:
        """Record report `version`. With `owner` (the claim holder), only if that node still
        holds the claim and the study is still at `version - 1`; False otherwise.

        `model`: (name, version, trained) of the model that made it (None: unknown)."""
        name, model_version, trained = model if model is not None else (None, None, None)
        stamp = {"model_name": name, "model_version": model_version, "model_trained": trained}
        if owner is not None:
            with self.session() as s:
                n = s.execute(
                    update(Study)
                    .where(col(Study.study_instance_uid) == study_instance_uid)
                    .where(col(Study.report_owner) == owner)
                    .where(col(Study.report_version) == version - 1)
                    .values(
                        report_version=version,
                        reported_job_count=job_count,
                        outcome=outcome,
                        max_probability=max_probability,
                        reported_at=utcnow(),
                        **stamp,
                        report_owner=None,
                        report_lease_expires_at=None,
                    )
                ).rowcount  # type: ignore[attr-defined]
                s.commit()
                return bool(n)
        with self.session() as s:
            study = s.get(Study, study_instance_uid)
            assert study is not None
            study.report_version = version
            study.reported_job_count = job_count
            study.outcome = outcome
            study.max_probability = max_probability
            study.reported_at = utcnow()
            for key, value in stamp.items():
                setattr(study, key, value)
            s.add(study)
            s.commit()
            return True

    def leave_out_of_report(self, reasons: dict[int, str]) -> int:
        """Fail classified jobs whose image the study report cannot hold, each with its reason
        (visible in the API and the worklist; `requeue` tries again). The study then counts
        only the images it reports, so it is not due again for the same images."""
        n = 0
        with self.session() as s:
            for job_id, reason in reasons.items():
                n += s.execute(
                    update(Job)
                    .where(col(Job.id) == job_id, col(Job.state) == JobState.CLASSIFIED)
                    .values(state=JobState.FAILED, reason=reason, finished_at=utcnow())
                ).rowcount  # type: ignore[attr-defined]
            s.commit()
        return n

    def claim_study_report(
        self, *, owner: str, lease_seconds: float, stable_seconds: float
    ) -> tuple[str, int] | None:
        """Atomically claim one study due for a report (see `report_due`) that no live node is
        reporting; returns (study UID, version to build) or None.

        The due conditions are checked again inside the UPDATE, so a study another node has just
        reported (same images) is not claimed again: one report per version, whoever received
        the images.
        """
        now = utcnow()
        picked = aliased(Study)

        def due(study: Any) -> Any:
            return and_(
                report_due(study, now=now, stable_seconds=stable_seconds),
                or_(study.report_lease_expires_at.is_(None), study.report_lease_expires_at < now),
            )

        pick = (
            select(col(picked.study_instance_uid))
            .where(due(picked))
            .order_by(col(picked.last_received_at))
            .limit(1)
        )
        if self._postgres:
            pick = pick.with_for_update(of=picked, skip_locked=True)
        stmt = (
            update(Study)
            .where(col(Study.study_instance_uid) == pick.scalar_subquery())
            .where(due(Study))
            .values(
                report_owner=owner, report_lease_expires_at=now + timedelta(seconds=lease_seconds)
            )
            .returning(col(Study.study_instance_uid), col(Study.report_version))
        )
        with self.session() as s:
            row = s.execute(stmt).first()
            s.commit()
        return (str(row[0]), int(row[1]) + 1) if row is not None else None

    def release_study_report(
        self, study_instance_uid: str, *, owner: str, retry_after: float = 0.0
    ) -> None:
        """Give up a report claim without recording a version (nothing could be built); the
        study is not claimed again, by any node, for `retry_after` seconds."""
        retry_at = utcnow() + timedelta(seconds=retry_after) if retry_after > 0 else None
        with self.session() as s:
            s.execute(
                update(Study)
                .where(col(Study.study_instance_uid) == study_instance_uid)
                .where(col(Study.report_owner) == owner)
                .values(report_owner=None, report_lease_expires_at=retry_at)
            )
            s.commit()

    def retry_study_report_now(self, study_instance_uid: str) -> bool:
        """Make a study report waiting after a failed build (`release_study_report` with a
        `retry_after`, e.g. disk full) due at once, e.g. once the disk is freed. Only a waiting
        report: no node holds its claim and its "not before" is still ahead; a live claim is
        never touched. True if it was waiting."""
        now = utcnow()
        with self.session() as s:
            n = s.execute(
                update(Study)
                .where(col(Study.study_instance_uid) == study_instance_uid)
                .where(col(Study.report_owner).is_(None))
                .where(col(Study.report_lease_expires_at) > now)
                .values(report_lease_expires_at=None)
            ).rowcount  # type: ignore[attr-defined]
            s.commit()
            return bool(n)

    # --- leases (see `Jobs.release_owned`, `Jobs.renew_leases`) ------------------------------

    def _release_reports(self, s: Session, owner: str) -> None:
        s.execute(
            update(Study)
            .where(col(Study.report_owner) == owner)
            .values(report_owner=None, report_lease_expires_at=None)
        )

    def _renew_reports(self, s: Session, owner: str, expires: datetime) -> int:
        return int(
            s.execute(
                update(Study)
                .where(col(Study.report_owner) == owner)
                .values(report_lease_expires_at=expires)
            ).rowcount  # type: ignore[attr-defined]
        )
