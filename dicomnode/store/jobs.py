"""All SQL of the node: jobs, studies, results and the delivery outbox.

Claiming is one atomic UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING, which SQLite runs under
its single writer lock and PostgreSQL under FOR UPDATE SKIP LOCKED, so no job is handed to two
workers. A claimed job carries a lease; a job whose lease expired (its worker died) is claimable
again. Study reports and deliveries are claimed the same way, so several nodes sharing one
PostgreSQL database never build the same report version or send the same result twice; a live
node renews its leases (`renew_leases`), and a write under a lost lease is refused (fencing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from dicomnode.store.durable import durable
from dicomnode.store.tables import (
    TERMINAL_JOB_STATES,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Result,
    ResultKind,
    Study,
    utcnow,
)


@dataclass(frozen=True)
class Received:
    """What the SCP knows about an instance when it commits the job row."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    body_part: str
    view_position: str
    calling_ae_title: str
    spool_path: str
    study: dict[str, str]


class Jobs:
    """Repository over the node's tables. Thread-safe: one short session per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def ping(self) -> None:
        with self.session() as s:
            s.execute(select(1)).one()

    # --- receiving --------------------------------------------------------------------------

    def exists(self, sop_instance_uid: str) -> bool:
        # Core, not the ORM: these two are on every C-STORE's path (the ORM cost ~2x the
        # SQL itself per image).
        with self.engine.connect() as conn:
            stmt = select(col(Job.id)).where(col(Job.sop_instance_uid) == sop_instance_uid)
            return conn.execute(stmt).first() is not None

    def enqueue(self, item: Received) -> tuple[int, bool]:
        """Insert the job and update its study; return (job id, created); a duplicate: False.

        Committed durably (fsync on SQLite): the caller acknowledges the image after this."""
        now = utcnow()
        insert = pg_insert if self._postgres else sqlite_insert
        with durable(), self.engine.begin() as conn:
            job_id = conn.execute(
                insert(Job)
                .values(
                    sop_instance_uid=item.sop_instance_uid,
                    sop_class_uid=item.sop_class_uid,
                    study_instance_uid=item.study_instance_uid,
                    series_instance_uid=item.series_instance_uid,
                    modality=item.modality,
                    body_part=item.body_part,
                    view_position=item.view_position,
                    calling_ae_title=item.calling_ae_title,
                    spool_path=item.spool_path,
                    received_at=now,
                )
                .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
                .returning(col(Job.id))
            ).scalar()
            if job_id is None:  # a duplicate (possibly stored concurrently): its job's id
                existing = conn.execute(
                    select(col(Job.id)).where(col(Job.sop_instance_uid) == item.sop_instance_uid)
                ).scalar_one()
                assert existing is not None  # a primary key
                return int(existing), False
            self._touch_study(conn, item, now)
        return int(job_id), True

    def _touch_study(self, conn: Connection, item: Received, now: datetime) -> None:
        # Insert-if-absent, then update under a row lock: images of one new study arriving at
        # several associations (or nodes) at once must neither fail nor lose an update.
        insert = pg_insert if self._postgres else sqlite_insert
        conn.execute(
            insert(Study)
            .values(
                study_instance_uid=item.study_instance_uid,
                first_received_at=now,
                last_received_at=now,
                **item.study,
            )
            .on_conflict_do_nothing(index_elements=["study_instance_uid"])
        )
        where = col(Study.study_instance_uid) == item.study_instance_uid
        modalities, body_part = conn.execute(
            select(col(Study.modalities), col(Study.body_part)).where(where).with_for_update()
        ).one()
        merged = set(filter(None, modalities.split(","))) | {item.modality}
        conn.execute(
            update(Study)
            .where(where)
            .values(
                modalities=",".join(sorted(m for m in merged if m)),
                body_part=body_part or item.body_part,
                last_received_at=now,
            )
        )

    # --- working ----------------------------------------------------------------------------

    def claim(self, *, owner: str, lease_seconds: float) -> Job | None:
        """Atomically take the oldest queued job (or one whose lease expired)."""
        claimed = self.claim_batch(owner=owner, lease_seconds=lease_seconds, limit=1)
        return claimed[0] if claimed else None

    def claim_batch(self, *, owner: str, lease_seconds: float, limit: int) -> list[Job]:
        """Atomically take up to `limit` of the oldest claimable jobs, oldest first.

        Fewer (or none) when fewer are queued, so a shallow queue gives batches of one.
        """
        now = utcnow()
        claimable = or_(
            # A queued job's lease_expires_at, when set, is its "not before" (see `defer`).
            and_(
                col(Job.state) == JobState.QUEUED,
                or_(col(Job.lease_expires_at).is_(None), col(Job.lease_expires_at) <= now),
            ),
            and_(col(Job.state) == JobState.PROCESSING, col(Job.lease_expires_at) < now),
        )
        pick = select(col(Job.id)).where(claimable).order_by(col(Job.id)).limit(max(1, limit))
        if self._postgres:
            pick = pick.with_for_update(skip_locked=True)
        # A MATERIALIZED CTE is evaluated once: PostgreSQL may otherwise run an
        # `IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` per row and claim every queued job.
        picked = pick.cte("picked").prefix_with("MATERIALIZED")
        stmt = (
            update(Job)
            .where(col(Job.id).in_(select(picked.c.id)))
            .where(claimable)
            .values(
                state=JobState.PROCESSING,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=now,
                attempts=Job.attempts + 1,
            )
            .returning(col(Job.id))
        )
        with self.session() as s:
            ids = sorted(row[0] for row in s.execute(stmt))
            s.commit()
            if not ids:
                return []
            found = {job.id: job for job in s.scalars(select(Job).where(col(Job.id).in_(ids)))}
            return [found[i] for i in ids if i in found]

    def finish(
        self,
        job_id: int,
        *,
        state: JobState,
        owner: str | None = None,
        reason: str | None = None,
        probability: float | None = None,
        outcome: str | None = None,
        model_version: str | None = None,
        preprocess_ms: float | None = None,
        inference_ms: float | None = None,
    ) -> bool:
        """Record a job's outcome. With `owner`, only while that owner still holds the lease
        (False: the lease was lost to another node, which now owns the job)."""
        stmt = update(Job).where(col(Job.id) == job_id)
        if owner is not None:
            stmt = stmt.where(col(Job.lease_owner) == owner, col(Job.state) == JobState.PROCESSING)
        with self.session() as s:
            n = s.execute(
                stmt.values(
                    state=state,
                    reason=reason,
                    probability=probability,
                    outcome=outcome,
                    model_version=model_version,
                    preprocess_ms=preprocess_ms,
                    inference_ms=inference_ms,
                    finished_at=utcnow(),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            ).rowcount  # type: ignore[attr-defined]
            s.commit()
            return bool(n)

    def defer(self, job_id: int, *, owner: str | None, reason: str, retry_at: datetime) -> bool:
        """Put a claimed job back in the queue, not to be claimed before `retry_at`: it could
        not finish for want of a resource (disk full), not because of its input. For a queued
        job `lease_expires_at` holds that time (no schema change). With `owner`, only while
        that owner holds the lease; True if the job was put back."""
        stmt = update(Job).where(col(Job.id) == job_id, col(Job.state) == JobState.PROCESSING)
        if owner is not None:
            stmt = stmt.where(col(Job.lease_owner) == owner)
        with self.session() as s:
            n = s.execute(
                stmt.values(
                    state=JobState.QUEUED,
                    reason=reason,
                    lease_owner=None,
                    lease_expires_at=retry_at,
                )
            ).rowcount  # type: ignore[attr-defined]
            s.commit()
            return bool(n)

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

    def requeue(self, job_id: int) -> bool:
        """Put a failed (or stuck) job back in the queue; True if it was requeued."""
        with self.session() as s:
            n = s.execute(
                update(Job)
                .where(col(Job.id) == job_id)
                .where(col(Job.state).in_([JobState.FAILED, JobState.PROCESSING]))
                .values(state=JobState.QUEUED, reason=None, lease_owner=None, lease_expires_at=None)
            ).rowcount  # type: ignore[attr-defined]
            s.commit()
            return bool(n)

    def retry_now(self, job_id: int) -> bool:
        """Make a job waiting for a resource (`defer`) due at once, e.g. once the disk is freed.
        Its attempts are kept, so a further deferral backs off from where it was; its
        `waiting: …` reason (which names the next attempt's time) is cleared. True if it was
        waiting."""
        with self.session() as s:
            n = s.execute(
                update(Job)
                .where(col(Job.id) == job_id, col(Job.state) == JobState.QUEUED)
                .where(col(Job.lease_expires_at).is_not(None))
                .values(reason=None, lease_expires_at=None)
            ).rowcount  # type: ignore[attr-defined]
            s.commit()
            return bool(n)

    def release_owned(self, owner: str) -> int:
        """At start-up or shutdown: jobs, report claims and deliveries this node held are
        released at once (not after their lease); returns the number of jobs requeued."""
        with self.session() as s:
            n = s.execute(
                update(Job)
                .where(col(Job.state) == JobState.PROCESSING, col(Job.lease_owner) == owner)
                .values(state=JobState.QUEUED, lease_owner=None, lease_expires_at=None)
            ).rowcount  # type: ignore[attr-defined]
            s.execute(
                update(Study)
                .where(col(Study.report_owner) == owner)
                .values(report_owner=None, report_lease_expires_at=None)
            )
            s.execute(
                update(Delivery)
                .where(col(Delivery.lease_owner) == owner)
                .where(col(Delivery.state) == DeliveryState.PENDING)
                .values(lease_owner=None, next_attempt_at=utcnow())
            )
            s.commit()
            return int(n)

    def queue_depth(self) -> int:
        with self.session() as s:
            stmt = select(func.count()).select_from(Job).where(col(Job.state) == JobState.QUEUED)
            return int(s.execute(stmt).scalar_one())

    # --- studies and reports ----------------------------------------------------------------

    def studies_to_report(self, *, stable_seconds: float) -> list[str]:
        """Studies quiet for `stable_seconds`, all jobs finished, and new classified images since
        the last report version."""
        cutoff = utcnow() - timedelta(seconds=stable_seconds)
        unfinished = (
            select(col(Job.id))
            .where(col(Job.study_instance_uid) == Study.study_instance_uid)
            .where(col(Job.state).not_in(TERMINAL_JOB_STATES))
            .exists()
        )
        classified = (
            select(func.count())
            .select_from(Job)
            .where(col(Job.study_instance_uid) == Study.study_instance_uid)
            .where(col(Job.state) == JobState.CLASSIFIED)
            .scalar_subquery()
        )
        stmt = (
            select(col(Study.study_instance_uid))
            .where(col(Study.last_received_at) <= cutoff)
            .where(~unfinished)
            .where(classified > Study.reported_job_count)
            .order_by(col(Study.last_received_at))
        )
        with self.session() as s:
            return [row[0] for row in s.execute(stmt)]

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
    ) -> bool:
        """Record report `version`. With `owner` (the claim holder), only if that node still
        holds the claim and the study is still at `version - 1`; False otherwise."""
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
            s.add(study)
            s.commit()
            return True

    # --- results and the outbox -------------------------------------------------------------

    def add_result(
        self,
        *,
        kind: ResultKind,
        sop_instance_uid: str,
        study_instance_uid: str,
        path: str,
        destinations: Iterable[str],
        job_id: int | None = None,
        version: int = 1,
    ) -> Result:
        """Record a result and queue it for every destination. Idempotent by SOP Instance UID."""
        with self.session() as s:
            result = s.scalars(
                select(Result).where(col(Result.sop_instance_uid) == sop_instance_uid)
            ).first()
            if result is None:
                result = Result(
                    kind=kind,
                    sop_instance_uid=sop_instance_uid,
                    study_instance_uid=study_instance_uid,
                    job_id=job_id,
                    version=version,
                    path=path,
                )
                s.add(result)
                s.flush()
            assert result.id is not None
            have = {
                row[0]
                for row in s.execute(
                    select(col(Delivery.destination)).where(col(Delivery.result_id) == result.id)
                )
            }
            for name in destinations:
                if name not in have:
                    s.add(Delivery(result_id=result.id, destination=name))
            s.commit()
            return result

    def results_for_study(
        self, study_instance_uid: str, kind: ResultKind | None = None
    ) -> list[Result]:
        with self.session() as s:
            stmt = select(Result).where(col(Result.study_instance_uid) == study_instance_uid)
            if kind is not None:
                stmt = stmt.where(col(Result.kind) == kind)
            return [r[0] for r in s.execute(stmt.order_by(col(Result.id)))]

    def due_deliveries(self, *, limit: int = 100) -> list[tuple[Delivery, Result]]:
        now = utcnow()
        stmt = (
            select(Delivery, Result)
            .join(Result, col(Result.id) == Delivery.result_id)
            .where(col(Delivery.state) == DeliveryState.PENDING)
            .where(col(Delivery.next_attempt_at) <= now)
            .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
            .limit(limit)
        )
        with self.session() as s:
            return [(d, r) for d, r in s.execute(stmt)]

    def delivery_succeeded(
        self, delivery_id: int, *, status: int, at: datetime | None = None
    ) -> None:
        """Record a delivery as done; `at`: when the peer confirmed it (default: now)."""
        self._update_delivery(
            delivery_id,
            state=DeliveryState.DELIVERED,
            lease_owner=None,
            last_status=status,
            last_error=None,
            delivered_at=at or utcnow(),
            attempts=Delivery.attempts + 1,
        )

    def delivery_failed(
        self, delivery_id: int, *, status: int | None, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed attempt; `retry_at=None` gives up (state failed)."""
        self._update_delivery(
            delivery_id,
            state=DeliveryState.PENDING if retry_at else DeliveryState.FAILED,
            lease_owner=None,
            last_status=status,
            last_error=error[:500],
            next_attempt_at=retry_at or utcnow(),
            attempts=Delivery.attempts + 1,
        )

    def retry_delivery(self, delivery_id: int) -> bool:
        with self.session() as s:
            n = s.execute(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id, col(Delivery.state) == DeliveryState.FAILED)
                .values(state=DeliveryState.PENDING, next_attempt_at=utcnow())
            ).rowcount  # type: ignore[attr-defined]
            s.commit()
            return bool(n)

    def _update_delivery(self, delivery_id: int, **values: Any) -> None:
        with self.session() as s:
            s.execute(update(Delivery).where(col(Delivery.id) == delivery_id).values(**values))
            s.commit()

    def deliveries_for(self, result_ids: Sequence[int]) -> list[Delivery]:
        if not result_ids:
            return []
        with self.session() as s:
            stmt = select(Delivery).where(col(Delivery.result_id).in_(result_ids))
            return [d[0] for d in s.execute(stmt.order_by(col(Delivery.id)))]

    # --- listing for the API ----------------------------------------------------------------

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        study_instance_uid: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        stmt = select(Job)
        if state is not None:
            stmt = stmt.where(col(Job.state) == state)
        if study_instance_uid is not None:
            stmt = stmt.where(col(Job.study_instance_uid) == study_instance_uid)
        stmt = stmt.order_by(col(Job.id).desc()).limit(limit).offset(offset)
        with self.session() as s:
            return [j[0] for j in s.execute(stmt)]

    def get_job(self, job_id: int) -> Job | None:
        with self.session() as s:
            return s.get(Job, job_id)

    def jobs_for_study(self, study_instance_uid: str) -> list[Job]:
        return self.list_jobs(study_instance_uid=study_instance_uid, limit=10_000)

    # --- scale-out: leases on reports and deliveries ----------------------------------------

    def renew_leases(self, *, owner: str, lease_seconds: float) -> int:
        """Heartbeat of a live node: extend every lease it still holds (jobs, report claims,
        deliveries being sent). A lease already taken over by another node is not touched."""
        expires = utcnow() + timedelta(seconds=lease_seconds)
        with self.session() as s:
            n = s.execute(
                update(Job)
                .where(col(Job.state) == JobState.PROCESSING, col(Job.lease_owner) == owner)
                .values(lease_expires_at=expires)
            ).rowcount  # type: ignore[attr-defined]
            n += s.execute(
                update(Study)
                .where(col(Study.report_owner) == owner)
                .values(report_lease_expires_at=expires)
            ).rowcount  # type: ignore[attr-defined]
            n += s.execute(
                update(Delivery)
                .where(col(Delivery.lease_owner) == owner)
                .where(col(Delivery.state) == DeliveryState.PENDING)
                .values(next_attempt_at=expires)
            ).rowcount  # type: ignore[attr-defined]
            s.commit()
            return int(n)

    def claim_study_report(
        self, *, owner: str, lease_seconds: float, stable_seconds: float
    ) -> tuple[str, int] | None:
        """Atomically claim one study due for a report (see `studies_to_report`) that no live
        node is reporting; returns (study UID, version to build) or None.

        The due conditions are checked again inside the UPDATE, so a study another node has just
        reported (same images) is not claimed again: one report per version, whoever received
        the images.
        """
        now = utcnow()
        picked = aliased(Study)

        def due(study: Any) -> Any:
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

    def claim_deliveries(
        self, *, owner: str, lease_seconds: float, limit: int = 100
    ) -> list[tuple[Delivery, Result]]:
        """Atomically take due deliveries for sending: their next attempt moves to the lease
        expiry, so no other node sends them meanwhile, and a dead sender's return."""
        now = utcnow()
        due = and_(
            col(Delivery.state) == DeliveryState.PENDING, col(Delivery.next_attempt_at) <= now
        )
        pick = (
            select(col(Delivery.id))
            .where(due)
            .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
            .limit(limit)
        )
        if self._postgres:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            update(Delivery)
            .where(col(Delivery.id).in_(pick.scalar_subquery()))
            .where(due)
            .values(lease_owner=owner, next_attempt_at=now + timedelta(seconds=lease_seconds))
            .returning(col(Delivery.id))
        )
        with self.session() as s:
            ids = [row[0] for row in s.execute(stmt)]
            s.commit()
            if not ids:
                return []
            rows = s.execute(
                select(Delivery, Result)
                .join(Result, col(Result.id) == Delivery.result_id)
                .where(col(Delivery.id).in_(ids))
                .order_by(col(Delivery.id))
            )
            return [(d, r) for d, r in rows]
