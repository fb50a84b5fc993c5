"""The job queue: jobs created on receipt, claimed by workers, moved through their states, listed.

Claiming is one atomic UPDATE … WHERE id = (SELECT … LIMIT n) RETURNING, which SQLite runs under
its single writer lock and PostgreSQL under FOR UPDATE SKIP LOCKED, so no job is handed to two
workers. A claimed job carries a lease; a job whose lease expired (its worker died) is claimable
again, and a write under a lost lease is refused (fencing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from dicomnode.durable import durable
from dicomnode.store.repository import Repository
from dicomnode.store.tables import Job, JobState, Study, utcnow


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
    #: Made by this node (its SR or SC sent back): counts neither as a modality nor body part
    #: of the study (the one rule `/api/studies/{uid}` and the worklist share).
    own_output: bool = False


class Queue(Repository):
    """The `job` table (and the study row each received image updates)."""

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
        merged = set(filter(None, modalities.split(",")))
        if not item.own_output:
            merged.add(item.modality)
        conn.execute(
            update(Study)
            .where(where)
            .values(
                modalities=",".join(sorted(m for m in merged if m)),
                body_part=body_part or ("" if item.own_output else item.body_part),
                last_received_at=now,
            )
        )

    # --- working ----------------------------------------------------------------------------

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
        model_name: str | None = None,
        model_trained: bool | None = None,
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
                    model_name=model_name,
                    model_trained=model_trained,
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

    def queue_depth(self) -> int:
        with self.session() as s:
            stmt = select(func.count()).select_from(Job).where(col(Job.state) == JobState.QUEUED)
            return int(s.execute(stmt).scalar_one())

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

    # --- leases (see `Jobs.release_owned`, `Jobs.renew_leases`) ------------------------------

    def _release_jobs(self, s: Session, owner: str) -> int:
        return int(
            s.execute(
                update(Job)
                .where(col(Job.state) == JobState.PROCESSING, col(Job.lease_owner) == owner)
                .values(state=JobState.QUEUED, lease_owner=None, lease_expires_at=None)
            ).rowcount  # type: ignore[attr-defined]
        )

    def _renew_jobs(self, s: Session, owner: str, expires: datetime) -> int:
        return int(
            s.execute(
                update(Job)
                .where(col(Job.state) == JobState.PROCESSING, col(Job.lease_owner) == owner)
                .values(lease_expires_at=expires)
            ).rowcount  # type: ignore[attr-defined]
        )
