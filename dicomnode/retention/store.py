"""The database edge of retention: its SQL (snapshot, marks, deletes).

Kept out of `jobs.py` so the retention run's two-phase bookkeeping (the `retention_mark` table)
lives next to the only code that uses it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col

from dicomnode.audit import AuditEvent
from dicomnode.durable import durable
from dicomnode.retention.policy import (
    Deletion,
    DeliveryRow,
    ImageRow,
    Mark,
    ResultRow,
    StudyRow,
)
from dicomnode.store.spool import REGIONS_SUFFIX, Spool
from dicomnode.store.tables import Delivery, Job, Result, Study, utcnow


class RetentionMark(SQLModel, table=True):
    """A deletion a run has started: its files may be gone, its rows not yet changed."""

    __tablename__ = "retention_mark"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    payload: str  # Deletion.to_json()
    created_at: datetime = Field(default_factory=utcnow)


class SqlRetentionStore:
    def __init__(self, engine: Engine, spool: Spool) -> None:
        self.engine = engine
        self.spool = spool

    def pending_marks(self) -> list[Mark]:
        with Session(self.engine) as s:
            rows = s.scalars(select(RetentionMark).order_by(col(RetentionMark.id))).all()
            return [Mark(int(r.id or 0), Deletion.from_json(json.loads(r.payload))) for r in rows]

    def snapshot(self) -> list[StudyRow]:
        with Session(self.engine) as s:
            deliveries: dict[int, list[DeliveryRow]] = defaultdict(list)
            for result_id, state, delivered_at in s.execute(
                select(col(Delivery.result_id), col(Delivery.state), col(Delivery.delivered_at))
            ):
                deliveries[result_id].append(DeliveryRow(str(state), delivered_at))
            results: dict[str, list[ResultRow]] = defaultdict(list)
            for rid, study, path, created_at, job_id in s.execute(
                select(
                    col(Result.id),
                    col(Result.study_instance_uid),
                    col(Result.path),
                    col(Result.created_at),
                    col(Result.job_id),
                )
            ):
                results[study].append(
                    ResultRow(rid, path, created_at, tuple(deliveries.get(rid, ())), job_id)
                )
            images: dict[str, list[ImageRow]] = defaultdict(list)
            for jid, study, sop, state, spool_path, received_at, outcome in s.execute(
                select(
                    col(Job.id),
                    col(Job.study_instance_uid),
                    col(Job.sop_instance_uid),
                    col(Job.state),
                    col(Job.spool_path),
                    col(Job.received_at),
                    col(Job.outcome),
                )
            ):
                header = self.spool.relative_path(sop, kind="hdr")
                # Only positive and doubt images have regions kept next to their header.
                regions = (
                    self.spool.relative_path(sop, kind="hdr", suffix=REGIONS_SUFFIX)
                    if outcome in ("positive", "doubt")
                    else ""
                )
                images[study].append(
                    ImageRow(jid, str(state), spool_path, header, received_at, regions)
                )
            return [
                StudyRow(
                    uid,
                    last,
                    reported,
                    reported_at,
                    tuple(images.get(uid, ())),
                    tuple(results.get(uid, ())),
                )
                for uid, last, reported, reported_at in s.execute(
                    select(
                        col(Study.study_instance_uid),
                        col(Study.last_received_at),
                        col(Study.reported_job_count),
                        col(Study.reported_at),
                    )
                )
            ]

    def mark(self, deletions: Sequence[Deletion]) -> list[Mark]:
        rows = [RetentionMark(kind=d.kind, payload=json.dumps(d.to_json())) for d in deletions]
        # Durable: files are deleted only after their marks are on disk.
        with durable(), Session(self.engine, expire_on_commit=False) as s:
            s.add_all(rows)
            s.commit()
        return [Mark(int(r.id or 0), d) for r, d in zip(rows, deletions, strict=True)]

    def complete(self, marks: Sequence[Mark], events: Sequence[AuditEvent]) -> None:
        """Change the rows of finished deletions and drop their marks, in one transaction."""
        with Session(self.engine) as s:
            for mark in marks:
                d = mark.deletion
                if d.kind == "source":
                    s.execute(update(Job).where(col(Job.id).in_(d.job_ids)).values(spool_path=""))
                elif d.kind == "result":
                    s.execute(
                        update(Result).where(col(Result.id).in_(d.result_ids)).values(path="")
                    )
                else:
                    _delete_study(s, d)
            s.execute(delete(RetentionMark).where(col(RetentionMark.id).in_([m.id for m in marks])))
            s.add_all(events)
            s.commit()


def _delete_study(s: Session, d: Deletion) -> None:
    results = list(d.result_ids)
    s.execute(delete(Delivery).where(col(Delivery.result_id).in_(results)))
    s.execute(delete(Result).where(col(Result.id).in_(results)))
    s.execute(delete(Job).where(col(Job.id).in_(d.job_ids)))
    remaining = s.execute(
        select(col(Job.id)).where(col(Job.study_instance_uid) == d.study_instance_uid).limit(1)
    ).first()
    if remaining is None:  # an image that arrived after the mark keeps its study
        s.execute(delete(Study).where(col(Study.study_instance_uid) == d.study_instance_uid))
