import io
import json
import logging

import structlog

from dicomnode.logconfig import configure_logging, get_logger, scrub_text


def _lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_with_phi_hashed_and_uids_scrubbed():
    stream = io.StringIO()
    configure_logging(json=True, stream=stream, salt="s")
    structlog.contextvars.clear_contextvars()
    get_logger("t").info(
        "received", patient_name="CANARY^NAME", patient_id="CANARY-ID",
        detail="from 1.2.840.113619.2.55.3.604688119",
    )  # fmt: skip
    logging.getLogger("pynetdicom.assoc").warning("bad 1.2.826.0.1.3680043.8.498.1 x")
    out = stream.getvalue()
    assert "CANARY" not in out and "1.2.840.113619" not in out and "1.2.826.0.1" not in out
    events = _lines(stream)
    assert events[0]["event"] == "received" and "patient_name_hash" in events[0]
    assert events[1]["logger"] == "pynetdicom.assoc" and "uid:" in events[1]["event"]


def test_scrub_keeps_ordinary_numbers():
    assert scrub_text("took 12.5 ms, version 1.2") == "took 12.5 ms, version 1.2"
    assert "1.2.3.4" not in scrub_text("uid 1.2.3.4")


def test_a_start_logs_a_migration_once_and_nothing_when_there_is_none(tmp_path):
    """Alembic's 13 INFO lines at every start (and on `retention --dry-run`) are gone: a new
    database logs one "database schema migrated" line, an up-to-date one nothing."""
    from dicomnode.store.db import make_engine

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    stream = io.StringIO()
    configure_logging(level="INFO", json=True, stream=stream, salt="s")
    make_engine(url).dispose()
    events = _lines(stream)
    assert [e["event"] for e in events] == ["database schema migrated"], events
    assert events[0]["revision_before"] is None and events[0]["revision"]
    stream.truncate(0)
    stream.seek(0)
    make_engine(url).dispose()
    assert _lines(stream) == []
