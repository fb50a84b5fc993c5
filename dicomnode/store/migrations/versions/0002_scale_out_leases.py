"""Scale-out: leases for study reports and deliveries, so several nodes can share the database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("report_owner", sa.String(), nullable=True))
        batch.add_column(
            sa.Column("report_lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("lease_owner")
    with op.batch_alter_table("study") as batch:
        batch.drop_column("report_lease_expires_at")
        batch.drop_column("report_owner")
