"""Alembic environment: the node's tables (SQLModel metadata) on the connection it is given.

`dicomnode.store.db.upgrade_schema` passes an open connection (under a lock) in
`config.attributes["connection"]`; otherwise the URL in the `sqlalchemy.url` option is used.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from dicomnode.store.migrations import table_metadata

config = context.config
target_metadata = table_metadata()


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER on SQLite: copy-and-move
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; use `dicomnode db`")
run_migrations_online()
