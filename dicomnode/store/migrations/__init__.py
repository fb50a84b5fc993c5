"""Alembic migration environment of the node's schema (SQLite and PostgreSQL).

Run through `dicomnode db upgrade` or automatically at start (`dicomnode.store.db.upgrade_schema`);
a schema change is one new file in `versions/` whose `down_revision` is the previous head.
"""
