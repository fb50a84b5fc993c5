"""Lifecycle: SIGTERM mid-burst loses nothing acknowledged and exits within the grace period;
a full disk answers 0xA700 and leaves nothing behind; start-up checks and `dicomnode doctor`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pydicom

from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import StatusSCP, storescu, wait_until
from tests.support.smallcr import db_rows, small_cr

GRACE = 12.0


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomnode.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sigterm_during_a_burst_of_50_loses_nothing_and_exits_within_the_grace_period(
    tmp_path, node_factory
):
    with StatusSCP() as pacs:
        destination = {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.port}
        config = write_node_config(
            tmp_path / "node", destinations=[destination], node={"shutdown_grace_seconds": GRACE}
        )
        port = read_ports(config)[0]
        db = tmp_path / "node" / "var" / "dicomnode.db"
        study = "1.2.826.0.1.3680043.8.498.555.1"
        files = [small_cr(tmp_path / "in" / f"{i}.dcm", study_uid=study) for i in range(50)]
        node = node_factory(config).wait_ready()

        with ThreadPoolExecutor(1) as pool:
            burst = pool.submit(storescu, files, port=port, timeout=120)
            wait_until(
                lambda: db_rows(db, "select count(*) from job")[0][0] >= 5,
                timeout=120,
                what="the first images of the burst received",
            )
            started = time.monotonic()
            os.kill(node.pid, signal.SIGTERM)
            wait_until(
                lambda: node.returncode is not None,
                timeout=GRACE + 30,
                what="the node to exit after SIGTERM",
            )
            elapsed = time.monotonic() - started
            result = burst.result(timeout=180)
        assert node.returncode == 0, node.describe()
        # The grace period bounds the shutdown itself; allow for the interpreter's exit.
        assert elapsed < GRACE + 5, f"exit took {elapsed:.1f} s (grace {GRACE} s)"
        log = node.log_path.read_text()
        assert "node stopped" in log

        acknowledged = {
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            for f, status in zip(files, result.statuses, strict=True)
            if status == 0
        }
        assert acknowledged, result.stderr[-2000:]
        rows = dict(db_rows(db, "select sop_instance_uid, state from job"))
        assert acknowledged <= set(rows), "an acknowledged image has no job row"
        # (SQLAlchemy stores the enum's name: QUEUED, PROCESSING, CLASSIFIED, …)
        assert "PROCESSING" not in rows.values(), "a job was left in processing"

        node.start().wait_ready()

        def all_processed() -> bool:
            states = dict(db_rows(db, "select sop_instance_uid, state from job"))
            return all(states.get(uid) == "CLASSIFIED" for uid in acknowledged)

        wait_until(all_processed, timeout=300, what="every acknowledged image classified")
        sent = wait_until(
            lambda: len(set(pacs.stored)) >= len(acknowledged) + 1,
            timeout=120,
            what="their SCs and the SR delivered",
        )
        assert sent


def test_below_min_free_mb_c_store_gets_a700_and_no_file_remains(tmp_path, node_factory):
    config = write_node_config(tmp_path / "node", node={"min_free_mb": 10**9})
    port = read_ports(config)[0]
    node = node_factory(config).wait_ready()
    files = [
        small_cr(tmp_path / "in" / f"{i}.dcm", study_uid="1.2.826.0.1.3680043.8.498.556")
        for i in range(2)
    ]
    result = storescu(files, port=port)
    assert result.statuses == [0xA700, 0xA700], result.stderr[-2000:]
    spool = tmp_path / "node" / "var" / "spool"
    assert [p for p in spool.rglob("*") if p.is_file()] == []  # no partial file, no tmp left
    db = tmp_path / "node" / "var" / "dicomnode.db"
    assert db_rows(db, "select count(*) from job") == [(0,)]
    assert "disk space low" in node.log_path.read_text()
    wait_until(
        lambda: db_rows(
            db,
            "select count, outcome, detail from audit_event "
            "where event = 'DICOMInstancesTransferred'",
        ),
        timeout=30,
        what="the refusal audited",
    )
    [(count, outcome, detail)] = db_rows(
        db,
        "select count, outcome, detail from audit_event where event = 'DICOMInstancesTransferred'",
    )
    assert count == 2 and outcome == 8 and "0xA700" in detail

    done = _cli("doctor", "--config", str(config))
    assert done.returncode == 1
    assert "[FAIL] disk free" in done.stdout and "0xA700" in done.stdout


def test_doctor_reports_each_check_and_serve_refuses_to_start_on_a_failure(tmp_path):
    config = write_node_config(tmp_path / "ok")
    done = _cli("doctor", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("spool writable", "disk free", "database", "model"):
        assert name in done.stdout
    assert "UNTRAINED DEMO" in done.stdout and "all checks passed" not in done.stdout
    last = done.stdout.rstrip().splitlines()[-1]  # the warnings are pointed at, not hidden
    assert last.startswith("no check failed; read the warnings:") and "destinations" in last
    # checked as the node runs it: runtime auto on a CPU, measured on this host, and shown
    assert "loaded (auto (" in done.stdout and "auto chose " in done.stdout

    # An unreachable database: named (without its password), and the exit code says so.
    bad_db = write_node_config(
        tmp_path / "db",
        extra_sections={
            "database": {"url": "postgresql+psycopg://dicomnode:s3cret@127.0.0.1:1/dicomnode"}
        },
    )
    done = _cli("doctor", "--config", str(bad_db))
    assert done.returncode == 1 and "[FAIL] database" in done.stdout
    assert "s3cret" not in done.stdout + done.stderr

    # The data directory is a file: the spool cannot be written; serve refuses with a message.
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    bad_spool = write_node_config(tmp_path / "spool", node={"data_dir": str(blocked)})
    done = _cli("doctor", "--config", str(bad_spool))
    assert done.returncode == 1 and "[FAIL] spool writable" in done.stdout
    done = _cli("serve", "--config", str(bad_spool), timeout=120)
    assert done.returncode == 3
    assert "start-up check failed" in done.stderr and "spool writable" in done.stderr


def test_start_and_graceful_stop_are_audited(tmp_path, node_factory):
    config = write_node_config(tmp_path / "node", api={"token": "t0ken"})
    node = node_factory(config).wait_ready()
    headers = {"Authorization": "Bearer t0ken"}
    node.stop(timeout=GRACE + 10)
    assert node.returncode == 0
    node.start().wait_ready()
    events = httpx.get(
        node.api_url + "/api/audit?event=ApplicationActivity", headers=headers, timeout=10
    ).json()["events"]
    assert [e["detail"] for e in events] == ["node started", "node stopped", "node started"]
