"""SQLModel tables: jobs (one per received instance), studies, results and their deliveries."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

# Named constraints, so a later migration can alter them on SQLite too (batch mode). Must be set
# before the first table is defined.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobState(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    CLASSIFIED = "classified"
    SKIPPED = "skipped"
    FAILED = "failed"


TERMINAL_JOB_STATES = (JobState.CLASSIFIED, JobState.SKIPPED, JobState.FAILED)


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class ResultKind(StrEnum):
    SR = "sr"
    SC = "sc"
    GSPS = "gsps"


class Job(SQLModel, table=True):
    """One received SOP instance and what became of it."""

    id: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(index=True, unique=True, max_length=64)
    sop_class_uid: str = Field(max_length=64)
    study_instance_uid: str = Field(index=True, max_length=64)
    series_instance_uid: str = Field(default="", max_length=64)
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    calling_ae_title: str = ""
    spool_path: str = ""
    state: JobState = Field(default=JobState.QUEUED, index=True)
    reason: str | None = None
    attempts: int = 0
    probability: float | None = None
    outcome: str | None = None
    # The model that classified the image (None: not classified, or made before the node
    # recorded it; see migration 0004).
    model_version: str | None = None
    model_name: str | None = None
    model_trained: bool | None = None
    received_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    preprocess_ms: float | None = None
    inference_ms: float | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None


class Study(SQLModel, table=True):
    """A study seen by the node; holds what the worklist shows and the report version."""

    study_instance_uid: str = Field(primary_key=True, max_length=64)
    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    modalities: str = ""
    body_part: str = ""
    first_received_at: datetime = Field(default_factory=utcnow)
    last_received_at: datetime = Field(default_factory=utcnow, index=True)
    report_version: int = 0
    reported_job_count: int = 0
    outcome: str | None = None
    max_probability: float | None = None
    reported_at: datetime | None = None
    # The model of the latest report (None: unknown, e.g. reported before it was recorded).
    model_name: str | None = None
    model_version: str | None = None
    model_trained: bool | None = None
    # The node building the next report version holds this lease (exactly one report per
    # version when several nodes share the database).
    report_owner: str | None = None
    report_lease_expires_at: datetime | None = None


class Result(SQLModel, table=True):
    """An object the node produced (SR or SC), stored under the data dir until delivered."""

    id: int | None = Field(default=None, primary_key=True)
    kind: ResultKind
    sop_instance_uid: str = Field(unique=True, max_length=64)
    study_instance_uid: str = Field(index=True, max_length=64)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    version: int = 1
    path: str
    created_at: datetime = Field(default_factory=utcnow)


class Delivery(SQLModel, table=True):
    """One result to one destination: the persistent outbox."""

    __table_args__ = (UniqueConstraint("result_id", "destination"),)

    id: int | None = Field(default=None, primary_key=True)
    result_id: int = Field(foreign_key="result.id", index=True)
    destination: str
    state: DeliveryState = Field(default=DeliveryState.PENDING, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    # The node sending it; while it sends, next_attempt_at is its lease expiry.
    lease_owner: str | None = None
