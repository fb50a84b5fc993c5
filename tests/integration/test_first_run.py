"""What an administrator meets first: `--version`, `dicomnode echo` naming why a peer cannot
be reached (real sockets, real dcmtk peer), `doctor` from another folder, and `serve` on a
port that is taken."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dicomnode import __version__
from dicomnode.cli import main
from tests.support.dcmtk import StoreSCP
from tests.support.nodecfg import write_node_config
from tests.support.peers import free_port

#: A-ABORT PDU (PS3.8 9.3.8): type 0x07, length 4, source 0 (service user), reason 0.
A_ABORT = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0])


def _echo(capsys, port: int, *extra: str) -> tuple[int, str]:
    code = main(["echo", "--host", "127.0.0.1", "--port", str(port), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"dicomnode {__version__}"


def test_echo_says_connection_refused_for_a_closed_port(capsys):
    code, text = _echo(capsys, free_port(), "--timeout", "5")
    assert code == 2 and "connection refused" in text and "aborted" not in text, text


def test_echo_says_timed_out_when_nothing_answers_the_connection(capsys):
    """A listener whose accept queue is full drops new connections unanswered, as a firewall
    or a host that is down would (the one way to see it without leaving this machine)."""
    with socket.socket() as full, socket.socket() as queued:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        queued.connect(full.getsockname())  # fills the queue: the next SYN is dropped
        code, text = _echo(capsys, full.getsockname()[1], "--timeout", "1")
    assert code == 2 and "host unreachable or timed out" in text, text
    assert "refused" not in text and "aborted" not in text


def test_echo_says_rejected_by_a_rejecting_peer(capsys, tmp_path):
    with StoreSCP(tmp_path, extra=("--refuse",)) as scp:
        code, text = _echo(capsys, scp.port, "--aet", scp.aet, "--timeout", "10")
    assert code == 2 and "association rejected by the peer (Rejected" in text, text


def test_echo_says_aborted_by_a_peer_that_aborts(capsys):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def abort_one() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)  # the A-ASSOCIATE-RQ
                conn.sendall(A_ABORT)

        peer = threading.Thread(target=abort_one, daemon=True)
        peer.start()
        code, text = _echo(capsys, server.getsockname()[1], "--timeout", "10")
        peer.join(timeout=10)
    assert code == 2 and "association aborted by the peer" in text, text


def test_doctor_elsewhere_uses_the_config_folder_and_warns_without_destination(
    tmp_path, capsys, monkeypatch
):
    """Relative paths come from the config file's folder: doctor run in another folder creates
    nothing there. No destination is a visible warning, not "all checks passed"."""
    config = write_node_config(tmp_path / "etc", node={"data_dir": "var"},
                               model={"runtime": "torch"})  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code = main(["doctor", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert list(elsewhere.iterdir()) == []
    assert (tmp_path / "etc" / "var" / "spool").is_dir()
    assert (tmp_path / "etc" / "var" / "models").is_dir()
    assert "[WARN] destinations: no [[destinations]] configured" in out
    assert "all checks passed" not in out
    assert out.rstrip().splitlines()[-1].startswith("no check failed; read the warnings:")


def test_serve_on_a_taken_port_fails_at_once_naming_it(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_node_config(tmp_path, api={"port": port})
        command = [sys.executable, "-m", "dicomnode.cli", "serve", "--config", str(config)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert f"HTTP port (api.port): cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Address already in use" in done.stderr
    assert not Path(tmp_path / "var" / "models").exists()  # the model was never prepared
