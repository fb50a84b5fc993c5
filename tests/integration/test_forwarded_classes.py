"""What a PACS forwards is accepted: retired storage SOP classes over real dcmtk `storescu`
and in a mixed study Orthanc forwards; they, and radiographs too small to be diagnostic, end
*skipped* with a reason (the size threshold from the model card: 256 for the demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from dicomnode.deliver.scu import keep_responses
from tests.support.data import RG3_UNCR, copy_with_new_uids, new_uid, testdata
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import NodeProcess, free_port, storescu, wait_until
from tests.support.smallcr import cropped_cr

TOKEN = "test-token-forwarded"
ULTRASOUND_RETIRED = "1.2.840.10008.5.1.4.1.1.6"  # Ultrasound Image Storage (Retired)
XA_BIPLANE_RETIRED = "1.2.840.10008.5.1.4.1.1.12.3"  # X-Ray Angiographic Bi-Plane (Retired)

pytestmark = pytest.mark.timeout(300)


def retired_copy(dst: Path, sop_class: str, modality: str, *, study_uid: str) -> Path:
    """A real radiograph's pixels under a retired storage SOP class (and its modality)."""
    path = copy_with_new_uids(testdata(RG3_UNCR), dst, study_uid=study_uid,
                              SOPClassUID=sop_class, Modality=modality)  # fmt: skip
    ds = pydicom.dcmread(path)
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.save_as(path, enforce_file_format=True)
    return path


def finished_jobs(node: NodeProcess, count: int) -> dict[str, dict[str, Any]]:
    """SOP Instance UID → job, once `count` jobs have ended."""

    def ended() -> dict[str, dict[str, Any]] | None:
        r = httpx.get(f"{node.api_url}/api/jobs", params={"limit": 100}, timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        r.raise_for_status()
        jobs = r.json()["jobs"]
        done = [j for j in jobs if j["state"] in ("classified", "skipped", "failed")]
        return {j["sop_instance_uid"]: j for j in done} if len(done) >= count else None

    return wait_until(ended, timeout=180, interval=0.2, what=f"{count} jobs ended")


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_storescu_retired_classes_and_small_images(tmp_path, node_factory, debian_tools):
    config = write_node_config(tmp_path / "node", api={"token": TOKEN})
    node = node_factory(config).wait_ready()
    port, _ = read_ports(config)
    study = new_uid(tmp_path, "study")
    files = {
        "us": retired_copy(tmp_path / "in" / "us.dcm", ULTRASOUND_RETIRED, "US", study_uid=study),
        "xa": retired_copy(tmp_path / "in" / "xa.dcm", XA_BIPLANE_RETIRED, "XA", study_uid=study),
        "16": cropped_cr(tmp_path / "in" / "16.dcm", side=16, StudyInstanceUID=study),
        "255": cropped_cr(tmp_path / "in" / "255.dcm", side=255, StudyInstanceUID=study),
        "256": cropped_cr(tmp_path / "in" / "256.dcm", side=256, StudyInstanceUID=study),
    }
    result = storescu(list(files.values()), port=port)
    assert result.statuses == [0] * len(files), result.stderr[-3000:]
    jobs = finished_jobs(node, len(files))
    state = {name: jobs[uid_of(path)] for name, path in files.items()}
    assert state["us"]["state"] == "skipped"
    assert state["us"]["reason"] == "modality US is not a radiograph"
    assert state["xa"]["state"] == "skipped"
    assert state["xa"]["reason"] == "modality XA is not a radiograph"
    for side in ("16", "255"):
        assert state[side]["state"] == "skipped"
        assert state[side]["reason"] == (
            f"image too small to be a diagnostic radiograph ({side}x{side} px; the model "
            "card's min_image_size is 256 px per side)"
        )
    assert state["256"]["state"] == "classified", state["256"]


def test_orthanc_forwards_a_mixed_study_with_a_retired_class(
    tmp_path, orthanc_factory, node_factory
):
    node_port = free_port()
    orthanc = orthanc_factory(
        modalities={"DICOMNODE": {"AET": "DICOMNODE", "Host": "127.0.0.1", "Port": node_port}}
    )
    config = write_node_config(tmp_path / "node", node={"port": node_port},
                               api={"token": TOKEN})  # fmt: skip
    node = node_factory(config).wait_ready()
    study = new_uid(tmp_path, "mixed study")
    cr = copy_with_new_uids(testdata(RG3_UNCR), tmp_path / "in" / "cr.dcm", study_uid=study)
    us = retired_copy(tmp_path / "in" / "us.dcm", ULTRASOUND_RETIRED, "US", study_uid=study)
    for path in (cr, us):
        orthanc.upload(path)
    [study_id] = orthanc.studies()
    # Orthanc's "send to modality" of the whole study (HTTP 500 when one class is refused).
    answer = orthanc.client.post(
        "/modalities/DICOMNODE/store",
        json={"Resources": [study_id], "Synchronous": True, "Timeout": 60},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["InstancesCount"] == 2 and answer.json()["FailedInstancesCount"] == 0
    jobs = finished_jobs(node, 2)
    assert jobs[uid_of(cr)]["state"] == "classified"
    assert jobs[uid_of(us)]["state"] == "skipped"
    assert jobs[uid_of(us)]["reason"] == "modality US is not a radiograph"


def test_every_storage_class_is_negotiated_and_each_retired_one_stored(tmp_path):
    """A real association proposes every storage SOP class pydicom's dictionary names (the
    unit test's rule); all are accepted, and a C-STORE of each retired class answers 0x0000
    (pynetdicom aborts a C-STORE of a class it has no service for)."""
    from pydicom._uid_dict import UID_dictionary
    from pynetdicom import AE

    from dicomnode.config import Settings
    from dicomnode.ingest.admission import StoreContext
    from dicomnode.ingest.scp import start_scp
    from dicomnode.metrics import Metrics
    from dicomnode.store.db import make_engine
    from dicomnode.store.jobs import Jobs
    from dicomnode.store.spool import Spool
    from tests.unit.ingest.test_scp_storage_classes import dictionary_storage_classes

    settings = Settings.model_validate(
        {"node": {"port": free_port(), "data_dir": str(tmp_path / "node"), "min_free_mb": 0}}
    )
    jobs = Jobs(make_engine(settings.database_url))
    ctx = StoreContext(spool=Spool(tmp_path / "node" / "spool"), jobs=jobs, metrics=Metrics(),
                       salt="s")  # fmt: skip
    server = start_scp(settings.node, ctx)
    wanted = sorted(dictionary_storage_classes())
    retired = [uid for uid in wanted if UID_dictionary[uid][3] == "Retired"]
    template = pydicom.dcmread(cropped_cr(tmp_path / "t.dcm", side=16))
    stored = []
    try:
        for start in range(0, len(wanted), 120):  # at most 128 contexts per association
            chunk = wanted[start : start + 120]
            ae = AE(ae_title="ALLCLASSES")
            for uid in chunk:
                ae.add_requested_context(uid, "1.2.840.10008.1.2.1")
            assoc = ae.associate("127.0.0.1", settings.node.port, ae_title="DICOMNODE")
            keep_responses(assoc)  # pynetdicom#875: a response lost under load
            try:
                assert assoc.is_established
                accepted = {str(c.abstract_syntax) for c in assoc.accepted_contexts}
                assert set(chunk) - accepted == set()
                for uid in set(chunk) & set(retired):
                    ds = template.copy()
                    ds.SOPClassUID = uid
                    ds.SOPInstanceUID = new_uid("retired", uid)
                    status = assoc.send_c_store(ds)
                    assert status and status.Status == 0x0000, uid
                    stored.append(str(ds.SOPInstanceUID))
            finally:
                assoc.release()
    finally:
        server.shutdown()
    assert len(stored) == len(retired) >= 20
    assert {j.sop_instance_uid for j in jobs.list_jobs()} == set(stored)
