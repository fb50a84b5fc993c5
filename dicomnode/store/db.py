"""Database engine and schema: SQLite (WAL) by default, PostgreSQL by URL.

SQLite durability: a transaction inside `durable()` (the one that records a received image,
committed before the C-STORE is acknowledged) is fsynced at commit (synchronous=FULL). The
others (claims, results, deliveries) use synchronous=NORMAL: in WAL mode they survive a crash of
the process, and after a power cut the database is consistent but may have lost the last of
them, which only repeats work (a job is classified again, a result sent again with the same
UIDs); the next durable commit fsyncs them too. This saves one fsync per state change.

The schema is owned by Alembic migrations (`dicomnode/store/migrations/versions/`), for both
databases: a new SQLite file and an empty PostgreSQL database are brought to the head revision
the same way, and so is an older one. Upgrades run under a lock (PostgreSQL advisory lock, the
SQLite write lock), so several nodes starting together against one database migrate it once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import create_engine

from dicomnode.durable import is_durable

MIGRATIONS = Path(__file__).parent / "migrations"
#: The revision a database made by `create_all` before migrations existed is stamped with.
BASELINE_REVISION = "0001"
# pg_advisory_xact_lock key: "dicomnode" schema migrations.
_PG_MIGRATION_LOCK = 0x6469636F6D

log = structlog.stdlib.get_logger("dicomnode.store.db")


class SchemaError(RuntimeError):
    """The database schema is not the one this version of the node needs."""


def make_engine(url: str, *, upgrade: bool = True) -> Engine:
    """Create the engine; bring the schema to the head revision (or, with `upgrade=False`,
    refuse a database that is not at it)."""
    engine = create_db_engine(url)
    if upgrade:
        upgrade_schema(engine)
    else:
        require_head(engine)
    return engine


def create_db_engine(url: str) -> Engine:
    """The engine alone, schema untouched."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        # Timestamps are stored as UTC whatever the server's or the session's time zone.
        engine = create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=10,
            connect_args={"options": "-c timezone=UTC"} if url.startswith("postgresql") else {},
        )  # fmt: skip
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy, not pysqlite, decides when transactions begin (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """The single-writer path on SQLite: every transaction takes the write lock at BEGIN.

    A deferred transaction that reads, then writes after another connection committed fails at
    once with SQLITE_BUSY (the busy timeout cannot help it); BEGIN IMMEDIATE waits its turn
    instead. Transactions are short, so readers barely notice.
    """
    connection.exec_driver_sql(f"PRAGMA synchronous={'FULL' if is_durable() else 'NORMAL'}")
    connection.exec_driver_sql("BEGIN IMMEDIATE")


# --- migrations -------------------------------------------------------------------------------


def alembic_config(url: str | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty (or pre-migration) database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_schema(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to `revision` under a lock; returns (revision before, revision after).

    A database created by `create_all` before migrations existed (tables, no version) is
    stamped with the baseline revision first, then upgraded like any other.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    config = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        before = MigrationContext.configure(conn).get_current_revision()
        config.attributes["connection"] = conn
        if before is None and inspect(conn).has_table("job"):
            command.stamp(config, BASELINE_REVISION)
        command.upgrade(config, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    if after != before:  # Alembic's own lines (13 at each start) are kept to warnings
        log.info("database schema migrated", revision_before=before, revision=after)
    return before, after


def require_head(engine: Engine) -> None:
    current, head = schema_revision(engine), head_revision()
    if current != head:
        raise SchemaError(
            f"database schema is at revision {current or '(none)'}, this node needs {head}: "
            "run `dicomnode db upgrade --config FILE` (or set [database] auto_upgrade = true)"
        )
