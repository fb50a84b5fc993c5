"""`Node.start` runs its steps in order; a step that fails stops what the steps before it
started (the worker, outbox, lease and upload loops run before the SCP listens)."""

from __future__ import annotations

import os
import socket
import threading

import pytest
import structlog

from dicomnode.checks import StartupError
from dicomnode.config import NO_DESTINATION_WARNING, load_settings
from dicomnode.model.classifier import load_classifier
from dicomnode.node import Node
from tests.support.data import TINY_ARCH
from tests.support.peers import free_port


def test_a_failed_step_stops_the_loops_the_steps_before_it_started(tmp_path):
    # The TLS certificate cannot be read: the SCP step fails, after the loops started.
    settings = load_settings(None, environ={
        "DICOMNODE_NODE__DATA_DIR": str(tmp_path / "var"),
        "DICOMNODE_NODE__HOST": "127.0.0.1",
        "DICOMNODE_NODE__PORT": str(free_port()),
        "DICOMNODE_NODE__TLS_CERTIFICATE": str(tmp_path / "missing.crt"),
        "DICOMNODE_NODE__TLS_PRIVATE_KEY": str(tmp_path / "missing.key"),
        "DICOMNODE_API__PORT": "0",
    })  # fmt: skip
    classifier = load_classifier(None, device="cpu", demo_architecture=TINY_ARCH)
    node = Node(settings, classifier=classifier)
    with pytest.raises(StartupError, match="DICOM SCP: cannot listen"):
        node.start()
    names = {loop.name for loop in node.loops}
    assert {"worker-1", "outbox", "leases", "uploads"} <= names  # they had started
    assert not any(loop.is_alive() for loop in node.loops)
    alive = {t.name for t in threading.enumerate()}
    assert not names & alive
    assert node.stopped.is_set() and not node.started
    # The node never ran: its audit trail says neither "started" nor "stopped".
    assert node.audit is not None
    assert [e.detail for e in node.audit.query(limit=10)] == []


@pytest.mark.parametrize("taken", ["node.port", "api.port"])
def test_a_port_in_use_is_reported_before_the_model_is_prepared(tmp_path, taken):
    """A port clash is the first thing said: before the database and the model (whose
    preparation takes ~30 s with the real network), naming the port and who holds it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = {"node.port": free_port(), "api.port": free_port(), taken: port}
        settings = load_settings(None, environ={
            "DICOMNODE_NODE__DATA_DIR": str(tmp_path / "var"),
            "DICOMNODE_NODE__PORT": str(ports["node.port"]),
            "DICOMNODE_API__PORT": str(ports["api.port"]),
            "DICOMNODE_MODEL__DEMO_ARCHITECTURE": TINY_ARCH,
            "DICOMNODE_MODEL__DEVICE": "cpu",
        })  # fmt: skip
        node = Node(settings)  # no classifier given: the node would prepare the demo model
        with structlog.testing.capture_logs() as events, pytest.raises(StartupError) as failed:
            node.start()
    message = str(failed.value)
    assert f"127.0.0.1:{port}" in message and f"({taken})" in message
    assert f"held by pid {os.getpid()} " in message  # this test process holds it
    # Nothing after the check ran: no model prepared, no database, no loop.
    assert node.classifier is None and node.loops == []
    assert not (tmp_path / "var" / "models").exists()
    assert not (tmp_path / "var" / "dicomnode.db").exists()
    assert not any("model" in str(e.get("event", "")).lower() for e in events), events


def test_a_node_without_destination_says_so_loudly_at_start(tmp_path):
    settings = load_settings(None, environ={
        "DICOMNODE_NODE__DATA_DIR": str(tmp_path / "var"),
        "DICOMNODE_NODE__PORT": str(free_port()),
        "DICOMNODE_API__PORT": "0",
        "DICOMNODE_RETENTION__ENABLED": "false",
    })  # fmt: skip
    node = Node(settings, classifier=load_classifier(None, device="cpu",
                                                     demo_architecture=TINY_ARCH))  # fmt: skip
    with structlog.testing.capture_logs() as events:
        node.start()
        node.stop(grace=5)
    warnings = [e for e in events if e["log_level"] == "warning"]
    assert {"event": NO_DESTINATION_WARNING, "log_level": "warning"} in warnings, events
    started = next(e for e in events if e["event"] == "node started")
    assert started["destinations"] == []
