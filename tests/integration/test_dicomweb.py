"""DICOMweb with a real peer: Debian's Orthanc with its DICOMweb plugin (orthanc-dicomweb).

Orthanc pushes a study to the node by STOW-RS (its `DicomWeb.Servers` + `/stow`); the node
delivers its SR and SC to Orthanc by STOW-RS into the source study, retrying a stopped Orthanc
with the same UIDs. The node is the in-process one (real admission, pipeline, outbox, API on a
loopback port), so nothing waits on timers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from dicomnode.deliver.outbox import deliver_due
from dicomnode.metrics import Metrics
from dicomnode.model.classifier import Classifier
from dicomnode.store.tables import DeliveryState, ResultKind
from tests.support.data import TINY_ARCH, new_uid
from tests.support.inprocess import TOKEN, InProcessNode, inprocess_node
from tests.support.models import place_thresholds, tiny_package
from tests.support.peers import Orthanc, wait_until
from tests.support.smallcr import small_cr


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    """One tiny demo model for the module (building it is most of a test's time)."""
    return Classifier.demo(architecture=TINY_ARCH, device="cpu")


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_orthanc_pushes_a_study_to_the_node_by_stow_rs(
    tmp_path: Path, orthanc_factory: Callable[..., Orthanc], classifier: Classifier
) -> None:
    node = inprocess_node(tmp_path / "node", classifier=classifier)
    study = new_uid("dicomweb push")
    images = [small_cr(tmp_path / f"{n}.dcm", study_uid=study) for n in range(2)]
    with node.serve_api() as url:
        server = {"Url": f"{url}/dicomweb/", "HttpHeaders": {"Authorization": f"Bearer {TOKEN}"}}
        wrong = {"Url": f"{url}/dicomweb/", "HttpHeaders": {"Authorization": "Bearer nope"}}
        orthanc = orthanc_factory(dicomweb={"Servers": {"node": server, "intruder": wrong}})
        for image in images:
            orthanc.upload(image)
        [orthanc_study] = orthanc.studies()
        # Without the token: refused, nothing stored.
        body = {"Resources": [orthanc_study], "Synchronous": True}
        refused = orthanc.client.post("/dicom-web/servers/intruder/stow", json=body)
        assert refused.status_code >= 400
        assert not any(node.jobs.exists(_sop(image)) for image in images)
        orthanc.stow_to("node", [orthanc_study])
    # Acknowledged means spooled and queued, as for a C-STORE: a job per image, its file as sent
    # (but for the preamble, which admission zeroes).
    jobs = node.jobs.list_jobs(study_instance_uid=study)
    assert sorted(j.sop_instance_uid for j in jobs) == sorted(_sop(i) for i in images)
    assert {j.calling_ae_title for j in jobs} == {"STOW-RS"}
    for job in jobs:
        spooled = node.spool.path(job.spool_path).read_bytes()
        [image] = [i for i in images if _sop(i) == job.sop_instance_uid]
        assert spooled[128:] == image.read_bytes()[128:]


def _deliver(node: InProcessNode) -> int:
    return deliver_due(jobs=node.jobs, spool=node.spool, settings=node.settings,
                       metrics=Metrics())  # fmt: skip


def test_the_node_delivers_sr_sc_gsps_by_stow_rs_into_the_source_study_retrying_a_stopped_orthanc(
    tmp_path: Path, orthanc_factory: Callable[..., Orthanc]
) -> None:
    package = tmp_path / "package"
    place_thresholds(package, tiny_package(package), low=0.0, high=0.0)  # every image positive
    classifier = Classifier.from_package(package, device="cpu")  # so it has a GSPS too
    orthanc = orthanc_factory(dicomweb={}, users={"dicomnode": "s3cret"})
    destination = {"type": "dicomweb", "name": "orthanc-web",
                   "url": f"{orthanc.http_url}/dicom-web", "auth": "basic",
                   "username": "dicomnode", "password": "s3cret"}  # fmt: skip
    node = inprocess_node(tmp_path / "node", classifier=classifier, destinations=[destination],
                          delivery={"backoff_initial_seconds": 0.2, "backoff_max_seconds": 0.5,
                                    "timeout_seconds": 10})  # fmt: skip
    study = new_uid("dicomweb deliver")
    source = small_cr(tmp_path / "source.dcm", study_uid=study)
    orthanc_study = orthanc.upload(source)["ParentStudy"]
    assert node.receive(source.read_bytes()) == 0
    node.run_until_idle()
    results = node.jobs.results_for_study(study)
    assert {r.kind for r in results} == {ResultKind.SR, ResultKind.SC, ResultKind.GSPS}

    orthanc.stop(kill=True)  # the PACS is down: the attempt fails and is scheduled again
    assert _deliver(node) == 0
    deliveries = node.jobs.deliveries_for([r.id for r in results if r.id is not None])
    assert {d.state for d in deliveries} == {DeliveryState.PENDING}
    assert all(d.attempts == 1 and d.last_error for d in deliveries)

    orthanc.start()  # same ports and storage
    wait_until(lambda: _deliver(node) == 0 and _all_delivered(node, results), timeout=30,
               what="the outbox to deliver once Orthanc is back")  # fmt: skip
    for result in results:  # each exactly once, under the node's UID, in the source study
        assert orthanc.find_instances(SOPInstanceUID=result.sop_instance_uid) != []
        assert len(orthanc.find_instances(SOPInstanceUID=result.sop_instance_uid)) == 1
        assert orthanc.study_of(result.sop_instance_uid) == orthanc_study
    assert len(orthanc.instances()) == 1 + len(results)


def _all_delivered(node: InProcessNode, results: list) -> bool:
    deliveries = node.jobs.deliveries_for([r.id for r in results if r.id is not None])
    return all(d.state == DeliveryState.DELIVERED and d.attempts >= 2 for d in deliveries)
