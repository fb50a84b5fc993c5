"""DICOM TLS for receiving: which ports speak TLS, and which client certificates they require.

Sending (`dicomnode.deliver.scu.client_tls_context`) verifies a destination against
`node.tls_ca_certificate`. Receiving asks for a client certificate only when
`node.tls_verify_clients` is true and a CA for client certificates is set:
`node.tls_client_ca_certificate`, else (as before the two were split) `node.tls_ca_certificate`.
So a site can verify its PACS's private CA when sending without requiring certificates from
modalities that have none.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from dicomnode.config import NodeSettings


def client_ca_for_receiving(node: NodeSettings) -> Path | None:
    """The CA whose client certificates the SCP requires; None: no client certificate asked."""
    if not node.tls_certificate or not node.tls_verify_clients:
        return None
    return node.tls_client_ca_certificate or node.tls_ca_certificate


def server_tls_context(node: NodeSettings) -> ssl.SSLContext | None:
    """The SCP's TLS context (TLS 1.2 or later); None without a certificate."""
    if not node.tls_certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(node.tls_certificate), str(node.tls_private_key))
    ca = client_ca_for_receiving(node)
    if ca is not None:
        context.load_verify_locations(str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE  # no certificate request sent to the client
    return context


@dataclass(frozen=True)
class Listener:
    """One listening port of the SCP."""

    port: int
    tls: bool


def listeners(node: NodeSettings) -> list[Listener]:
    """What the SCP listens on: `node.port` (TLS only when a certificate is set and
    `tls_port` is 0), plus `node.tls_port` with TLS when set (then `node.port` is plaintext)."""
    has_tls = bool(node.tls_certificate and node.tls_private_key)
    if has_tls and node.tls_port:
        return [Listener(node.port, tls=False), Listener(node.tls_port, tls=True)]
    return [Listener(node.port, tls=has_tls)]


def describe_receiving(node: NodeSettings) -> str:
    """One line for `doctor` and the logs: the ports and what each requires. No secrets (the
    certificate files are named by their settings, not read)."""
    parts = []
    for listener in listeners(node):
        if not listener.tls:
            parts.append(f"port {listener.port}: plaintext")
            continue
        ca = client_ca_for_receiving(node)
        if ca is not None:
            if node.tls_client_ca_certificate:
                which = "tls_client_ca_certificate"
            else:
                which = "tls_ca_certificate"
            client = f"client certificate required, signed by node.{which} ({ca})"
        elif not node.tls_verify_clients:
            client = "no client certificate asked for (node.tls_verify_clients = false)"
        else:
            client = "no client certificate asked for (no CA for client certificates)"
        parts.append(f"port {listener.port}: TLS 1.2+ only, {client}")
    return "; ".join(parts)
