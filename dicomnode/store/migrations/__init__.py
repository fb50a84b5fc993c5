"""Alembic migration environment of the node's schema (SQLite and PostgreSQL).

Run through `dicomnode db upgrade` or automatically at start (`dicomnode.store.db.upgrade_schema`);
a schema change is one new file in `versions/` whose `down_revision` is the previous head.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlmodel import SQLModel

# Every module that defines tables, imported here (and only here) so that the schema sees them
# all: the table modules sit above `store` (audit, retention import it), so `db` cannot.
from dicomnode import audit  # noqa: F401
from dicomnode.retention import store as retention_store  # noqa: F401
from dicomnode.store import tables  # noqa: F401


def table_metadata() -> MetaData:
    """Every table of the node. A module that defines tables must be imported here."""
    return SQLModel.metadata
