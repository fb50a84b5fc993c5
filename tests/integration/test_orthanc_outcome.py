"""Recording the outcome on the study in a real Orthanc (metadata path, Orthanc 1.10), and
keeping it queued across a node restart while Orthanc's REST API is down."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicomnode.config import load_settings
from dicomnode.model.card import ModelCard
from dicomnode.pacs.orthanc import OrthancApi, OrthancError, api_from_settings
from dicomnode.pacs.outcome import OutcomeRecord as Record
from dicomnode.pacs.outcome import OutcomeRecorder, record_outcome
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.tables import Result, ResultKind
from tests.support.data import copy_with_new_uids, new_uid, testdata
from tests.support.peers import wait_until

REPO = Path(__file__).resolve().parents[2]
ORTHANC_JSON = REPO / "orthanc" / "orthanc.json"
USERS = {"dicomnode": "orthanc-test-password"}
CARD = ModelCard(name="dicomnode-demo", version="demo-1", architecture="test_efficientnet",
                 input_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                 trained=False)  # fmt: skip


def _settings(tmp_path: Path, orthanc):
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        f'[node]\ndata_dir = "{tmp_path / "var"}"\n'
        "[delivery]\nbackoff_initial_seconds = 0.2\nbackoff_max_seconds = 0.5\n"
        f'[[destinations]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\n'
        f"port = {orthanc.dicom_port}\n"
        f'[orthanc]\nurl = "{orthanc.http_url}"\nusername = "dicomnode"\n'
        f'password = "{USERS["dicomnode"]}"\ndestination = "pacs"\n'
    )
    return load_settings(cfg, environ={})


def _reported_study(jobs: Jobs, source: Path, *, outcome: str, probability: float) -> str:
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    jobs.enqueue(Received(
        sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
        study_instance_uid=ds.StudyInstanceUID, series_instance_uid=ds.SeriesInstanceUID,
        modality="CR", body_part="", view_position="", calling_ae_title="ORTHANC",
        spool_path="in/x.dcm", study={},
    ))  # fmt: skip
    jobs.record_report(study_instance_uid=ds.StudyInstanceUID, version=1, job_count=1,
                       outcome=outcome, max_probability=probability)  # fmt: skip
    return str(ds.StudyInstanceUID)


def _metadata(orthanc, source: Path) -> dict[str, str]:
    study = orthanc.study_of(str(pydicom.dcmread(source).SOPInstanceUID))
    return dict(orthanc.get(f"/studies/{study}/metadata", params={"expand": ""}))


def test_outcome_waits_for_orthanc_and_survives_a_node_restart(tmp_path, orthanc_factory):
    orthanc = orthanc_factory(config=ORTHANC_JSON, users=USERS)
    source = copy_with_new_uids(testdata("RG3_UNCR.dcm"), tmp_path / "cr.dcm",
                                study_uid=new_uid(tmp_path, "study"))  # fmt: skip
    orthanc.upload(source)
    settings = _settings(tmp_path, orthanc)
    jobs = Jobs(make_engine(settings.database_url))
    uid = _reported_study(jobs, source, outcome="positive", probability=0.87)
    sr = Result(kind=ResultKind.SR, sop_instance_uid="1.2.3.4", study_instance_uid=uid, path="x")
    sc = Result(kind=ResultKind.SC, sop_instance_uid="1.2.3.5", study_instance_uid=uid, path="y")

    orthanc.stop()  # the REST API is down when the SR has just been delivered
    recorder = OutcomeRecorder(settings=settings, jobs=jobs, card=lambda: CARD,
                               api=api_from_settings(settings))  # fmt: skip
    recorder.on_delivered("elsewhere", sr)  # another destination: not this Orthanc
    recorder.on_delivered("pacs", sc)  # an SC: the study outcome comes with the SR
    assert len(recorder.queue) == 0
    recorder.on_delivered("pacs", sr)
    assert recorder.step() and len(recorder.queue) == 1  # failed, kept, backing off

    # The node restarts (a new recorder reads the same queue file), then Orthanc comes back.
    restarted = OutcomeRecorder(settings=settings, jobs=jobs, card=lambda: CARD,
                                api=api_from_settings(settings))  # fmt: skip
    assert len(restarted.queue) == 1
    orthanc.start()

    def recorded() -> bool:
        restarted.step()
        return len(restarted.queue) == 0

    wait_until(recorded, timeout=30, what="the outcome recorded once Orthanc is back")
    meta = _metadata(orthanc, source)
    assert meta["AIOutcome"] == "positive" and meta["AIProbability"] == "0.8700"
    assert meta["AIModel"] == "dicomnode-demo (UNTRAINED DEMO)"


def test_recording_is_idempotent_and_follows_a_new_report(tmp_path, orthanc_factory):
    orthanc = orthanc_factory(config=ORTHANC_JSON, users=USERS)
    source = copy_with_new_uids(testdata("RG3_UNCR.dcm"), tmp_path / "cr.dcm",
                                study_uid=new_uid(tmp_path, "study2"))  # fmt: skip
    orthanc.upload(source)
    uid = str(pydicom.dcmread(source).StudyInstanceUID)
    api = OrthancApi(url=orthanc.http_url, username="dicomnode", password=USERS["dicomnode"])
    assert api.version() == "1.10.1"  # the metadata path; labels need 1.12
    first = Record(outcome="doubt", probability=0.5, model="m")
    assert record_outcome(api, study_instance_uid=uid, record=first)
    assert record_outcome(api, study_instance_uid=uid, record=first)
    later = Record(outcome="negative", probability=0.1, model="m")
    assert record_outcome(api, study_instance_uid=uid, record=later)
    meta = _metadata(orthanc, source)
    assert (meta["AIOutcome"], meta["AIProbability"]) == ("negative", "0.1000")
    assert not record_outcome(api, study_instance_uid=new_uid("absent"), record=later)
    wrong = OrthancApi(url=orthanc.http_url, username="dicomnode", password="wrong")
    with pytest.raises(OrthancError) as failed:
        record_outcome(wrong, study_instance_uid=uid, record=later)
    assert failed.value.status == 401
