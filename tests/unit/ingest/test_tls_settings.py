"""Receiving TLS settings (dicomnode/ingest/tls.py): the client CA apart from the sending CA, client
verification that can be turned off, a TLS port beside the plaintext one, and the
combinations refused at load. Contexts are built from real certificates made with openssl."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from dicomnode.config import ConfigError, load_settings
from dicomnode.ingest.tls import Listener, client_ca_for_receiving, listeners, server_tls_context


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and key (also used as 'CA' files: any certificate will do)."""
    d = tmp_path_factory.mktemp("pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key",
         "-out", "node.crt", "-days", "2", "-subj", "/CN=node"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    (d / "client-ca.crt").write_bytes((d / "node.crt").read_bytes())
    return {"cert": d / "node.crt", "key": d / "node.key", "ca": d / "node.crt",
            "client_ca": d / "client-ca.crt"}  # fmt: skip


def _node(pem: dict[str, Path] | None = None, **node: object):
    values = dict(node)
    if pem is not None:
        values |= {"tls_certificate": str(pem["cert"]), "tls_private_key": str(pem["key"])}
    env = {f"DICOMNODE_NODE__{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
           for k, v in values.items()}  # fmt: skip
    return load_settings(None, environ=env).node


def test_an_existing_config_behaves_as_before(pem):
    """No new key set: the CA for sending also requires client certificates (mutual TLS)."""
    legacy = _node(pem, tls_ca_certificate=pem["ca"])
    assert client_ca_for_receiving(legacy) == pem["ca"]
    context = server_tls_context(legacy)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert listeners(legacy) == [Listener(11112, tls=True)]
    no_ca = server_tls_context(_node(pem))
    assert no_ca is not None and no_ca.verify_mode == ssl.CERT_NONE
    assert server_tls_context(_node()) is None and listeners(_node()) == [Listener(11112, False)]


def test_client_ca_and_verification_are_independent_of_the_sending_ca(pem):
    split = _node(pem, tls_ca_certificate=pem["ca"], tls_client_ca_certificate=pem["client_ca"])
    assert client_ca_for_receiving(split) == pem["client_ca"]
    off = _node(pem, tls_ca_certificate=pem["ca"], tls_verify_clients=False)
    assert client_ca_for_receiving(off) is None
    context = server_tls_context(off)
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    assert off.tls_ca_certificate == pem["ca"]  # still there for sending


def test_tls_port_listens_beside_a_plaintext_port(pem):
    node = _node(pem, port=11112, tls_port=2762)
    assert listeners(node) == [Listener(11112, tls=False), Listener(2762, tls=True)]


@pytest.mark.parametrize(
    ("with_tls", "values", "message"),
    [
        (False, {"tls_client_ca_certificate": "/x/ca.crt"},
         "node.tls_client_ca_certificate needs node.tls_certificate and tls_private_key"),
        (False, {"tls_port": 2762}, "node.tls_port needs node.tls_certificate"),
        (True, {"tls_port": 11112, "port": 11112}, "node.tls_port must differ from node.port"),
        (True, {"tls_port": 2762, "tls_required": True},
         "node.tls_required = true refuses plaintext, but node.tls_port"),
        (True, {"tls_port": 70000}, "node.tls_port"),
    ],
)  # fmt: skip
def test_contradictory_receiving_settings_are_refused_at_load(pem, with_tls, values, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        _node(pem if with_tls else None, **values)
