"""Schema migrations on SQLite and a real PostgreSQL: they make exactly the models' schema."""

import sqlite3
import subprocess
import sys
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from dicomnode.store.db import (
    SchemaError,
    create_db_engine,
    head_revision,
    make_engine,
    schema_revision,
    upgrade_schema,
)
from dicomnode.store.jobs import Jobs
from dicomnode.store.migrations import table_metadata


def _diffs(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, table_metadata())


def test_migrations_make_exactly_the_models_schema(database_url):
    engine = make_engine(database_url)
    assert schema_revision(engine) == head_revision()
    assert _diffs(engine) == []
    assert {"job", "study", "result", "delivery"} <= set(inspect(engine).get_table_names())


def test_downgrade_to_base_and_up_again(database_url):
    from alembic import command

    from dicomnode.store.db import alembic_config

    engine = make_engine(database_url)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, table_metadata()) != []  # the comparison can fail
    upgrade_schema(engine)
    assert _diffs(engine) == []


def test_nodes_starting_together_migrate_once(database_url):
    errors: list[BaseException] = []

    def start():
        try:
            make_engine(database_url).dispose()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert schema_revision(create_db_engine(database_url)) == head_revision()


def test_a_pre_migration_sqlite_database_is_stamped_and_upgraded_keeping_its_rows(tmp_path):
    """Databases made by the spine's create_all (revision 0001's tables, no version table)."""
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    old = create_db_engine(url)
    spine_tables = [SQLModel.metadata.tables[n] for n in ("job", "study", "result", "delivery")]
    SQLModel.metadata.create_all(old, tables=spine_tables)
    with sqlite3.connect(path) as db:
        for table, column in (("study", "report_owner"), ("study", "report_lease_expires_at"),
                              ("delivery", "lease_owner"), ("job", "model_name"),
                              ("job", "model_trained"), ("study", "model_name"),
                              ("study", "model_version"), ("study", "model_trained")):  # fmt: skip
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # as the spine made them
        db.execute(
            "INSERT INTO job (sop_instance_uid, sop_class_uid, study_instance_uid, "
            "series_instance_uid, modality, body_part, view_position, calling_ae_title, "
            "spool_path, state, attempts, received_at) VALUES ('1.2.3.4', '1.2', '1.2.3', '', "
            "'CR', '', '', 'SCU', 'p', 'QUEUED', 0, '2026-01-01 00:00:00')"
        )
    assert schema_revision(old) is None
    engine = make_engine(url)
    assert schema_revision(engine) == head_revision()
    assert _diffs(engine) == []
    assert [j.sop_instance_uid for j in Jobs(engine).list_jobs()] == ["1.2.3.4"]


def test_a_node_without_auto_upgrade_refuses_an_old_schema(database_url):
    engine = create_db_engine(database_url)
    upgrade_schema(engine, "0001")
    with pytest.raises(SchemaError, match="dicomnode db upgrade"):
        make_engine(database_url, upgrade=False)
    upgrade_schema(engine)
    make_engine(database_url, upgrade=False).dispose()


def test_db_cli_upgrade_and_current(database_url, tmp_path):
    env_cfg = tmp_path / "c.toml"
    env_cfg.write_text(f'[node]\ndata_dir = "{tmp_path}"\n[database]\nurl = "{database_url}"\n')
    run = [sys.executable, "-m", "dicomnode.cli", "db"]

    def db(action):
        return subprocess.run([*run, action, "--config", str(env_cfg)], capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    before = db("current")
    assert before.returncode == 1 and "(empty)" in before.stdout, before.stderr
    up = db("upgrade")
    assert up.returncode == 0 and f"-> {head_revision()}" in up.stdout, up.stderr
    after = db("current")
    assert after.returncode == 0 and head_revision() in after.stdout


def test_serve_refuses_an_old_schema_with_a_clear_message_not_a_traceback(tmp_path):
    import subprocess
    import sys

    from dicomnode.store.db import create_db_engine, upgrade_schema
    from tests.support.peers import free_port

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_db_engine(url)
    upgrade_schema(engine, "0001")
    engine.dispose()
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "var"}"\nport = {free_port()}\n[api]\nport = 0\n'
        f'[database]\nurl = "{url}"\nauto_upgrade = false\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "dicomnode.cli", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "dicomnode db upgrade" in output and "Traceback" not in output
