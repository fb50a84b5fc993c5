"""Results and the delivery outbox: one `result` row per object produced, one `delivery` row per
(result, destination).

Deliveries are claimed like jobs: a claim moves their next attempt to the lease expiry, so no
other node sends them meanwhile, and a dead sender's deliveries come back when it passes. The
sending itself (SCU, backoff) is `dicomnode.deliver.outbox`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlmodel import Session, col

from dicomnode.store.repository import Repository
from dicomnode.store.tables import Delivery, DeliveryState, Result, ResultKind, utcnow


class Deliveries(Repository):
    """The `result` and `delivery` tables."""

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

    # --- leases (see `Jobs.release_owned`, `Jobs.renew_leases`) ------------------------------

    def _release_deliveries(self, s: Session, owner: str) -> None:
        s.execute(
            update(Delivery)
            .where(col(Delivery.lease_owner) == owner)
            .where(col(Delivery.state) == DeliveryState.PENDING)
            .values(lease_owner=None, next_attempt_at=utcnow())
        )

    def _renew_deliveries(self, s: Session, owner: str, expires: datetime) -> int:
        return int(
            s.execute(
                update(Delivery)
                .where(col(Delivery.lease_owner) == owner)
                .where(col(Delivery.state) == DeliveryState.PENDING)
                .values(next_attempt_at=expires)
            ).rowcount  # type: ignore[attr-defined]
        )
