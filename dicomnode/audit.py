"""The audit trail: security-relevant events, shaped after DICOM PS3.15 A.5 audit messages.

One row per event: when, which event (the PS3.15 Event ID, e.g. DICOM Instances Transferred),
the action (PS3.15 Event Action Code C/R/U/D/E), who did it (actor: a calling AE title, an API
client hash, the node itself), the other party (peer), what it touched (object and study: salted
hashes of UIDs only, never a raw UID or a patient attribute), how many instances, and the outcome
(PS3.15 Event Outcome Indicator: 0 success, 4 minor, 8 serious, 12 major failure).

Instances received over one association are counted per study and written when the association
closes (PS3.15 reports a transfer per study, not per instance), so receiving costs no extra
database write per image. The HTTP API's reads, uploads and downloads are recorded through
`http/access.py`; the retention run prunes events older than `retention.audit_days` (`prune`).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col

from dicomnode.durable import durable
from dicomnode.logconfig import scrub_text
from dicomnode.uids import hash_uid

log = structlog.stdlib.get_logger("dicomnode.audit")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AuditEventID(StrEnum):
    """PS3.15 A.5.3 event IDs (DCM code meanings, without spaces)."""

    APPLICATION_ACTIVITY = "ApplicationActivity"  # 110100: node started / stopped
    AUDIT_LOG_USED = "AuditLogUsed"  # 110101: trail read (R), old events pruned (D)
    # 110103: identifiers read through the API (R), files deleted (D), job retried (U)
    INSTANCES_ACCESSED = "DICOMInstancesAccessed"
    INSTANCES_TRANSFERRED = "DICOMInstancesTransferred"  # 110104: received (C), sent (R)
    STUDY_DELETED = "DICOMStudyDeleted"  # 110105: a study's records removed by retention
    EXPORT = "Export"  # 110106: analysis results downloaded over HTTP (R)
    IMPORT = "Import"  # 110107: files uploaded over HTTP for analysis (C)
    QUERY = "Query"  # 110112: lists that name studies (worklist, jobs) (E)
    SECURITY_ALERT = "SecurityAlert"  # 110113
    USER_AUTHENTICATION = "UserAuthentication"  # 110114: failed API authentication


class AuditAction(StrEnum):
    """PS3.15 Event Action Code."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class AuditOutcome(IntEnum):
    """PS3.15 Event Outcome Indicator."""

    SUCCESS = 0
    MINOR_FAILURE = 4  # e.g. a failed attempt that will be retried, a refused login
    SERIOUS_FAILURE = 8  # the action was not done
    MAJOR_FAILURE = 12


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(default_factory=_utcnow, index=True)
    event: str = Field(index=True, max_length=64)
    action: str = Field(max_length=1)
    outcome: int = Field(default=0, index=True)
    actor: str = Field(default="", index=True, max_length=128)
    peer: str = Field(default="", max_length=256)
    study: str = Field(default="", index=True, max_length=32)
    object: str = Field(default="", max_length=128)
    count: int = 1
    detail: str = Field(default="", max_length=500)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def clean_detail(text: str) -> str:
    """Free text for the trail: quoted values (where libraries put data) and UIDs removed."""
    return scrub_text(_QUOTED.sub("'…'", text))[:500]


@dataclass(frozen=True)
class _TallyKey:
    event: str
    action: str
    outcome: int
    actor: str
    peer: str
    study: str
    detail: str


class Audit:
    """Writes and reads the trail. Thread-safe: one short session per call."""

    def __init__(self, engine: Engine, *, salt: str) -> None:
        self.engine = engine
        self.salt = salt
        self._tallies: dict[Hashable, Counter[_TallyKey]] = {}
        self._lock = threading.Lock()

    def hash(self, uid: str | None) -> str:
        return hash_uid(uid, self.salt) if uid else ""

    def make(
        self,
        *,
        event: AuditEventID,
        action: AuditAction,
        actor: str,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        peer: str = "",
        study_uid: str | None = None,
        object: str = "",
        count: int = 1,
        detail: str = "",
        time: datetime | None = None,
    ) -> AuditEvent:
        """An event row, not yet saved (`object` must already be hashed, e.g. "job:12")."""
        return AuditEvent(
            time=time or _utcnow(),
            event=str(event),
            action=str(action),
            outcome=int(outcome),
            actor=clean_detail(actor)[:128],
            peer=clean_detail(peer)[:256],
            study=self.hash(study_uid),
            object=scrub_text(object)[:128],
            count=count,
            detail=clean_detail(detail),
        )

    def record(self, **fields: Any) -> None:
        """Save one event now. A failed write is logged, never raised: auditing must not stop
        the node from answering (the jobs and deliveries tables hold the facts as well)."""
        self.save([self.make(**fields)])

    def save(self, events: list[AuditEvent]) -> None:
        if not events:
            return
        try:
            with durable(), Session(self.engine) as s:
                s.add_all(events)
                s.commit()
        except SQLAlchemyError as exc:
            log.error("audit write failed", error=type(exc).__name__, events=len(events))

    # --- per-association counts -------------------------------------------------------------

    def tally(
        self,
        key: Hashable,
        *,
        event: AuditEventID,
        action: AuditAction,
        actor: str,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        peer: str = "",
        study_uid: str | None = None,
        detail: str = "",
    ) -> None:
        """Count one instance under `key` (an association); `flush(key)` writes the counts."""
        k = _TallyKey(
            str(event), str(action), int(outcome), actor, peer, self.hash(study_uid), detail
        )
        with self._lock:
            self._tallies.setdefault(key, Counter())[k] += 1

    def flush(self, key: Hashable) -> None:
        with self._lock:
            counts = self._tallies.pop(key, None)
        if counts:
            self.save([self._from_tally(k, n) for k, n in counts.items()])

    def flush_all(self) -> None:
        with self._lock:
            keys = list(self._tallies)
        for key in keys:
            self.flush(key)

    def _from_tally(self, k: _TallyKey, n: int) -> AuditEvent:
        event = self.make(
            event=AuditEventID(k.event),
            action=AuditAction(k.action),
            actor=k.actor,
            outcome=AuditOutcome(k.outcome),
            peer=k.peer,
            count=n,
            detail=k.detail,
        )
        event.study = k.study
        event.object = f"study:{k.study}" if k.study else ""
        return event

    # --- reading ------------------------------------------------------------------------------

    def query(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        event: str | None = None,
        actor: str | None = None,
        study_uid: str | None = None,
        outcome: int | None = None,
        after_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[AuditEvent]:
        stmt = select(AuditEvent)
        if since is not None:
            stmt = stmt.where(col(AuditEvent.time) >= _utc(since))
        if until is not None:
            stmt = stmt.where(col(AuditEvent.time) < _utc(until))
        if event:
            stmt = stmt.where(col(AuditEvent.event) == event)
        if actor:
            stmt = stmt.where(col(AuditEvent.actor) == actor)
        if study_uid:
            stmt = stmt.where(col(AuditEvent.study) == self.hash(study_uid))
        if outcome is not None:
            stmt = stmt.where(col(AuditEvent.outcome) == outcome)
        if after_id is not None:
            stmt = stmt.where(col(AuditEvent.id) > after_id)
        order = col(AuditEvent.id).desc() if newest_first else col(AuditEvent.id)
        stmt = stmt.order_by(order).limit(limit).offset(offset)
        with Session(self.engine) as s:
            return list(s.scalars(stmt).all())

    # --- pruning (retention.audit_days) ---------------------------------------------------------

    def count_before(self, before: datetime) -> int:
        """How many events are older than `before` (what a prune would delete)."""
        stmt = select(func.count()).select_from(AuditEvent)
        stmt = stmt.where(col(AuditEvent.time) < _utc(before))
        with Session(self.engine) as s:
            return int(s.execute(stmt).scalar_one())

    def prune(self, *, before: datetime, limit: int) -> int:
        """Delete at most `limit` events older than `before`, oldest first, in one short
        transaction (so a huge trail never holds the database's write lock for long);
        returns how many went. Call again until it returns less than `limit`."""
        oldest = (
            select(col(AuditEvent.id))
            .where(col(AuditEvent.time) < _utc(before))
            .order_by(col(AuditEvent.time), col(AuditEvent.id))
            .limit(limit)
        )
        with Session(self.engine) as s:
            result = s.execute(delete(AuditEvent).where(col(AuditEvent.id).in_(oldest)))
            s.commit()
        return int(getattr(result, "rowcount", 0) or 0)

    def export(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every event in time order, in pages (for `dicomnode audit export`)."""
        last = 0
        while True:
            page = self.query(
                since=since, until=until, after_id=last, limit=1000, newest_first=False
            )
            if not page:
                return
            for row in page:
                yield event_json(row)
            last = int(page[-1].id or last)


def _utc(value: datetime) -> datetime:
    """Timestamps are stored in UTC; a time given without zone is taken as UTC."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def event_json(row: AuditEvent) -> dict[str, Any]:
    time = row.time if row.time.tzinfo else row.time.replace(tzinfo=UTC)
    return {
        "id": row.id,
        "time": time.isoformat(),
        "event": row.event,
        "action": row.action,
        "outcome": row.outcome,
        "outcome_text": AuditOutcome(row.outcome).name.lower().replace("_", " ")
        if row.outcome in AuditOutcome._value2member_map_
        else str(row.outcome),
        "actor": row.actor,
        "peer": row.peer,
        "study": row.study,
        "object": row.object,
        "count": row.count,
        "detail": row.detail,
    }
