"""DICOM TLS: the SCP with dcmtk `echoscu`/`storescu +tls`, plaintext refused, and delivery
to a TLS-only dcmtk `storescp` (mutual TLS, certificates from a CA the test makes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dicomnode.checks import check_destinations
from dicomnode.config import load_settings
from tests.reliability.helpers import figures, small_cr, sop_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import echoscu, free_port, storescu, wait_until
from tests.support.procs import dcmtk_env, stop_process


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path) -> Path:
    """A CA, and server + client certificates it signed (SAN 127.0.0.1 / localhost)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=dicomnode test CA", cwd=directory)  # fmt: skip
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n")  # fmt: skip
    for name in ("node", "peer", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", str(ext),
                 cwd=directory)  # fmt: skip
    return directory


def _tls(pki: Path, name: str) -> list[str]:
    return ["+tls", str(pki / f"{name}.key"), str(pki / f"{name}.crt"), "+cf",
            str(pki / "ca.crt")]  # fmt: skip


def test_tls_scp_accepts_dcmtk_tls_refuses_plaintext_and_delivers_over_tls(tmp_path, node_factory):
    pki = make_pki(tmp_path / "pki")
    # A TLS-only destination: dcmtk storescp requiring a client certificate from our CA.
    peer_dir = tmp_path / "peer"
    peer_dir.mkdir()
    peer_port = free_port()
    peer = subprocess.Popen(
        ["storescp", "-v", "+xa", "-aet", "TLSPEER", "-od", str(peer_dir), *_tls(pki, "peer"),
         "--require-peer-cert", str(peer_port)],
        stdout=(tmp_path / "peer.log").open("wb"), stderr=subprocess.STDOUT, env=dcmtk_env(),
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: echoscu(port=peer_port, called="TLSPEER", extra=_tls(pki, "client"),
                            timeout=5).returncode == 0,
            timeout=30, what="TLS storescp answering",
        )  # fmt: skip
        config = write_node_config(
            tmp_path / "node",
            node={"tls_certificate": str(pki / "node.crt"),
                  "tls_private_key": str(pki / "node.key"),
                  "tls_ca_certificate": str(pki / "ca.crt"), "tls_required": True},
            destinations=[{"name": "tlspeer", "ae_title": "TLSPEER", "host": "127.0.0.1",
                           "port": peer_port, "tls": True}],
        )  # fmt: skip
        port = read_ports(config)[0]
        node = node_factory(config).wait_ready()
        # `doctor` checks a TLS destination over TLS, as the outbox sends to it.
        (echo_check,) = check_destinations(load_settings(str(config)))
        assert echo_check.status == "ok", echo_check.line()
        # So does `dicomnode echo --tls`, with the node's certificates.
        cli_echo = subprocess.run(
            [sys.executable, "-m", "dicomnode.cli", "echo", "--port", str(peer_port), "--aet",
             "TLSPEER", "--tls", "--config", str(config)], capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert cli_echo.returncode == 0, cli_echo.stderr

        tls_echo = echoscu(port=port, called="DICOMNODE", extra=_tls(pki, "client"))
        assert tls_echo.returncode == 0, tls_echo.stderr
        plain_echo = echoscu(port=port, called="DICOMNODE", timeout=10)
        assert plain_echo.returncode != 0
        # A client certificate from another CA is refused too.
        other = make_pki(tmp_path / "other-pki")
        foreign = echoscu(port=port, called="DICOMNODE", timeout=10,
                          extra=["+tls", str(other / "client.key"), str(other / "client.crt"),
                                 "+cf", str(pki / "ca.crt")])  # fmt: skip
        assert foreign.returncode != 0

        image = small_cr(tmp_path / "in" / "a.dcm")
        plain_store = storescu([image], port=port, timeout=10)
        assert plain_store.statuses == [None]
        stored = storescu([image], port=port, extra=_tls(pki, "client"))
        assert stored.statuses == [0x0000], stored.stderr[-2000:]

        # The results go out over TLS to the TLS-only peer.
        def received() -> list[Path]:
            files = [p for p in peer_dir.iterdir() if p.is_file()]
            return files if len(files) >= 2 else []

        files = wait_until(received, timeout=120, what="SC + SR received over TLS")
        classes = sorted(str(__import__("pydicom").dcmread(f, stop_before_pixels=True)
                             .SOPClassUID) for f in files)  # fmt: skip
        assert classes[0] == "1.2.840.10008.5.1.4.1.1.7" and "88" in classes[1]
        assert sop_uid(image) not in {sop_uid(f) for f in files}
        figures("dicom tls", tls_echo="ok", plaintext="refused", foreign_ca="refused",
                tls_store="0x0000", delivered_over_tls=len(files))  # fmt: skip
        assert node.running
    finally:
        stop_process(peer, timeout=10)
