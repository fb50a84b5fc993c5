"""Every result names the model that made it: name and "trained" per image result (the job
already had the version) and name, version and "trained" per study report; and a study's
modalities leave out the node's own returning objects (SR, SC as `OT`).

Rows from before are given what can honestly be known. The version was always stored per image;
the untrained demo's versions are recognisable (`demo-<architecture>-seed<n>`, the only ones
the node ever made that way), so those results are marked untrained and keep their DEMO badge.
Any other old result keeps its version with name and "trained" unknown (NULL): the page says
"model unknown" rather than guess. A study gets the model of its classified images when they
all share one.

Revision ID: 0004_model
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_model"
down_revision = "0003"
branch_labels = None
depends_on = None

#: `dicomnode.model.classifier.DEMO_NAME` when this migration was written (a migration keeps
#: the values of its time; it does not import the code that may change).
DEMO_NAME = "dicomnode fracture triage"
DEMO_VERSIONS = "demo-%"


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("model_name", sa.String(), nullable=True))
        batch.add_column(sa.Column("model_trained", sa.Boolean(), nullable=True))
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("model_name", sa.String(), nullable=True))
        batch.add_column(sa.Column("model_version", sa.String(), nullable=True))
        batch.add_column(sa.Column("model_trained", sa.Boolean(), nullable=True))
    job = sa.table(
        "job",
        sa.column("study_instance_uid", sa.String()),
        sa.column(
            "state",
            sa.Enum(
                "QUEUED",
                "PROCESSING",
                "CLASSIFIED",
                "SKIPPED",
                "FAILED",
                name="jobstate",
                create_type=False,
            ),
        ),
        sa.column("reason", sa.String()),
        sa.column("modality", sa.String()),
        sa.column("model_name", sa.String()),
        sa.column("model_version", sa.String()),
        sa.column("model_trained", sa.Boolean()),
    )
    study = sa.table(
        "study",
        sa.column("study_instance_uid", sa.String()),
        sa.column("modalities", sa.String()),
        sa.column("model_name", sa.String()),
        sa.column("model_version", sa.String()),
        sa.column("model_trained", sa.Boolean()),
    )
    op.execute(
        job.update()
        .where(job.c.model_version.like(DEMO_VERSIONS))
        .values(model_name=DEMO_NAME, model_trained=False)
    )
    bind = op.get_bind()
    classified = job.c.state == "CLASSIFIED"  # SQLAlchemy stores an enum's names
    per_study = bind.execute(
        sa.select(
            job.c.study_instance_uid,
            sa.func.min(job.c.model_version),
            sa.func.max(job.c.model_version),
        )
        .where(classified, job.c.model_version.is_not(None))
        .group_by(job.c.study_instance_uid)
    ).all()
    for uid, lowest, highest in per_study:
        if lowest != highest:
            continue  # several models: the study's model stays unknown
        demo = str(lowest).startswith(DEMO_VERSIONS[:-1])
        op.execute(
            study.update()
            .where(study.c.study_instance_uid == uid)
            .values(
                model_version=lowest,
                model_name=DEMO_NAME if demo else None,
                model_trained=False if demo else None,
            )
        )
    # The node's own objects that came back (a routing loop it refused) no longer count
    # among the study's modalities.
    own = bind.execute(
        sa.select(job.c.study_instance_uid).where(job.c.reason == "own output").distinct()
    ).all()
    for (uid,) in own:
        kept = bind.execute(
            sa.select(job.c.modality)
            .where(job.c.study_instance_uid == uid)
            .where(sa.or_(job.c.reason.is_(None), job.c.reason != "own output"))
            .distinct()
        ).all()
        modalities = ",".join(sorted({m for (m,) in kept if m}))
        op.execute(
            study.update().where(study.c.study_instance_uid == uid).values(modalities=modalities)
        )


def downgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.drop_column("model_trained")
        batch.drop_column("model_version")
        batch.drop_column("model_name")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("model_trained")
        batch.drop_column("model_name")
