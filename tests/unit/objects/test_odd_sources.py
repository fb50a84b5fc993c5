"""Valid but unusual sources through the real worker (issue 17 item 3): a study with an image
without Modality, ISO 2022 character sets with an empty first value, and a source the report
cannot hold at all. Each study ends reported, or explained in the API and the worklist —
never a retry loop. Outputs are read back and checked with dciodvfy."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset

from dicomnode.model.classifier import Classifier
from dicomnode.objects.sources import UTF8, output_header
from dicomnode.store.tables import JobState, ResultKind
from dicomnode.work.results import write_header
from tests.support.data import RG3_UNCR, TINY_ARCH, testdata
from tests.support.inprocess import InProcessNode, inprocess_node
from tests.support.jobs import claim
from tests.support.validators import dciodvfy

ROOT = "1.2.826.0.1.3680043.8.498.17.3"
JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"
KOREAN = "Hong^Gildong=洪^吉洞=홍^길동"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.demo(architecture=TINY_ARCH, device="cpu")


@pytest.fixture
def node(tmp_path: Path, classifier: Classifier) -> InProcessNode:
    return inprocess_node(tmp_path, classifier=classifier)


def _source(study: str, n: int, **attrs: Any) -> Dataset:
    """RG3 (CR hand) as image `n` of `study`; attributes set by keyword, None deletes."""
    ds = pydicom.dcmread(testdata(RG3_UNCR))
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = study + ".1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{study}.1.{n}"
    ds.InstanceNumber = n
    for keyword, value in attrs.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _sr_references(path: Path) -> set[str]:
    sr = pydicom.dcmread(path)
    return {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }


def test_a_study_with_an_image_without_modality_is_reported_for_both(node, tmp_path):
    study = f"{ROOT}.1"
    plain, odd = _source(study, 1), _source(study, 2, Modality=None)
    assert node.receive(_encode(plain)) == 0 and node.receive(_encode(odd)) == 0

    node.run_until_idle()  # raised AttributeError from highdicom before, study left processing

    assert {j.state for j in node.jobs.jobs_for_study(study)} == {JobState.CLASSIFIED}
    record = node.jobs.study(study)
    assert record is not None and record.report_version == 1 and record.reported_job_count == 2
    [sr_path] = node.result_paths(study, ResultKind.SR)
    assert _sr_references(sr_path) == {plain.SOPInstanceUID, odd.SOPInstanceUID}
    for path in [sr_path, *node.result_paths(study, ResultKind.SC)]:
        assert dciodvfy(path) == [], path.name
    assert node.worker.step() is False  # nothing left to retry
    [row] = node.api().get("/api/worklist").json()["studies"]
    assert row["state"] == "reported"


@pytest.mark.parametrize(
    ("character_set", "name"),
    [(["", "ISO 2022 IR 87"], JAPANESE), (["", "ISO 2022 IR 149"], KOREAN)],
    ids=["IR 87", "IR 149"],
)
def test_iso_2022_with_an_empty_first_value_is_reported_in_utf8(node, character_set, name):
    study = f"{ROOT}.2.{character_set[1].split()[-1]}"
    source = _source(study, 1, SpecificCharacterSet=character_set, PatientName=name)
    assert node.receive(_encode(source)) == 0

    node.run_until_idle()

    [job] = node.jobs.jobs_for_study(study)
    assert job.state == JobState.CLASSIFIED, job.reason  # was failed: internal error (ValueError)
    outputs = [*node.result_paths(study, ResultKind.SC), *node.result_paths(study, ResultKind.SR)]
    assert len(outputs) == 2
    for path in outputs:
        assert dciodvfy(path) == [], path.name
        back = pydicom.dcmread(path)
        assert back.SpecificCharacterSet == UTF8
        assert str(back.PatientName) == name  # the names re-encoded, not lost


def test_an_image_the_report_cannot_hold_is_left_out_with_its_reason(node):
    """A header the SR cannot reference (its Series Instance UID is lost): the report is built
    for the other image; the odd one is failed with a reason an operator understands."""
    study = f"{ROOT}.3"
    good, odd = _source(study, 1), _source(study, 2)
    for ds in (good, odd):
        assert node.receive(_encode(ds)) == 0
    for _ in range(2):
        claimed = claim(node.jobs, owner="w", lease_seconds=60)
        assert claimed is not None and node.pipeline.process(claimed) == JobState.CLASSIFIED
    # The stored header of the odd image, as a header damaged after classification would be.
    damaged = _source(study, 2, SeriesInstanceUID=None)
    write_header(damaged, spool=node.spool)

    node.run_until_idle()

    record = node.jobs.study(study)
    assert record is not None and record.report_version == 1 and record.reported_job_count == 1
    [sr_path] = node.result_paths(study, ResultKind.SR)
    assert _sr_references(sr_path) == {good.SOPInstanceUID}
    assert dciodvfy(sr_path) == []
    client = node.api()
    images = {
        i["sop_instance_uid"]: i for i in client.get(f"/api/studies/{study}").json()["images"]
    }
    left_out = images[odd.SOPInstanceUID]
    assert left_out["state"] == "failed"
    assert left_out["reason"] == (
        "classified, but left out of the study report: source image has no Series Instance UID"
    )
    assert images[good.SOPInstanceUID]["state"] == "classified"
    [row] = client.get("/api/worklist").json()["studies"]
    assert row["state"] == "failed"  # needs attention, and says why in the study view
    assert node.worker.step() is False


def test_a_study_none_of_whose_images_can_be_reported_ends_explained(node):
    study = f"{ROOT}.4"
    source = _source(study, 1)
    assert node.receive(_encode(source)) == 0
    claimed = claim(node.jobs, owner="w", lease_seconds=60)
    assert claimed is not None and node.pipeline.process(claimed) == JobState.CLASSIFIED
    write_header(_source(study, 1, SeriesInstanceUID=None), spool=node.spool)

    node.run_until_idle()

    [job] = node.jobs.jobs_for_study(study)
    assert job.state == JobState.FAILED
    assert job.reason == "study report cannot be built: source image has no Series Instance UID"
    record = node.jobs.study(study)
    assert record is not None and record.report_version == 0 and record.report_owner is None
    assert node.result_paths(study, ResultKind.SR) == []
    assert node.worker.step() is False  # explained, not retried in a loop


def test_output_header_normalises_what_outputs_copy():
    study = f"{ROOT}.5"
    source = _source(
        study, 1, Modality=None, PatientBirthDate="20241399", StudyTime="256161",
        AccessionNumber="x" * 40, PatientName="a^b^c^d^e^f", SpecificCharacterSet="BOGUS",
        StudyDate=None,
    )  # fmt: skip
    header = output_header(source)
    assert header.Modality == "CR"  # from the SOP class
    for keyword in ("PatientBirthDate", "StudyTime", "AccessionNumber", "PatientName", "StudyDate"):
        assert keyword in header and header[keyword].value in (None, ""), keyword
    assert header.SpecificCharacterSet == UTF8
    assert "PixelData" not in header
    assert source.PatientBirthDate == "20241399"  # the source is left as it was


def _with_stray_group_elements(encoded: bytes) -> bytes:
    """The file with a command (0000) and a file meta (0002) element at the start of its
    dataset body, where a careless sender may leave them (explicit VR little endian)."""
    body = 144 + int.from_bytes(encoded[140:144], "little")  # after (0002,0000)'s group
    stray = (
        b"\x00\x00\x02\x09" + b"LO" + (6).to_bytes(2, "little") + b"stray "
        + b"\x02\x00\x13\x00" + b"SH" + (6).to_bytes(2, "little") + b"STRAY "
    )  # fmt: skip
    return encoded[:body] + stray + encoded[body:]


def test_stray_command_and_meta_elements_in_the_body_do_not_crash_the_job(node):
    """A dataset body holding (0000,eeee) / (0002,eeee) elements: pydicom's writer refuses
    them, so keeping the header crashed the job ("unexpected ValueError") and its study was
    never reported. They are left out of the kept header like undecodable elements."""
    study = f"{ROOT}.9"
    ds = _source(study, 1)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert node.receive(_with_stray_group_elements(_encode(ds))) == 0
    claimed = claim(node.jobs, owner="w", lease_seconds=60)
    assert claimed is not None and node.pipeline.process(claimed) == JobState.CLASSIFIED
    node.run_until_idle()
    record = node.jobs.study(study)
    assert record is not None and record.report_version == 1 and record.reported_job_count == 1
