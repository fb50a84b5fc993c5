"""The radiologists' worklist: one row per study, suspected fractures first.

This module is the worklist's read-only query (its SQL lives here, next to the rules it
implements, rather than in `jobs.py`, which owns the writes) and the values it returns.

Study state, derived from the study's jobs, its report and its deliveries (first match wins):

- waiting     images are queued and none has been worked on yet
- processing  an image is being classified, some still queue, or classified images wait for the
              study report (the study is not yet stable, or a late image arrived)
- failed      an image failed, or a result could not be delivered (given up): needs attention
- delivered   reported, and every result is stored at every destination
- reported    reported; deliveries still pending, or no destinations configured

Outcome of a study: from its classified images (the highest probability decides, as in the
study report), so a suspected fracture is on top as soon as its image is classified, before the
report is built. Studies none of whose images is classifiable (all skipped, e.g. a CT) are not
on the worklist; `/api/jobs` shows them.

Reading order: positive by probability (highest first; ties: oldest first), then doubt, then
negative (each oldest first), then studies without an outcome yet (oldest first). "Oldest" is
when the node first received the study: the time it has been waiting for a reader. Sorting by
a column (`SortKey`) is done here in SQL, so it holds across pages; ties keep reading order.

Model of a study's row: from its classified images. Untrained if any image was classified by an
untrained model (its result is a demo's, whatever replaced the model since), unknown if any
image's model was not recorded (before migration 0004), else trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Integer, String, and_, case, cast, false, func, literal, or_, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from dicomnode.store.tables import Delivery, DeliveryState, Job, JobState, Result, ResultKind, Study
from dicomnode.store.worklist_filters import (
    MAX_LIMIT,
    FilterError,
    SortKey,
    StudyOutcome,
    StudyState,
    WorklistFilters,
)

__all__ = [
    "MAX_LIMIT", "FilterError", "SortKey", "StudyOutcome", "StudyState", "WorklistFilters",
    "WorklistPage", "WorklistRow", "query_worklist", "sc_result",
]  # fmt: skip

_RANK = {StudyOutcome.POSITIVE: 0, StudyOutcome.DOUBT: 1, StudyOutcome.NEGATIVE: 2}
_NO_OUTCOME = 3
#: How long a failure reason may be on a worklist row: as long as a delivery's stored error,
#: since a cut sentence could not be read back to its code for a page in another language.
REASON_LENGTH = 500


@dataclass(frozen=True)
class WorklistRow:
    study_instance_uid: str
    study_date: str
    study_time: str
    study_description: str
    modalities: tuple[str, ...]
    body_part: str
    images: int
    images_classified: int
    outcome: StudyOutcome | None
    max_probability: float | None
    state: StudyState
    report_version: int
    first_received_at: datetime
    patient_name: str
    patient_id: str
    accession_number: str
    #: SOP Instance UIDs of the study's Secondary Captures (one per classified image).
    secondary_captures: tuple[str, ...] = field(default=())
    reported_at: datetime | None = None
    #: The model of the classified images: name and version (None: unknown or several),
    #: trained (None: unknown), and how many versions classified them (0: none yet).
    model_name: str | None = None
    model_version: str | None = None
    model_trained: bool | None = None
    model_count: int = 0
    #: Why a failed study failed (a failed image's reason or an undeliverable result's error).
    reason: str | None = None


@dataclass(frozen=True)
class WorklistPage:
    rows: list[WorklistRow]
    total: int
    filters: WorklistFilters


def _count(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


_STUDY_COLUMNS = (
    "study_instance_uid", "patient_name", "patient_id", "accession_number", "study_date",
    "study_time", "study_description", "modalities", "body_part", "first_received_at",
    "report_version", "reported_at",
)  # fmt: skip


def _query(served_version: str | None = None) -> Any:
    """One row per study with its derived state, outcome rank and counts (not yet filtered);
    `other_models`: its images classified by another model than `served_version`."""
    state = col(Job.state)
    classified = state == JobState.CLASSIFIED
    version = col(Job.model_version)
    other = or_(version.is_(None), version != served_version) if served_version else false()
    rank_of_job = case(
        *((col(Job.outcome) == outcome.value, rank) for outcome, rank in _RANK.items()),
        else_=_NO_OUTCOME,
    )
    per_job = (
        select(
            col(Job.study_instance_uid).label("uid"),
            func.count().label("images"),
            _count(state == JobState.QUEUED).label("queued"),
            _count(state == JobState.PROCESSING).label("processing"),
            _count(classified).label("classified"),
            _count(state == JobState.FAILED).label("failed"),
            func.max(case((classified, col(Job.probability)))).label("max_probability"),
            func.min(case((classified, rank_of_job), else_=_NO_OUTCOME)).label("rank"),
            _count(and_(classified, col(Job.model_trained) == false())).label("untrained"),
            _count(and_(classified, col(Job.model_trained).is_(None))).label("unknown_model"),
            func.count(func.distinct(case((classified, version)))).label("model_count"),
            func.max(case((classified, version))).label("model_version"),
            func.max(case((classified, col(Job.model_name)))).label("model_name"),
            _count(and_(classified, other)).label("other_models"),
        )
        .group_by(col(Job.study_instance_uid))
        .subquery("per_job")
    )
    delivery_state = col(Delivery.state)
    per_delivery = (
        select(
            col(Result.study_instance_uid).label("uid"),
            func.count(col(Delivery.id)).label("deliveries"),
            _count(delivery_state == DeliveryState.DELIVERED).label("delivered"),
            _count(delivery_state == DeliveryState.FAILED).label("undeliverable"),
        )
        .join(Delivery, col(Delivery.result_id) == col(Result.id))
        .group_by(col(Result.study_instance_uid))
        .subquery("per_delivery")
    )
    j, d = per_job.c, per_delivery.c
    deliveries = func.coalesce(d.deliveries, 0)
    study_state = case(
        (and_(j.queued > 0, j.processing == 0, j.queued == j.images), StudyState.WAITING.value),
        (or_(j.queued > 0, j.processing > 0), StudyState.PROCESSING.value),
        (or_(j.failed > 0, func.coalesce(d.undeliverable, 0) > 0), StudyState.FAILED.value),
        (j.classified > col(Study.reported_job_count), StudyState.PROCESSING.value),
        (
            and_(deliveries > 0, func.coalesce(d.delivered, 0) == deliveries),
            StudyState.DELIVERED.value,
        ),
        else_=StudyState.REPORTED.value,
    ).label("state")
    rank = cast(j.rank, Integer).label("rank")
    return (
        select(
            *(col(getattr(Study, name)) for name in _STUDY_COLUMNS),
            j.images,
            j.classified,
            j.max_probability,
            rank,
            study_state,
            j.untrained,
            j.unknown_model,
            j.model_count,
            j.model_version,
            j.model_name,
            j.other_models,
        )
        .join(per_job, j.uid == col(Study.study_instance_uid))
        .outerjoin(per_delivery, d.uid == col(Study.study_instance_uid))
        # Only studies the node triages: something classifiable, pending or failed.
        .where(j.queued + j.processing + j.classified + j.failed > 0)
        .subquery("worklist")
    )


def _filtered(w: Any, filters: WorklistFilters) -> Any:
    stmt = select(w)
    if filters.outcomes:
        stmt = stmt.where(w.c.rank.in_([_RANK[o] for o in filters.outcomes]))
    if filters.states:
        stmt = stmt.where(w.c.state.in_([s.value for s in filters.states]))
    if filters.modality:
        padded = literal(",", String) + w.c.modalities + literal(",", String)
        stmt = stmt.where(padded.like(f"%,{filters.modality},%"))
    if filters.date_from:
        stmt = stmt.where(w.c.study_date != "", w.c.study_date >= _dicom_date(filters.date_from))
    if filters.date_to:
        stmt = stmt.where(w.c.study_date != "", w.c.study_date <= _dicom_date(filters.date_to))
    if filters.model_version:
        stmt = stmt.where(w.c.other_models == 0)
    return stmt


def _sort_columns(w: Any) -> dict[SortKey, tuple[Any, ...]]:
    return {
        SortKey.PROBABILITY: (w.c.max_probability,),
        SortKey.PATIENT: (func.upper(w.c.patient_name),),
        SortKey.PATIENT_ID: (w.c.patient_id,),
        SortKey.ACCESSION: (w.c.accession_number,),
        SortKey.STUDY_DATE: (w.c.study_date, w.c.study_time),
        SortKey.DESCRIPTION: (func.upper(w.c.study_description),),
        SortKey.BODY_PART: (w.c.body_part,),
        SortKey.IMAGES: (w.c.images,),
        SortKey.RECEIVED: (w.c.first_received_at,),
        SortKey.STATE: (w.c.state,),
        SortKey.MODEL: (w.c.model_version,),
    }


def _order(w: Any, filters: WorklistFilters) -> list[Any]:
    """The chosen column first (empty values last either way), then the reading order."""
    positive = w.c.rank == _RANK[StudyOutcome.POSITIVE]
    triage = [
        w.c.rank,
        case((positive, -w.c.max_probability), else_=0),
        w.c.first_received_at,
        w.c.study_instance_uid,
    ]
    if filters.sort == SortKey.TRIAGE:
        return [c.desc() for c in triage] if filters.descending else triage
    chosen = _sort_columns(w)[filters.sort]
    return [
        *((c.desc() if filters.descending else c.asc()).nulls_last() for c in chosen),
        *triage,
    ]


def _dicom_date(value: date) -> str:
    return value.strftime("%Y%m%d")


def query_worklist(engine: Engine, filters: WorklistFilters) -> WorklistPage:
    """The filtered, ordered page of the worklist and the total number of matching studies."""
    w = _query(filters.model_version)
    stmt = _filtered(w, filters)
    total_stmt = select(func.count()).select_from(stmt.subquery())
    page = stmt.order_by(*_order(w, filters)).limit(filters.limit).offset(filters.offset)
    with engine.connect() as conn:
        total = int(conn.execute(total_stmt).scalar_one())
        records = list(conn.execute(page).mappings())
        uids = [r["study_instance_uid"] for r in records]
        captures: dict[str, list[str]] = {}
        if uids:
            sc = (
                select(col(Result.study_instance_uid), col(Result.sop_instance_uid))
                .join(Job, col(Job.id) == col(Result.job_id))
                .where(col(Result.kind) == ResultKind.SC)
                .where(col(Result.study_instance_uid).in_(uids))
                .order_by(col(Job.id))
            )
            for study_uid, sop_uid in conn.execute(sc):
                captures.setdefault(study_uid, []).append(sop_uid)
        failed = [r["study_instance_uid"] for r in records if r["state"] == StudyState.FAILED]
        reasons = _failure_reasons(conn, failed) if failed else {}
    rows = [
        _row(r, captures.get(r["study_instance_uid"], []), reasons.get(r["study_instance_uid"]))
        for r in records
    ]
    return WorklistPage(rows=rows, total=total, filters=filters)


_OUTCOME_BY_RANK = {rank: outcome for outcome, rank in _RANK.items()}


def _failure_reasons(conn: Any, uids: list[str]) -> dict[str, str]:
    """The first failed image's reason per study, else its first undeliverable result's."""
    reasons: dict[str, str] = {}
    images = (
        select(col(Job.study_instance_uid), col(Job.reason))
        .where(col(Job.study_instance_uid).in_(uids), col(Job.state) == JobState.FAILED)
        .order_by(col(Job.id))
    )
    deliveries = (
        select(col(Result.study_instance_uid), col(Delivery.last_error))
        .join(Delivery, col(Delivery.result_id) == col(Result.id))
        .where(col(Result.study_instance_uid).in_(uids))
        .where(col(Delivery.state) == DeliveryState.FAILED)
        .order_by(col(Delivery.id))
    )
    for stmt in (images, deliveries):
        for uid, reason in conn.execute(stmt):
            if reason and uid not in reasons:
                reasons[uid] = str(reason)[:REASON_LENGTH]
    return reasons


def _model_trained(r: Any) -> bool | None:
    if int(r["untrained"]):
        return False
    if int(r["unknown_model"]) or not int(r["model_count"]):
        return None
    return True


def _row(r: Any, captures: list[str], reason: str | None) -> WorklistRow:
    single = int(r["model_count"]) == 1
    return WorklistRow(
        study_instance_uid=r["study_instance_uid"],
        study_date=r["study_date"],
        study_time=r["study_time"],
        study_description=r["study_description"],
        modalities=tuple(m for m in (r["modalities"] or "").split(",") if m),
        body_part=r["body_part"],
        images=int(r["images"]),
        images_classified=int(r["classified"]),
        outcome=_OUTCOME_BY_RANK.get(int(r["rank"])),
        max_probability=r["max_probability"],
        state=StudyState(r["state"]),
        report_version=int(r["report_version"]),
        first_received_at=r["first_received_at"],
        patient_name=r["patient_name"],
        patient_id=r["patient_id"],
        accession_number=r["accession_number"],
        secondary_captures=tuple(captures),
        reported_at=r["reported_at"],
        model_name=r["model_name"] if single else None,
        model_version=r["model_version"] if single else None,
        model_trained=_model_trained(r),
        model_count=int(r["model_count"]),
        reason=reason,
    )


def sc_result(engine: Engine, sop_instance_uid: str) -> tuple[str, str] | None:
    """(spool-relative path, Study Instance UID) of a Secondary Capture the node made, or None
    if unknown."""
    stmt = (
        select(col(Result.path), col(Result.study_instance_uid))
        .where(col(Result.sop_instance_uid) == sop_instance_uid)
        .where(col(Result.kind) == ResultKind.SC)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    return (str(row[0]), str(row[1])) if row else None


def format_date(value: str) -> str:
    """DICOM DA (YYYYMMDD) → ISO YYYY-MM-DD; anything else as given. Every API gives dates
    this one way."""
    value = value.strip()
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def format_time(value: str) -> str:
    """DICOM TM (HHMMSS.ffffff, parts optional) → ISO HH:MM:SS (fractions dropped); anything
    else as given. Every API gives study times this one way."""
    digits = value.strip().split(".")[0]
    if digits.isdigit() and len(digits) in (2, 4, 6):
        padded = digits.ljust(6, "0")
        return f"{padded[:2]}:{padded[2:4]}:{padded[4:]}"
    return value
