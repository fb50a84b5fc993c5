"""Orthanc from the repo's orthanc/orthanc.json with the router plugin, and the node.

Radiographs stored in Orthanc by dcmtk storescu reach the node with no other action (push:
C-STORE by the plugin; pull: the plugin asks the node, which fetches them over REST), the
node's SR and SC land in the same study, and the outcome is recorded on the study.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.support.data import cat_dx, copy_with_new_uids, ct_small, new_uid, testdata
from tests.support.nodecfg import orthanc_destination, write_node_config
from tests.support.peers import NodeProcess, Orthanc, free_port, storescu, wait_until

REPO = Path(__file__).resolve().parents[2]
ORTHANC_JSON = REPO / "orthanc" / "orthanc.json"
TOKEN = "test-token-orthanc"
USERS = {"dicomnode": "orthanc-test-password"}
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.33"}
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"

pytestmark = pytest.mark.timeout(600)


@dataclass
class Setup:
    orthanc: Orthanc
    node: NodeProcess
    config: Path

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.node.api_url + path, params=params, timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        r.raise_for_status()
        return r.json()

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.api("/api/jobs", limit=1000)["jobs"])

    def store(self, *files: Path) -> None:
        storescu(list(files), port=self.orthanc.dicom_port, called=self.orthanc.aet).check()


def _start(tmp_path: Path, orthanc_factory, node_factory, *, mode: str,
           start_node: bool = True) -> Setup:  # fmt: skip
    """Orthanc from orthanc/orthanc.json (paths, ports and StableAge made test-local), the
    node as its DICOMNODE modality (push) or its REST peer (pull)."""
    from tests.support.peers import load_orthanc_config

    base = load_orthanc_config(ORTHANC_JSON)
    node_port, api_port = free_port(), free_port()
    modality = {**base["DicomModalities"]["DICOMNODE"], "Port": node_port}
    router = {**base["DicomNode"], "Mode": mode, "NodeUrl": f"http://127.0.0.1:{api_port}",
              "NodeToken": TOKEN, "RetryInitialSeconds": 0.5, "RetryMaxSeconds": 2}  # fmt: skip
    orthanc = orthanc_factory(
        config=ORTHANC_JSON,
        modalities={"DICOMNODE": modality},
        users=USERS,
        extra={"StableAge": 1, "DicomNode": router},
    )
    user, password = next(iter(USERS.items()))
    config = write_node_config(
        tmp_path / "node",
        node={"port": node_port, "ae_title": modality["AET"]},
        api={"port": api_port, "token": TOKEN},
        destinations=[orthanc_destination(orthanc, name="pacs")],
        extra_sections={"orthanc": {"url": orthanc.http_url, "username": user,
                                    "password": password, "destination": "pacs"}},
    )  # fmt: skip
    node = node_factory(config)
    if start_node:
        node.wait_ready()
    else:
        node.stop()
    return Setup(orthanc=orthanc, node=node, config=config)


def _results(orthanc: Orthanc, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    found: dict[str, list[pydicom.Dataset]] = {"sr": [], "sc": []}
    for instance_id in orthanc.find_instances(StudyInstanceUID=study_uid):
        ds = orthanc.instance_dataset(instance_id)
        if ds.get("Manufacturer") != "dicomnode":
            continue
        found["sr" if ds.SOPClassUID in SR_CLASSES else "sc"].append(ds)
    return found


def _wait_results(orthanc: Orthanc, study_uid: str, *, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found = _results(orthanc, study_uid)
        return found if found["sr"] and found["sc"] else None

    return wait_until(done, timeout=timeout, interval=0.5,
                      what="the node's SR and SC in the source study in Orthanc")  # fmt: skip


def _study_id(orthanc: Orthanc, path: Path) -> str:
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    study = orthanc.study_of(str(uid))
    assert study is not None
    return study


def _outcome(setup: Setup, source: Path, *, timeout: float = 60) -> dict[str, str]:
    """The metadata the node recorded on the study, once all three keys are there."""
    study = _study_id(setup.orthanc, source)

    def recorded() -> dict[str, str] | None:
        meta = setup.orthanc.get(f"/studies/{study}/metadata", params={"expand": ""})
        keys = ("AIOutcome", "AIProbability", "AIModel")
        return meta if all(k in meta for k in keys) else None

    return wait_until(recorded, timeout=timeout, what="outcome metadata on the study")


def _sources(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A CR, a DX, a CT and a CR made by "dicomnode" (as if the node's own output were a CR),
    each in its own study (fresh UIDs: tests never share state)."""
    cr = copy_with_new_uids(testdata("RG3_UNCR.dcm"), tmp_path / "in" / "cr.dcm",
                            study_uid=new_uid(tmp_path, "cr"))  # fmt: skip
    dx = copy_with_new_uids(cat_dx(), tmp_path / "in" / "dx.dcm",
                            study_uid=new_uid(tmp_path, "dx"))  # fmt: skip
    ct = copy_with_new_uids(ct_small(), tmp_path / "in" / "ct.dcm",
                            study_uid=new_uid(tmp_path, "ct"))  # fmt: skip
    own = copy_with_new_uids(
        testdata("RG3_UNCR.dcm"), tmp_path / "in" / "own.dcm",
        study_uid=new_uid(tmp_path, "own"), Manufacturer="dicomnode",
    )  # fmt: skip
    return cr, dx, ct, own


def _check_routed(setup: Setup, sources: tuple[Path, Path, Path, Path], *, calling: str) -> None:
    cr, dx, ct, own = sources
    orthanc = setup.orthanc
    for source in (cr, dx):
        header = pydicom.dcmread(source, stop_before_pixels=True)
        found = _wait_results(orthanc, header.StudyInstanceUID)
        for ds in (*found["sr"], *found["sc"]):
            assert ds.StudyInstanceUID == header.StudyInstanceUID
            assert ds.SeriesInstanceUID != header.SeriesInstanceUID
        study = setup.api(f"/api/studies/{header.StudyInstanceUID}")
        meta = _outcome(setup, source)
        assert meta["AIOutcome"] == study["outcome"]
        assert float(meta["AIProbability"]) == pytest.approx(study["max_probability"], abs=1e-4)
        assert "UNTRAINED DEMO" in meta["AIModel"]
        [instance] = orthanc.find_instances(SOPInstanceUID=header.SOPInstanceUID)
        assert "DicomNodeRouted" in orthanc.get(f"/instances/{instance}/metadata")
    jobs = setup.jobs()
    assert sorted(j["modality"] for j in jobs) == ["CR", "DX"], jobs
    assert {j["calling_ae_title"] for j in jobs} == {calling}
    # The CT and the "dicomnode" CR went into Orthanc before the radiographs and became
    # stable as early: they were looked at and left alone.
    for skipped in (ct, own):
        [instance] = orthanc.find_instances(SOPInstanceUID=pydicom.dcmread(skipped).SOPInstanceUID)
        assert "DicomNodeRouted" not in orthanc.get(f"/instances/{instance}/metadata")


def _check_no_loop(setup: Setup, tmp_path: Path, sources: list[Path], *, expected: int) -> None:
    """The results made the source studies unstable again; once stable, the router looks at
    them again and must send nothing. A marker study sent afterwards is routed after those
    looks (one worker, in order), so when its job exists the count is final."""
    orthanc = setup.orthanc
    for source in sources:
        study = _study_id(orthanc, source)
        wait_until(lambda s=study: orthanc.get(f"/studies/{s}")["IsStable"], timeout=60,
                   what="source study stable again after the results arrived")  # fmt: skip
    marker = copy_with_new_uids(testdata("RG3_UNCR.dcm"), tmp_path / "in" / "marker.dcm",
                                study_uid=new_uid(tmp_path, "marker"))  # fmt: skip
    marker_uid = str(pydicom.dcmread(marker, stop_before_pixels=True).SOPInstanceUID)
    setup.store(marker)
    wait_until(lambda: any(j["sop_instance_uid"] == marker_uid for j in setup.jobs()),
               timeout=120, what="the marker study routed to the node")  # fmt: skip
    jobs = setup.jobs()
    assert len(jobs) == expected + 1, [(j["modality"], j["reason"]) for j in jobs]
    assert not [j for j in jobs if j["reason"] == "own output"]


def test_push_routes_radiographs_and_records_the_outcome(tmp_path, orthanc_factory,
                                                         node_factory):  # fmt: skip
    setup = _start(tmp_path, orthanc_factory, node_factory, mode="push")
    sources = cr, dx, ct, own = _sources(tmp_path)
    setup.store(ct, own)
    setup.store(cr, dx)
    _check_routed(setup, sources, calling="ORTHANC")
    _check_no_loop(setup, tmp_path, [cr, dx], expected=2)
    # The Orthanc Explorer extension is served and reads what the node recorded.
    js = setup.orthanc.client.get("/plugins/explorer.js").text
    assert "dicomnode-ai" in js and "AI triage: " in js and "metadata?expand" in js


def test_pull_fetches_ready_studies_over_rest(tmp_path, orthanc_factory, node_factory):
    setup = _start(tmp_path, orthanc_factory, node_factory, mode="pull")
    sources = cr, dx, ct, own = _sources(tmp_path)
    setup.store(ct, own)
    setup.store(cr, dx)
    _check_routed(setup, sources, calling="ORTHANC-PULL")
    _check_no_loop(setup, tmp_path, [cr, dx], expected=2)

    # The endpoint itself: token, ids, unknown study, and a request without a body (the node
    # lists the study's radiograph series itself; the instance is already here: no new job).
    url = f"{setup.node.api_url}/api/orthanc/studies"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    study = _study_id(setup.orthanc, dx)
    assert httpx.post(f"{url}/{study}", timeout=10).status_code == 401
    assert httpx.post(f"{url}/not-an-id", headers=auth, timeout=10).status_code == 422
    unknown = "-".join(["0123abcd"] * 5)
    assert httpx.post(f"{url}/{unknown}", headers=auth, timeout=30).status_code == 404
    again = httpx.post(f"{url}/{study}", headers=auth, timeout=30)
    assert again.status_code == 202 and again.json()["queued"] == 1
    before = len(setup.jobs())
    wait_until(lambda: not (setup.node.workdir / "var" / "orthanc-pull.json").read_text()
               .strip("{}"), timeout=60, what="pull queue drained")  # fmt: skip
    assert len(setup.jobs()) == before


@pytest.mark.parametrize("mode", ["push", "pull"])
def test_studies_routed_while_the_node_is_down_arrive_after_it_starts(
    tmp_path, orthanc_factory, node_factory, mode
):
    setup = _start(tmp_path, orthanc_factory, node_factory, mode=mode, start_node=False)
    cr = copy_with_new_uids(testdata("RG3_UNCR.dcm"), tmp_path / "in" / "cr.dcm",
                            study_uid=new_uid(tmp_path, "down"))  # fmt: skip
    setup.store(cr)
    orthanc = setup.orthanc

    def failures() -> int:
        log = orthanc.log_path.read_text(errors="replace") if orthanc.log_path else ""
        return log.count("to the node failed")

    wait_until(lambda: failures() >= 2, timeout=60, what="the router retrying a failed send")
    # Orthanc restarts while the study is pending: the pending list is in its database.
    orthanc.restart()
    wait_until(lambda: "resuming 1 pending" in orthanc.log_path.read_text(errors="replace"),
               timeout=30, what="the router resuming the pending study")  # fmt: skip
    setup.node.start().wait_ready()
    header = pydicom.dcmread(cr, stop_before_pixels=True)
    _wait_results(orthanc, header.StudyInstanceUID)
    assert [j["modality"] for j in setup.jobs()] == ["CR"]
    _outcome(setup, cr)
