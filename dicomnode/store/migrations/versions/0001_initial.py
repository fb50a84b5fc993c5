"""The spine's schema: jobs, studies, results and the delivery outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Databases created before migrations existed (by `create_all`) have exactly this schema and
are stamped with this revision at start (`dicomnode.store.db.upgrade_schema`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UID = sa.String(length=64)
TEXT = sa.String()
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False),
        sa.Column("sop_class_uid", UID, nullable=False),
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("series_instance_uid", UID, nullable=False),
        sa.Column("modality", TEXT, nullable=False),
        sa.Column("body_part", TEXT, nullable=False),
        sa.Column("view_position", TEXT, nullable=False),
        sa.Column("calling_ae_title", TEXT, nullable=False),
        sa.Column("spool_path", TEXT, nullable=False),
        sa.Column(
            "state",
            sa.Enum("QUEUED", "PROCESSING", "CLASSIFIED", "SKIPPED", "FAILED", name="jobstate"),
            nullable=False,
        ),
        sa.Column("reason", TEXT, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("outcome", TEXT, nullable=True),
        sa.Column("model_version", TEXT, nullable=True),
        sa.Column("received_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("preprocess_ms", sa.Float(), nullable=True),
        sa.Column("inference_ms", sa.Float(), nullable=True),
        sa.Column("lease_owner", TEXT, nullable=True),
        sa.Column("lease_expires_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    op.create_index(op.f("ix_job_received_at"), "job", ["received_at"])
    op.create_index(op.f("ix_job_sop_instance_uid"), "job", ["sop_instance_uid"], unique=True)
    op.create_index(op.f("ix_job_state"), "job", ["state"])
    op.create_index(op.f("ix_job_study_instance_uid"), "job", ["study_instance_uid"])

    op.create_table(
        "study",
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("patient_name", TEXT, nullable=False),
        sa.Column("patient_id", TEXT, nullable=False),
        sa.Column("patient_birth_date", TEXT, nullable=False),
        sa.Column("accession_number", TEXT, nullable=False),
        sa.Column("study_date", TEXT, nullable=False),
        sa.Column("study_time", TEXT, nullable=False),
        sa.Column("study_description", TEXT, nullable=False),
        sa.Column("modalities", TEXT, nullable=False),
        sa.Column("body_part", TEXT, nullable=False),
        sa.Column("first_received_at", TIME, nullable=False),
        sa.Column("last_received_at", TIME, nullable=False),
        sa.Column("report_version", sa.Integer(), nullable=False),
        sa.Column("reported_job_count", sa.Integer(), nullable=False),
        sa.Column("outcome", TEXT, nullable=True),
        sa.Column("max_probability", sa.Float(), nullable=True),
        sa.Column("reported_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("study_instance_uid", name=op.f("pk_study")),
    )
    op.create_index(op.f("ix_study_last_received_at"), "study", ["last_received_at"])

    op.create_table(
        "result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Enum("SR", "SC", name="resultkind"), nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False),
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", TEXT, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_result_job_id_job")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_result_sop_instance_uid")),
    )
    op.create_index(op.f("ix_result_job_id"), "result", ["job_id"])
    op.create_index(op.f("ix_result_study_instance_uid"), "result", ["study_instance_uid"])

    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("destination", TEXT, nullable=False),
        sa.Column(
            "state",
            sa.Enum("PENDING", "DELIVERED", "FAILED", name="deliverystate"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", TEXT, nullable=True),
        sa.Column("delivered_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["result_id"], ["result.id"], name=op.f("fk_delivery_result_id_result")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery")),
        sa.UniqueConstraint("result_id", "destination", name=op.f("uq_delivery_result_id")),
    )
    op.create_index(op.f("ix_delivery_next_attempt_at"), "delivery", ["next_attempt_at"])
    op.create_index(op.f("ix_delivery_result_id"), "delivery", ["result_id"])
    op.create_index(op.f("ix_delivery_state"), "delivery", ["state"])


def downgrade() -> None:
    op.drop_table("delivery")
    op.drop_table("result")
    op.drop_table("study")
    op.drop_table("job")
    if op.get_bind().dialect.name == "postgresql":
        for name in ("deliverystate", "resultkind", "jobstate"):
            op.execute(f"DROP TYPE IF EXISTS {name}")
