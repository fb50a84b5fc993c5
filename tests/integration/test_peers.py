"""The real-peer harness works against the real tools (Orthanc, dcmtk, pynetdicom)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless

from tests.support.data import (
    RG1_J2KI,
    RG3_J2KR,
    RG3_UNCI,
    cat_dx,
    copy_with_new_uids,
    ct_small,
    new_uid,
    testdata,
)
from tests.support.peers import (
    ORTHANC_PYTHON_PLUGIN,
    NodeProcess,
    Orthanc,
    StatusSCP,
    StoreSCP,
    WaitTimeout,
    echoscu,
    free_port,
    storescu,
    wait_until,
)


def _header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


# ---------------------------------------------------------------------------------- Orthanc


def test_storescu_sends_jpeg2000_lossless_to_orthanc_unchanged(orthanc: Orthanc) -> None:
    src = testdata(RG3_J2KR)
    result = storescu([src], port=orthanc.dicom_port, called=orthanc.aet).check()

    assert result.statuses == [0x0000]
    [instance] = orthanc.find_instances(SOPInstanceUID=_header(src).SOPInstanceUID)
    assert orthanc.transfer_syntax(instance) == JPEG2000Lossless
    stored = orthanc.instance_dataset(instance)
    assert stored.PixelData == pydicom.dcmread(src).PixelData


def test_storescu_without_the_compressed_proposal_fails(orthanc: Orthanc) -> None:
    # dcmtk cannot convert JPEG 2000 to an uncompressed syntax: the store is never sent.
    result = storescu(
        [testdata(RG3_J2KR)], port=orthanc.dicom_port, called=orthanc.aet, propose="uncompressed"
    )

    assert result.statuses == [None]
    assert not result.ok
    with pytest.raises(AssertionError, match="no response"):
        result.check()
    assert orthanc.instances() == []


def test_explicit_proposal_flag_is_passed_to_storescu(orthanc: Orthanc) -> None:
    result = storescu(
        [testdata(RG3_J2KR)], port=orthanc.dicom_port, called=orthanc.aet, propose="-xv"
    )

    assert result.check().statuses == [0x0000]
    assert "-xv" in result.args


def test_rest_upload_then_find_by_tags_and_study_of(orthanc: Orthanc, tmp_path: Path) -> None:
    study_uid = new_uid("test_peers", "study")
    copy = copy_with_new_uids(
        ct_small(),
        tmp_path / "ct.dcm",
        study_uid=study_uid,
        series_uid=new_uid("test_peers", "series"),
        PatientID="DN-TEST-1",
    )
    sop_uid = _header(copy).SOPInstanceUID

    answer = orthanc.upload(copy)

    assert answer["Status"] == "Success"
    assert orthanc.instances() == [answer["ID"]]
    assert orthanc.find_instances(PatientID="DN-TEST-1") == [answer["ID"]]
    assert orthanc.find_instances(Modality="CT", StudyInstanceUID=study_uid) == [answer["ID"]]
    assert orthanc.find_instances(PatientID="NOBODY") == []
    assert orthanc.instance_tags(answer["ID"])["SOPInstanceUID"] == sop_uid
    study = orthanc.study_of(sop_uid)
    assert study is not None
    assert orthanc.studies() == [study]
    assert orthanc.get(f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"] == study_uid
    assert orthanc.study_of(new_uid("test_peers", "absent")) is None
    assert orthanc.upload(copy)["Status"] == "AlreadyStored"


def test_restart_keeps_ports_and_data(orthanc: Orthanc) -> None:
    orthanc.upload(ct_small())
    before = orthanc.instances()
    ports = (orthanc.http_port, orthanc.dicom_port)

    orthanc.stop()
    assert not orthanc.running
    assert echoscu(port=orthanc.dicom_port, called=orthanc.aet, timeout=5).returncode != 0
    orthanc.start()

    assert (orthanc.http_port, orthanc.dicom_port) == ports
    assert orthanc.instances() == before
    assert echoscu(port=orthanc.dicom_port, called=orthanc.aet).returncode == 0
    orthanc.restart()
    assert orthanc.instances() == before
    assert orthanc.stop(kill=True) == -9  # a crash keeps what was stored too
    orthanc.start()
    assert orthanc.instances() == before
    assert len(orthanc.log_paths) == 4
    assert all(p.exists() for p in orthanc.log_paths)


def test_echoscu_against_orthanc_and_a_closed_port(orthanc: Orthanc) -> None:
    assert echoscu(port=orthanc.dicom_port, called=orthanc.aet).returncode == 0
    assert echoscu(port=free_port(), timeout=5).returncode != 0


def test_orthanc_sends_to_storescp_through_its_modalities(
    orthanc_factory: Callable[..., Orthanc], storescp_peer: StoreSCP
) -> None:
    server = orthanc_factory(
        modalities={"RX": [storescp_peer.aet, "127.0.0.1", storescp_peer.port]}
    )
    src = testdata(RG3_J2KR)
    instance = server.upload(src)["ID"]

    assert server.echo_modality("RX")
    server.send_to_modality("RX", [instance])

    [received] = storescp_peer.wait_for_files(1)
    assert pydicom.dcmread(received).SOPInstanceUID == _header(src).SOPInstanceUID


def test_orthanc_from_a_commented_config_file_with_a_python_plugin(
    orthanc_factory: Callable[..., Orthanc], tmp_path: Path
) -> None:
    conf = tmp_path / "repo-orthanc"
    conf.mkdir()
    (conf / "plugin.py").write_text(
        "import orthanc\n"
        "def ping(output, uri, **request):\n"
        "    output.AnswerBuffer('pong', 'text/plain')\n"
        "orthanc.RegisterRestCallback('/dicomnode-test/ping', ping)\n"
    )
    (conf / "orthanc.json").write_text(
        "{\n"
        "  // the repo's file may carry comments, fixed ports and system paths\n"
        '  "Name": "from-file", /* kept */\n'
        '  "HttpPort": 8042, "DicomPort": 4242,\n'
        '  "StorageDirectory": "/var/lib/orthanc/db-v6",\n'
        '  "Plugins": ["' + str(ORTHANC_PYTHON_PLUGIN) + '"],\n'
        '  "PythonScript": "plugin.py",\n'
        '  "StableAge": 60\n'
        "}\n"
    )

    server = orthanc_factory(config=conf / "orthanc.json", extra={"StableAge": 2})

    assert server.get("/system")["Name"] == "from-file"
    assert (server.http_port, server.dicom_port) != (8042, 4242)
    assert Path(server.settings["StorageDirectory"]).is_relative_to(server.workdir)
    assert server.settings["StableAge"] == 2
    assert "python" in server.get("/plugins")
    assert server.client.get("/dicomnode-test/ping").text == "pong"


def test_orthanc_with_a_user_requires_authentication(
    orthanc_factory: Callable[..., Orthanc],
) -> None:
    server = orthanc_factory(users={"tester": "not-a-secret"})

    assert httpx.get(f"{server.http_url}/system").status_code == 401
    assert server.get("/system")["DicomAet"] == "ORTHANC"


def test_orthanc_that_cannot_start_reports_its_log(debian_tools: None, tmp_path: Path) -> None:
    server = Orthanc(tmp_path / "bad", extra={"HttpPort": "not-a-port"})

    with pytest.raises(RuntimeError, match="Orthanc did not start") as failure:
        server.start()
    assert "HttpPort" in str(failure.value)
    assert not server.running


def test_orthanc_refuses_a_missing_plugin(debian_tools: None, tmp_path: Path) -> None:
    server = Orthanc(tmp_path / "bad", python_script=tmp_path / "absent.py")
    with pytest.raises(FileNotFoundError, match=r"absent\.py"):
        server.start()


# ------------------------------------------------------------------------- dcmtk storescp


def test_mixed_syntaxes_reach_storescp_unchanged_in_one_association(
    storescp_peer: StoreSCP,
) -> None:
    files = [testdata(RG3_J2KR), testdata(RG1_J2KI), testdata(RG3_UNCI), cat_dx(), ct_small()]
    expected = {
        str(h.SOPInstanceUID): str(h.file_meta.TransferSyntaxUID) for h in map(_header, files)
    }
    assert set(expected.values()) == {JPEG2000Lossless, JPEG2000, ExplicitVRLittleEndian}

    result = storescu(files, port=storescp_peer.port, called=storescp_peer.aet).check()

    assert result.statuses == [0x0000] * len(files)
    received = {
        str(ds.SOPInstanceUID): str(ds.file_meta.TransferSyntaxUID)
        for ds in storescp_peer.datasets()
    }
    assert received == expected
    associations = storescp_peer.log_path.read_text().split("Association Received")
    assert sum("Store Request" in a for a in associations) == 1


def test_storescp_stops_and_starts_on_the_same_port(storescp_peer: StoreSCP) -> None:
    port = storescp_peer.port
    storescp_peer.stop()
    down = storescu([cat_dx()], port=port, called=storescp_peer.aet, timeout=5)
    assert down.statuses == [None]
    assert not down.ok

    storescp_peer.start(extra=("--refuse",))
    refused = storescu([cat_dx()], port=port, called=storescp_peer.aet, timeout=5)
    assert not refused.ok
    assert storescp_peer.files() == []

    storescp_peer.stop()
    storescp_peer.start(extra=())
    storescu([cat_dx()], port=port, called=storescp_peer.aet).check()
    assert storescp_peer.port == port
    assert len(storescp_peer.wait_for_files(1)) == 1


# ------------------------------------------------------------------- pynetdicom status SCP


def test_status_scp_answers_the_status_it_is_given(status_scp: StatusSCP) -> None:
    src = cat_dx()
    status_scp.status = 0xA700

    refused = storescu([src], port=status_scp.port, called=status_scp.aet)
    assert refused.statuses == [0xA700]
    assert not refused.ok
    assert status_scp.stored == []

    status_scp.status = 0x0000
    storescu([src], port=status_scp.port, called=status_scp.aet).check()
    assert status_scp.stored == [_header(src).SOPInstanceUID]
    assert status_scp.attempts == 2


# ------------------------------------------------------------------------------ test data


def test_copy_with_new_uids_keeps_compressed_pixel_data(tmp_path: Path) -> None:
    src = testdata(RG3_J2KR)
    original = pydicom.dcmread(src)

    first = pydicom.dcmread(copy_with_new_uids(src, tmp_path / "a.dcm", Laterality="L"))
    again = pydicom.dcmread(copy_with_new_uids(src, tmp_path / "a.dcm"))
    other = pydicom.dcmread(
        copy_with_new_uids(src, tmp_path / "b.dcm", sop_uid="1.2.3.4", PatientBirthDate=None)
    )

    assert first.SOPInstanceUID != original.SOPInstanceUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert again.SOPInstanceUID == first.SOPInstanceUID  # same destination, same UID
    assert other.SOPInstanceUID == "1.2.3.4"
    assert first.StudyInstanceUID == original.StudyInstanceUID
    assert first.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert first.PixelData == original.PixelData
    assert first.Laterality == "L"
    assert "PatientBirthDate" in original
    assert "PatientBirthDate" not in other


# ------------------------------------------------------------------------------- helpers


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, "", "ready"])
    assert wait_until(lambda: next(calls), timeout=5, what="x", interval=0.001) == "ready"


def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(WaitTimeout, match=r"waiting for the answer \(last value: 0\)"):
        wait_until(lambda: 0, timeout=0.1, what="the answer")
    assert issubclass(WaitTimeout, AssertionError)


def test_wait_until_ignores_only_the_listed_errors() -> None:
    def refuse() -> bool:
        raise ConnectionRefusedError("not yet")

    with pytest.raises(WaitTimeout, match="ConnectionRefusedError"):
        wait_until(refuse, timeout=0.1, what="server", ignore=(OSError,))
    with pytest.raises(ConnectionRefusedError):
        wait_until(refuse, timeout=5, what="server")


def test_free_port_never_repeats() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50


# ------------------------------------------------------------------------------- NodeProcess

# A stand-in for `dicomnode serve --config FILE`, to test the process harness on its own.
_FAKE_NODE = """
import http.server, signal, sys, tomllib
assert sys.argv[1:3] == ["serve", "--config"], sys.argv
api = tomllib.load(open(sys.argv[3], "rb"))["api"]
if api.get("fail"):
    print("refusing to start", flush=True)
    sys.exit(3)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((api["host"], api["port"]), Handler)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("listening", flush=True)
server.serve_forever()
"""


def _fake_node(tmp_path: Path, *, fail: bool = False) -> tuple[Path, list[str]]:
    script = tmp_path / "fake_node.py"
    script.write_text(_FAKE_NODE)
    config = tmp_path / "dicomnode.toml"
    config.write_text(
        f'[api]\nhost = "0.0.0.0"\nport = {free_port()}\nfail = {str(fail).lower()}\n'
    )
    return config, [sys.executable, str(script)]


def test_node_process_waits_for_readyz_and_stops_cleanly(tmp_path: Path) -> None:
    config, command = _fake_node(tmp_path)
    node = NodeProcess(config, command=command)

    node.start().wait_ready(timeout=30)
    assert node.api_url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{node.api_url}/readyz").status_code == 200
    assert node.stop() == 0
    assert "listening" in node.log_path.read_text()

    node.start().wait_ready(timeout=30)
    assert node.kill9() == -9
    assert not node.running


def test_node_process_that_exits_fails_fast_with_its_log(tmp_path: Path) -> None:
    config, command = _fake_node(tmp_path, fail=True)
    node = NodeProcess(config, command=command).start()

    with pytest.raises(AssertionError, match="exited with code 3") as failure:
        node.wait_ready(timeout=60)
    assert "refusing to start" in str(failure.value)
