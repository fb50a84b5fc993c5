"""Results of a third kind: the Grayscale Softcopy Presentation State (GSPS) outlining the
suspected fracture on the source image.

PostgreSQL keeps `resultkind` as an enum type, which gets the new value; SQLite stores the
kind as text (no CHECK constraint), so its column only gets the wider type.

Revision ID: 0005_gsps
Revises: 0004_model
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_gsps"
down_revision = "0004_model"
branch_labels = None
depends_on = None

OLD = sa.Enum("SR", "SC", name="resultkind")
NEW = sa.Enum("SR", "SC", "GSPS", name="resultkind")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TYPE resultkind ADD VALUE IF NOT EXISTS 'GSPS'")
        return
    with op.batch_alter_table("result") as batch:
        batch.alter_column("kind", existing_type=OLD, type_=NEW, existing_nullable=False)


def downgrade() -> None:
    # PostgreSQL cannot drop an enum value; results of that kind are removed either way.
    op.execute(
        "DELETE FROM delivery WHERE result_id IN (SELECT id FROM result WHERE kind = 'GSPS')"
    )
    op.execute("DELETE FROM result WHERE kind = 'GSPS'")
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("result") as batch:
            batch.alter_column("kind", existing_type=NEW, type_=OLD, existing_nullable=False)
