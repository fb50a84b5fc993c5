"""The PHI filter of the logs hashes with the node's own salt.

`dicomnode serve` configures logging before the node makes (or reads) `data_dir/log-salt`;
without the node handing its salt to the filter, UIDs that slipped into log events were hashed
with an empty salt and could not be matched with the node's own `study`/`sop` fields.
"""

from __future__ import annotations

from dicomnode import logconfig
from dicomnode.config import load_settings
from dicomnode.model.classifier import load_classifier
from dicomnode.node import Node
from dicomnode.uids import hash_uid
from tests.support.data import TINY_ARCH
from tests.support.peers import free_port


def test_phi_filter_uses_the_salt_kept_in_the_data_dir(tmp_path):
    settings = load_settings(
        None,
        environ={
            "DICOMNODE_NODE__DATA_DIR": str(tmp_path / "var"),
            "DICOMNODE_NODE__PORT": str(free_port()),
            "DICOMNODE_API__PORT": "0",
        },
    )
    logconfig.set_salt("")  # as `dicomnode serve` leaves it with the default empty log_salt
    classifier = load_classifier(None, device="cpu", demo_architecture=TINY_ARCH)
    node = Node(settings, classifier=classifier)
    try:
        node.start()
        salt = (tmp_path / "var" / "log-salt").read_text().strip()
        assert salt
        uid = "1.2.826.0.1.3680043.8.498.12345"
        assert logconfig.scrub_text(f"study {uid}") == f"study uid:{hash_uid(uid, salt)}"
    finally:
        node.stop(grace=5)
        logconfig.set_salt("")
