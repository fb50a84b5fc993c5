"""`Node.start` runs its steps in order; a step that fails stops what the steps before it
started (the worker, outbox, lease and upload loops run before the SCP listens)."""

from __future__ import annotations

import socket
import threading

import pytest

from dicomnode.checks import StartupError
from dicomnode.config import load_settings
from dicomnode.model.classifier import load_classifier
from dicomnode.node import Node
from tests.support.data import TINY_ARCH


def test_a_failed_step_stops_the_loops_the_steps_before_it_started(tmp_path):
    with socket.socket() as taken:  # the DICOM port is in use: the SCP step fails
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = load_settings(None, environ={
            "DICOMNODE_NODE__DATA_DIR": str(tmp_path / "var"),
            "DICOMNODE_NODE__HOST": "127.0.0.1",
            "DICOMNODE_NODE__PORT": str(port),
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
