"""Findings located, end to end: a radiograph received by C-STORE is classified by the real
worker, and a Storage SCP (pynetdicom, a real association) receives a GSPS that outlines the
finding on that very image, in its study; a destination whose `objects` leave GSPS out gets
the SR and SC only. The SR it receives holds the same region as a TID 1410 group."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from dicomnode.deliver.outbox import deliver_due
from dicomnode.metrics import Metrics
from dicomnode.model.classifier import Classifier
from dicomnode.store.tables import DeliveryState, ResultKind
from tests.support.data import RG3_UNCR, testdata
from tests.support.inprocess import inprocess_node
from tests.support.models import place_thresholds, tiny_package
from tests.support.peers import StatusSCP
from tests.support.procs import LOCALHOST
from tests.support.validators import dciodvfy

GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
SR = "1.2.840.10008.5.1.4.1.1.88.34"


def test_destination_receives_a_gsps_on_the_source_image_and_objects_are_chosen(tmp_path: Path):
    package = tmp_path / "model"
    card = tiny_package(package)
    place_thresholds(package, card, low=0.0, high=0.0)  # every image is positive
    classifier = Classifier.from_package(package, device="cpu")
    source = pydicom.dcmread(testdata(RG3_UNCR))
    with StatusSCP(aet="EVERYTHING") as everything, StatusSCP(aet="NOGSPS") as no_gsps:
        node = inprocess_node(tmp_path / "node", classifier=classifier, destinations=[
            {"name": "pacs", "ae_title": "EVERYTHING", "host": LOCALHOST,
             "port": everything.port},
            {"name": "old-pacs", "ae_title": "NOGSPS", "host": LOCALHOST, "port": no_gsps.port,
             "objects": ["sr", "sc"]},
        ])  # fmt: skip
        assert node.receive(Path(testdata(RG3_UNCR)).read_bytes()) == 0
        node.run_until_idle()
        delivered = deliver_due(jobs=node.jobs, spool=node.spool, settings=node.settings,
                                metrics=Metrics())  # fmt: skip
        assert delivered == 5  # SR, SC, GSPS to one; SR, SC to the other
        by_class = {str(ds.SOPClassUID): ds for ds in everything.datasets}
        assert sorted(by_class) == sorted([GSPS, SC, SR])
        assert sorted(str(ds.SOPClassUID) for ds in no_gsps.datasets) == sorted([SC, SR])

    # The GSPS: in the source's study, its own series, on the source image, inside it.
    gsps = by_class[GSPS]
    assert gsps.StudyInstanceUID == source.StudyInstanceUID
    assert gsps.SeriesInstanceUID != source.SeriesInstanceUID
    image = gsps.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert image.ReferencedSOPInstanceUID == source.SOPInstanceUID
    annotation = gsps.GraphicAnnotationSequence[0]
    outline = np.array(annotation.GraphicObjectSequence[0].GraphicData, float).reshape(-1, 2)
    assert ((outline >= 0) & (outline <= [source.Columns, source.Rows])).all()
    text = annotation.TextObjectSequence[0].UnformattedTextValue
    assert text.startswith("UNTRAINED DEMO - AI: fracture suspected ")
    path = tmp_path / "received-gsps.dcm"
    gsps.save_as(path, enforce_file_format=True)
    assert dciodvfy(path) == []
    # The node's own copy is the one it delivered (a retry sends the same UID).
    [kept] = node.jobs.results_for_study(str(source.StudyInstanceUID), ResultKind.GSPS)
    assert kept.sop_instance_uid == gsps.SOPInstanceUID
    states = {d.destination: d.state for d in node.jobs.deliveries_for([kept.id])}
    assert states == {"pacs": DeliveryState.DELIVERED}  # never queued for "old-pacs"

    # The SR it received outlines the same region on the same image.
    sr_path = tmp_path / "received-sr.dcm"
    by_class[SR].save_as(sr_path, enforce_file_format=True)
    groups = hd.sr.srread(sr_path).content.get_planar_roi_measurement_groups()
    assert groups and np.allclose(groups[0].roi.value, outline)


def test_a_kind_queued_before_the_destination_left_it_out_is_not_sent(tmp_path: Path):
    """The outbox honours `objects` too: a GSPS queued while the destination took every
    object, then configured out, is given up with the reason, not sent."""
    package = tmp_path / "model"
    place_thresholds(package, tiny_package(package), low=0.0, high=0.0)
    classifier = Classifier.from_package(package, device="cpu")
    with StatusSCP(aet="PACS") as pacs:
        entry = {"name": "pacs", "ae_title": "PACS", "host": LOCALHOST, "port": pacs.port}
        node = inprocess_node(tmp_path / "node", classifier=classifier, destinations=[entry])
        assert node.receive(Path(testdata(RG3_UNCR)).read_bytes()) == 0
        node.run_until_idle()
        only = node.settings.destinations[0].model_copy(update={"objects": ("sr", "sc")})
        narrower = node.settings.model_copy(update={"destinations": [only]})
        assert deliver_due(jobs=node.jobs, spool=node.spool, settings=narrower,
                           metrics=Metrics()) == 2  # fmt: skip
        assert GSPS not in {str(ds.SOPClassUID) for ds in pacs.datasets}
    study = str(pydicom.dcmread(testdata(RG3_UNCR), stop_before_pixels=True).StudyInstanceUID)
    [gsps] = node.jobs.results_for_study(study, ResultKind.GSPS)
    [delivery] = node.jobs.deliveries_for([gsps.id])
    assert delivery.state == DeliveryState.FAILED
    assert delivery.last_error == "destination does not take gsps"
