"""DICOM TLS: the SCP with dcmtk `echoscu`/`storescu +tls`, plaintext refused, and delivery
to a TLS-only dcmtk `storescp` (mutual TLS, certificates from a CA the test makes)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomnode.checks import check_destinations, check_tls_receiving
from dicomnode.config import Destination, load_settings
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


def _anonymous_tls(pki: Path) -> list[str]:
    """A TLS client without a certificate of its own (a modality without one): it still
    verifies the node against `pki`'s CA."""
    return ["+tla", "+cf", str(pki / "ca.crt")]


def _tls_storescp(tmp_path: Path, aet: str, pki: Path, *, peer_cert: str,
                  echo_with: list[str]) -> tuple[subprocess.Popen[bytes], int, Path]:  # fmt: skip
    """A TLS-only dcmtk storescp with `pki`'s peer certificate (`peer_cert`: storescp's
    --require-peer-cert or --ignore-peer-cert), answering C-ECHO over TLS when returned."""
    peer_dir = tmp_path / aet.lower()
    peer_dir.mkdir()
    peer_port = free_port()
    peer = subprocess.Popen(
        ["storescp", "-v", "+xa", "-aet", aet, "-od", str(peer_dir), *_tls(pki, "peer"),
         peer_cert, str(peer_port)],
        stdout=(tmp_path / f"{aet.lower()}.log").open("wb"), stderr=subprocess.STDOUT,
        env=dcmtk_env(), start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: echoscu(port=peer_port, called=aet, extra=echo_with, timeout=5).returncode
            == 0,
            timeout=30, what=f"TLS storescp {aet} answering",
        )  # fmt: skip
    except BaseException:
        stop_process(peer, timeout=10)
        raise
    return peer, peer_port, peer_dir


def _tls_peer(tmp_path: Path, pki: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The destination: TLS only, requiring a client certificate from `pki`'s CA."""
    return _tls_storescp(tmp_path, "TLSPEER", pki, peer_cert="--require-peer-cert",
                         echo_with=_tls(pki, "client"))  # fmt: skip


def _tls_node_config(tmp_path: Path, pki: Path, peer_port: int, **node: object) -> Path:
    """A node with `pki`'s certificates, trusting its CA, delivering over TLS to the peer."""
    return write_node_config(
        tmp_path / "node",
        node={"tls_certificate": str(pki / "node.crt"), "tls_private_key": str(pki / "node.key"),
              "tls_ca_certificate": str(pki / "ca.crt"), **node},
        destinations=[{"name": "tlspeer", "ae_title": "TLSPEER", "host": "127.0.0.1",
                       "port": peer_port, "tls": True}],
    )  # fmt: skip


def test_tls_scp_accepts_dcmtk_tls_refuses_plaintext_and_delivers_over_tls(tmp_path, node_factory):
    pki = make_pki(tmp_path / "pki")
    # A TLS-only destination: dcmtk storescp requiring a client certificate from our CA.
    peer, peer_port, peer_dir = _tls_peer(tmp_path, pki)
    try:
        config = _tls_node_config(tmp_path, pki, peer_port, tls_required=True)
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

        # The results go out over TLS to the TLS-only peer: SC and SR (and a GSPS when the
        # demo's outcome is not negative).
        def sop_class(path: Path) -> str:
            return str(__import__("pydicom").dcmread(path, stop_before_pixels=True).SOPClassUID)

        def received() -> list[Path]:
            files = [p for p in peer_dir.iterdir() if p.is_file()]
            classes = {sop_class(f) for f in files}
            sr = any(".88." in c for c in classes)
            return files if "1.2.840.10008.5.1.4.1.1.7" in classes and sr else []

        files = wait_until(received, timeout=120, what="SC + SR received over TLS")
        extra = {sop_class(f) for f in files} - {"1.2.840.10008.5.1.4.1.1.7"}
        assert all(".88." in c or c == "1.2.840.10008.5.1.4.1.1.11.1" for c in extra), extra
        assert sop_uid(image) not in {sop_uid(f) for f in files}
        figures("dicom tls", tls_echo="ok", plaintext="refused", foreign_ca="refused",
                tls_store="0x0000", delivered_over_tls=len(files))  # fmt: skip
        assert node.running
    finally:
        stop_process(peer, timeout=10)


def test_without_client_verification_a_client_without_certificate_stores_and_sending_still_verifies(
    tmp_path, node_factory
):
    """`tls_verify_clients = false`: the CA set for sending no longer makes receiving mutual."""
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other-pki")
    peer, peer_port, peer_dir = _tls_peer(tmp_path, pki)
    # A destination whose certificate comes from a CA the node does not trust.
    try:
        rogue_scp, rogue_port, _ = _tls_storescp(tmp_path, "ROGUE", other,
                                                 peer_cert="--ignore-peer-cert",
                                                 echo_with=_anonymous_tls(other))  # fmt: skip
    except BaseException:
        stop_process(peer, timeout=10)
        raise
    try:
        config = _tls_node_config(tmp_path, pki, peer_port, tls_verify_clients=False)
        port = read_ports(config)[0]
        node = node_factory(config).wait_ready()

        # Receiving: no client certificate asked for, but still TLS only.
        anonymous = echoscu(port=port, called="DICOMNODE", extra=_anonymous_tls(pki))
        assert anonymous.returncode == 0, anonymous.stderr
        assert echoscu(port=port, called="DICOMNODE", timeout=10).returncode != 0
        image = small_cr(tmp_path / "in" / "a.dcm")
        stored = storescu([image], port=port, extra=_anonymous_tls(pki))
        assert stored.statuses == [0x0000], stored.stderr[-2000:]
        settings = load_settings(str(config))
        receiving = check_tls_receiving(settings)
        assert receiving.status == "ok" and "tls_verify_clients = false" in receiving.message

        # Sending: the destination is still verified against tls_ca_certificate …
        rogue = Destination(name="rogue", ae_title="ROGUE", host="127.0.0.1", port=rogue_port,
                            tls=True)  # fmt: skip
        rogue_settings = settings.model_copy(update={"destinations": [rogue]})
        (refused,) = check_destinations(rogue_settings)
        assert refused.status == "warn" and "failed" in refused.message, refused.line()
        (trusted,) = check_destinations(settings)
        assert trusted.status == "ok", trusted.line()

        # … and the results reach the trusted TLS peer, which requires the node's certificate.
        def received() -> list[Path]:
            files = [p for p in peer_dir.iterdir() if p.is_file()]
            return files if len(files) >= 2 else []

        files = wait_until(received, timeout=120, what="SC + SR received over TLS")
        figures("tls without client verification", anonymous_store="0x0000",
                plaintext="refused", rogue_destination="refused",
                delivered_over_tls=len(files))  # fmt: skip
        assert node.running
    finally:
        stop_process(rogue_scp, timeout=10)
        stop_process(peer, timeout=10)


def test_a_separate_client_ca_decides_who_may_send_to_the_node(tmp_path, node_factory):
    """`tls_client_ca_certificate`: client certificates from the sending CA are refused."""
    pki = make_pki(tmp_path / "pki")  # the PACS's CA: node certificate, TLS destinations
    modalities = make_pki(tmp_path / "modality-pki")  # the CA of the modalities' certificates
    config = write_node_config(
        tmp_path / "node",
        node={"tls_certificate": str(pki / "node.crt"), "tls_private_key": str(pki / "node.key"),
              "tls_ca_certificate": str(pki / "ca.crt"),
              "tls_client_ca_certificate": str(modalities / "ca.crt")},
    )  # fmt: skip
    port = read_ports(config)[0]
    node_factory(config).wait_ready()
    modality = ["+tls", str(modalities / "client.key"), str(modalities / "client.crt"),
                "+cf", str(pki / "ca.crt")]  # fmt: skip
    ok = echoscu(port=port, called="DICOMNODE", extra=modality)
    assert ok.returncode == 0, ok.stderr
    stored = storescu([small_cr(tmp_path / "in" / "a.dcm")], port=port, extra=modality)
    assert stored.statuses == [0x0000], stored.stderr[-2000:]
    # A certificate from the sending CA no longer opens the door, nor does none at all.
    assert echoscu(port=port, called="DICOMNODE", extra=_tls(pki, "client"),
                   timeout=10).returncode != 0  # fmt: skip
    assert echoscu(port=port, called="DICOMNODE", extra=_anonymous_tls(pki),
                   timeout=10).returncode != 0  # fmt: skip
    receiving = check_tls_receiving(load_settings(str(config)))
    assert "signed by node.tls_client_ca_certificate" in receiving.message, receiving.line()


def _accepts_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_plaintext_port_and_tls_port_side_by_side_share_one_scp(tmp_path, node_factory):
    """`tls_port`: TLS there, plaintext on `port`; one AE (one association limit); both stop."""
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    config = write_node_config(
        tmp_path / "node",
        node={"tls_certificate": str(pki / "node.crt"), "tls_private_key": str(pki / "node.key"),
              "tls_ca_certificate": str(pki / "ca.crt"), "tls_port": tls_port,
              "max_associations": 1},
        api={"token": "t0ken"},
    )  # fmt: skip
    port = read_ports(config)[0]
    node = node_factory(config).wait_ready()

    plain = storescu([small_cr(tmp_path / "in" / "plain.dcm")], port=port)
    assert plain.statuses == [0x0000], plain.stderr[-2000:]
    secure = storescu([small_cr(tmp_path / "in" / "tls.dcm")], port=tls_port,
                      extra=_tls(pki, "client"))  # fmt: skip
    assert secure.statuses == [0x0000], secure.stderr[-2000:]
    # max_associations = 1 counts both ports: one held in plaintext refuses one over TLS.
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)

    def hold() -> Any:  # once the stores' associations have ended in the node
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
        return assoc if assoc.is_established else None

    held = wait_until(hold, timeout=60, what="an association held on the plaintext port")
    try:
        busy = echoscu(port=tls_port, called="DICOMNODE", extra=_tls(pki, "client"), timeout=10)
        assert busy.returncode != 0
    finally:
        held.release()
    wait_until(
        lambda: echoscu(port=tls_port, called="DICOMNODE", extra=_tls(pki, "client"),
                        timeout=10).returncode == 0,
        timeout=60, what="TLS port free again",
    )  # fmt: skip

    # (Last: a refused TLS hello on the plaintext port holds its slot until acse_timeout.)
    # Each port speaks only its own: plaintext to the TLS port, TLS to the plaintext port fail.
    assert storescu([small_cr(tmp_path / "in" / "x.dcm")], port=tls_port,
                    timeout=10).statuses == [None]  # fmt: skip
    assert echoscu(port=tls_port, called="DICOMNODE", timeout=10).returncode != 0
    assert echoscu(port=port, called="DICOMNODE", extra=_tls(pki, "client"),
                   timeout=10).returncode != 0  # fmt: skip
    # The TLS port requires the client certificate (legacy: tls_ca_certificate).
    assert echoscu(port=tls_port, called="DICOMNODE", extra=_anonymous_tls(pki),
                   timeout=10).returncode != 0  # fmt: skip

    # Both went through the same handlers: two jobs, both classified.
    headers = {"Authorization": "Bearer t0ken"}

    def classified() -> list[dict]:
        jobs = httpx.get(node.api_url + "/api/jobs", headers=headers, timeout=10).json()["jobs"]
        return jobs if [j["state"] for j in jobs] == ["classified"] * 2 else []

    wait_until(classified, timeout=120, what="both images classified")

    started = [line for line in node.log_path.read_text().splitlines() if "node started" in line]
    assert f'"tls": {tls_port}' in started[-1] and f'"plaintext": {port}' in started[-1]
    receiving = check_tls_receiving(load_settings(str(config)))
    assert f"port {port}: plaintext" in receiving.message
    assert f"port {tls_port}: TLS 1.2+ only, client certificate required" in receiving.message

    # A graceful stop closes both ports.
    assert node.stop(timeout=60) == 0
    assert not _accepts_connections(port) and not _accepts_connections(tls_port)
    figures("plaintext + tls ports", plaintext_store="0x0000", tls_store="0x0000",
            plaintext_to_tls_port="refused", shared_association_limit="yes")  # fmt: skip
