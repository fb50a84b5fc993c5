"""The spine end to end: dcmtk storescu → node → SR + SC in the source study in real Orthanc."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.support.data import (
    RG1_J2KI,
    RG3_J2KR,
    RG3_UNCI,
    RG3_UNCR,
    cat_dx,
    copy_with_new_uids,
    ct_small,
    testdata,
)
from tests.support.nodecfg import orthanc_destination, read_ports, write_node_config
from tests.support.peers import free_port, storescu, wait_until
from tests.support.validators import dciodvfy, dsrdump, sr_validate

SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.33"}
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def _results_in_orthanc(orthanc, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    found: dict[str, list[pydicom.Dataset]] = {"sr": [], "sc": []}
    for instance_id in orthanc.find_instances(StudyInstanceUID=study_uid):
        ds = orthanc.instance_dataset(instance_id)
        if ds.get("Manufacturer") != "dicomnode":
            continue
        if ds.SOPClassUID in SR_CLASSES:
            found["sr"].append(ds)
        elif ds.SOPClassUID == SC_CLASS:
            found["sc"].append(ds)
    return found


def _wait_results(orthanc, study_uid: str, *, sc: int, sr: int = 1, timeout: float = 90):
    def done():
        found = _results_in_orthanc(orthanc, study_uid)
        return found if len(found["sc"]) >= sc and len(found["sr"]) >= sr else None

    return wait_until(done, timeout=timeout, what=f"{sc} SC + {sr} SR in Orthanc")


def _api(node, path: str):
    response = httpx.get(node.api_url + path, timeout=10)
    response.raise_for_status()
    return response.json()


def _validate(ds: pydicom.Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)
    errors = dciodvfy(path)
    assert errors == [], f"dciodvfy errors in {path.name}: {errors}"
    if ds.SOPClassUID in SR_CLASSES:
        sr_errors = sr_validate(path)
        assert sr_errors == [], f"DicomSRValidator errors in {path.name}: {sr_errors}"


@pytest.fixture
def node_and_pacs(tmp_path, orthanc, node_factory):
    config = write_node_config(tmp_path / "node", destinations=[orthanc_destination(orthanc)])
    node = node_factory(config).wait_ready()
    return node, orthanc, read_ports(config)[0]


def test_radiographs_get_a_valid_sr_and_sc_in_their_own_study(node_and_pacs, tmp_path):
    node, orthanc, port = node_and_pacs
    files = [testdata(RG3_J2KR), testdata(RG1_J2KI), cat_dx()]
    storescu(files, port=port).check()
    for source in files:
        header = pydicom.dcmread(source, stop_before_pixels=True)
        found = _wait_results(orthanc, header.StudyInstanceUID, sc=1)
        [sr] = found["sr"]
        [sc] = found["sc"]
        for ds in (sr, sc):
            assert ds.StudyInstanceUID == header.StudyInstanceUID
            assert ds.PatientID == header.PatientID and ds.PatientName == header.PatientName
            assert ds.SeriesInstanceUID != header.SeriesInstanceUID
        assert sc.BurnedInAnnotation == "YES"
        _validate(sr, tmp_path / f"{source.stem}-sr.dcm")
        _validate(sc, tmp_path / f"{source.stem}-sc.dcm")
        dump = dsrdump(tmp_path / f"{source.stem}-sr.dcm")
        assert "Fracture" in dump and "Probability" in dump
        assert "UNTRAINED DEMO" in dump and "demo-test_efficientnet" in dump
        study = _api(node, f"/api/studies/{header.StudyInstanceUID}")
        assert study["outcome"] in {"positive", "doubt", "negative"}
        assert study["images"][0]["state"] == "classified"
        assert 0.0 <= study["images"][0]["probability"] <= 1.0
        wait_until(
            lambda uid=header.StudyInstanceUID: all(
                d["state"] == "delivered"
                for r in _api(node, f"/api/studies/{uid}")["results"]
                for d in r["deliveries"]
            ),
            timeout=30,
            what="deliveries recorded as delivered",
        )


def test_ct_is_skipped_duplicates_give_one_result_and_own_output_is_not_reprocessed(
    node_and_pacs, tmp_path
):
    node, orthanc, port = node_and_pacs
    ct = storescu([ct_small()], port=port)
    assert ct.statuses == [0x0000]
    jobs = wait_until(
        lambda: [j for j in _api(node, "/api/jobs")["jobs"] if j["state"] == "skipped"],
        timeout=30, what="CT recorded as skipped",
    )  # fmt: skip
    assert jobs[0]["modality"] == "CT" and "CT" in jobs[0]["reason"]

    source = testdata(RG3_UNCR)
    for _ in range(3):
        storescu([source], port=port).check()
    header = pydicom.dcmread(source, stop_before_pixels=True)
    found = _wait_results(orthanc, header.StudyInstanceUID, sc=1)
    classified = [j for j in _api(node, "/api/jobs")["jobs"] if j["state"] == "classified"]
    assert len(classified) == 1

    # Send the node's own SR and SC back to it: acknowledged, recorded skipped, no new results.
    own = []
    for kind in ("sr", "sc"):
        path = tmp_path / f"own-{kind}.dcm"
        found[kind][0].save_as(path, enforce_file_format=True)
        own.append(path)
    storescu(own, port=port).check()
    wait_until(
        lambda: sum(
            1 for j in _api(node, "/api/jobs")["jobs"]
            if j["state"] == "skipped" and "own output" in (j["reason"] or "")
        ) == 2,
        timeout=30, what="own outputs recorded as skipped",
    )  # fmt: skip
    study = _api(node, f"/api/studies/{header.StudyInstanceUID}")
    located = ["gsps"] if study["outcome"] != "negative" else []  # findings unless negative
    assert sorted(r["kind"] for r in study["results"]) == [*located, "sc", "sr"]
    again = _results_in_orthanc(orthanc, header.StudyInstanceUID)
    assert len(again["sc"]) == 1 and len(again["sr"]) == 1


def test_kill_9_after_acknowledgement_loses_nothing(tmp_path, orthanc, node_factory):
    config = write_node_config(tmp_path / "node", destinations=[orthanc_destination(orthanc)])
    port = read_ports(config)[0]
    node = node_factory(config).wait_ready()
    study = "1.2.826.0.1.3680043.8.498.99.1"
    files = [
        copy_with_new_uids(testdata(RG3_UNCR), tmp_path / "in" / f"{i}.dcm", study_uid=study)
        for i in range(24)
    ]
    result = storescu(files, port=port)
    result.check()
    node.kill9()
    with sqlite3.connect(tmp_path / "node" / "var" / "dicomnode.db") as db:
        states = [row[0] for row in db.execute("select state from job")]
    assert len(states) == len(files)  # every acknowledged instance has its job row
    node.start().wait_ready()
    found = _wait_results(orthanc, study, sc=len(files), timeout=180)
    sent = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    referenced = {sc.SourceImageSequence[0].ReferencedSOPInstanceUID for sc in found["sc"]}
    assert referenced == sent
    jobs = _api(node, "/api/jobs?limit=1000")["jobs"]
    assert sorted(j["state"] for j in jobs) == ["classified"] * len(files)
    results = _api(node, f"/api/studies/{study}")["results"]
    assert sum(r["kind"] == "sc" for r in results) == len(files)


def test_results_made_while_the_pacs_is_down_are_delivered_when_it_returns(
    node_and_pacs,
):
    node, orthanc, port = node_and_pacs
    orthanc.stop()
    source = testdata(RG3_UNCR)
    storescu([source], port=port).check()
    uid = pydicom.dcmread(source, stop_before_pixels=True).StudyInstanceUID

    def failed_attempts():
        study = _api(node, f"/api/studies/{uid}")
        deliveries = [d for r in study["results"] for d in r["deliveries"]]
        kinds = {r["kind"] for r in study["results"]}
        return kinds in ({"sc", "sr"}, {"gsps", "sc", "sr"}) and all(
            d["state"] == "pending" and d["attempts"] >= 1 and d["last_error"] for d in deliveries
        )

    wait_until(failed_attempts, timeout=60, what="failed delivery attempts while PACS is down")
    orthanc.start()
    _wait_results(orthanc, uid, sc=1, timeout=60)


def test_classify_cli_prints_json_and_writes_valid_objects(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "dicomnode.cli", "classify", "--out", str(out),
         "--demo-architecture", "test_efficientnet", str(testdata(RG3_UNCI))],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    result = json.loads(line)
    assert result["state"] == "classified" and 0 <= result["probability"] <= 1
    assert result["untrained_demo"] is True and "UNTRAINED DEMO" in result["model"]
    assert result["outcome"] in {"positive", "doubt", "negative"}
    assert "UNTRAINED DEMO" in done.stderr
    for key in ("sr", "sc"):
        path = Path(result[key])
        assert path.parent == out
        assert dciodvfy(path) == []
    assert sr_validate(Path(result["sr"])) == []


def test_shipped_config_starts_with_the_untrained_efficientnet_b4_and_sqlite(
    tmp_path, node_factory
):
    """What `make run` starts: configs/dicomnode.toml, the real efficientnet_b4 demo."""
    repo = Path(__file__).resolve().parents[2]
    dicom_port, api_port = free_port(), free_port()
    env = {
        "DICOMNODE_NODE__PORT": str(dicom_port),
        "DICOMNODE_API__PORT": str(api_port),
        "DICOMNODE_NODE__DATA_DIR": str(tmp_path / "var"),
        "DICOMNODE_NODE__STUDY_STABLE_SECONDS": "1",
    }
    node = node_factory(repo / "configs" / "dicomnode.toml", env=env,
                        api_url=f"http://127.0.0.1:{api_port}")  # fmt: skip
    node.wait_ready(timeout=300)
    model = _api(node, "/api/model")
    assert model["architecture"] == "efficientnet_b4" and model["input_size"] >= 320
    assert model["untrained_demo"] is True and "UNTRAINED DEMO" in model["display_name"]
    assert (tmp_path / "var" / "dicomnode.db").is_file()
    storescu([cat_dx()], port=dicom_port).check()
    job = wait_until(
        lambda: [j for j in _api(node, "/api/jobs")["jobs"] if j["state"] == "classified"],
        timeout=120, what="cat.dcm classified by efficientnet_b4",
    )[0]  # fmt: skip
    assert job["model_version"].startswith("demo-efficientnet_b4")
    assert "UNTRAINED DEMO" in node.log_path.read_text()
    # runtime auto on the CPU: measured on this host; PyTorch only if > 10 % faster than every
    # other runtime, which it never is for efficientnet_b4: served without PyTorch
    assert model["runtime"].startswith("auto (") and model["runtime"] != "auto (torch)"
    assert model["runtime_selection"]["chosen"] in model["runtime"]
    assert node.pid is not None
    assert "libtorch" not in Path(f"/proc/{node.pid}/maps").read_text()
