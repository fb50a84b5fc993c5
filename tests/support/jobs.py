"""Queries only tests need: the node claims jobs in batches, claims studies and deliveries
(`Jobs.claim_batch`, `claim_study_report`, `claim_deliveries`); tests also look without claiming.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import col

from dicomnode.store.queue import Queue
from dicomnode.store.reports import report_due
from dicomnode.store.repository import Repository
from dicomnode.store.tables import Delivery, DeliveryState, Job, Result, Study, utcnow


def claim(jobs: Queue, *, owner: str, lease_seconds: float) -> Job | None:
    """Atomically take the oldest claimable job (a batch of one)."""
    claimed = jobs.claim_batch(owner=owner, lease_seconds=lease_seconds, limit=1)
    return claimed[0] if claimed else None


def studies_to_report(jobs: Repository, *, stable_seconds: float) -> list[str]:
    """Studies due for a report version (the node's condition, `report_due`), claimed or not."""
    stmt = (
        select(col(Study.study_instance_uid))
        .where(report_due(Study, now=utcnow(), stable_seconds=stable_seconds))
        .order_by(col(Study.last_received_at))
    )
    with jobs.session() as s:
        return [row[0] for row in s.execute(stmt)]


def due_deliveries(jobs: Repository, *, limit: int = 100) -> list[tuple[Delivery, Result]]:
    """Pending deliveries whose next attempt is due, without claiming them."""
    stmt = (
        select(Delivery, Result)
        .join(Result, col(Result.id) == Delivery.result_id)
        .where(col(Delivery.state) == DeliveryState.PENDING)
        .where(col(Delivery.next_attempt_at) <= utcnow())
        .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
        .limit(limit)
    )
    with jobs.session() as s:
        return [(d, r) for d, r in s.execute(stmt)]
