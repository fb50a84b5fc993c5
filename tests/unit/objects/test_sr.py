"""The TID 1500 report: built, written, read back and checked by dciodvfy, pixelmed's
DicomSRValidator and dcmtk's dsrdump, on real radiograph headers (CR extremity, CR chest, DX)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from dicomnode import MANUFACTURER
from dicomnode.model.card import ModelCard
from dicomnode.model.classifier import Outcome, Prediction
from dicomnode.objects.codes import (
    ABSENT,
    FRACTURE,
    IMAGING_PROCEDURE,
    NO_UNITS,
    PRESENT,
    PROBABILITY,
    UNDETERMINED,
    finding_for_outcome,
)
from dicomnode.objects.sr import SR_SERIES_DESCRIPTION, SR_SERIES_NUMBER, build_sr
from tests.support.data import RG1_UNCR, RG3_UNCR, cat_dx, testdata
from tests.support.results import PATIENT_STUDY as SHARED_PATIENT_STUDY
from tests.support.results import result_card
from tests.support.validators import (
    dciodvfy,
    dsrdump,
    parse_dciodvfy,
    parse_sr_validator,
    run_sr_validator,
)

SR_UID = "1.2.826.0.1.3680043.8.498.4711.1001"
SR_SERIES_UID = "1.2.826.0.1.3680043.8.498.4711.1002"
#: The one warning DicomSRValidator gives for our reports: its TID 1501 has no row for a
#: qualitative evaluation with a free concept name such as (72704001, SCT, "Fracture").
KNOWN_WARNING = '(72704001,SCT,"Fracture"): Content Item not in template'

PATIENT_STUDY = SHARED_PATIENT_STUDY


_card = result_card


def _prediction(probability: float, card: ModelCard | None = None) -> Prediction:
    card = card or _card()
    if probability >= card.threshold_high:
        outcome = Outcome.POSITIVE
    elif probability < card.threshold_low:
        outcome = Outcome.NEGATIVE
    else:
        outcome = Outcome.DOUBT
    return Prediction(probability, outcome, np.zeros((8, 8), np.float32))


def _header(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


SOURCES = {
    "RG3 CR extremity": lambda: _header(testdata(RG3_UNCR)),
    "RG1 CR chest": lambda: _header(testdata(RG1_UNCR)),
    "cat DX": lambda: _header(cat_dx()),
}


def _write(ds: Dataset, folder: Path, name: str = "sr.dcm") -> tuple[Path, Dataset]:
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path, pydicom.dcmread(path)


def _groups(ds: Dataset) -> list[dict[str, object]]:
    """The TID 1501 groups of a read-back report, flattened to what a consumer looks for."""
    measurements = next(
        item for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"
    )
    groups = []
    for group in measurements.ContentSequence:
        found: dict[str, object] = {"images": []}
        for item in group.ContentSequence:
            name = item.ConceptNameCodeSequence[0].CodeValue
            if name == "112039":
                found["identifier"] = item.TextValue
            elif name == "112040":
                found["tracking_uid"] = item.UID
            elif name == "111001":
                found["algorithm"] = item.TextValue
            elif name == "111003":
                found["version"] = item.TextValue
            elif name == PROBABILITY.value:
                value = item.MeasuredValueSequence[0]
                found["probability"] = float(value.NumericValue)
                found["unit"] = value.MeasurementUnitsCodeSequence[0].CodeValue
            elif name == FRACTURE.value:
                found["fracture"] = item.ConceptCodeSequence[0].CodeValue
            elif item.ValueType == "IMAGE":
                images = found["images"]
                assert isinstance(images, list)
                images.append(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        groups.append(found)
    return groups


def test_codes_are_the_standard_ones():
    standard = (codes.cid240.Present, codes.cid240.Absent, codes.cid240.Undetermined)
    assert standard == (PRESENT, ABSENT, UNDETERMINED)
    assert codes.DCM.Probability == PROBABILITY and PROBABILITY.value == "122157"
    assert codes.UCUM.NoUnits == NO_UNITS
    assert codes.cid100.ImagingProcedure == IMAGING_PROCEDURE
    assert finding_for_outcome(Outcome.POSITIVE) == PRESENT
    assert finding_for_outcome(Outcome.DOUBT) == UNDETERMINED
    assert finding_for_outcome(Outcome.NEGATIVE) == ABSENT
    with pytest.raises(ValueError):
        finding_for_outcome("maybe")


@pytest.mark.parametrize(
    ("source", "probability", "finding"),
    [
        ("RG3 CR extremity", 0.8734, PRESENT),
        ("RG1 CR chest", 0.5231, UNDETERMINED),
        ("cat DX", 0.0412, ABSENT),
    ],
)
def test_report_passes_validators_and_says_what_was_found(tmp_path, source, probability, finding):
    header = SOURCES[source]()
    card = _card()
    sr = build_sr(
        sources=[header],
        predictions=[_prediction(probability)],
        card=card,
        sop_instance_uid=SR_UID,
        series_instance_uid=SR_SERIES_UID,
    )
    path, back = _write(sr, tmp_path)

    assert dciodvfy(path) == []
    findings = run_sr_validator(path)
    assert findings.errors == []
    assert all(KNOWN_WARNING in warning for warning in findings.warnings), findings.warnings

    text = dsrdump(path)
    assert '(72704001,SCT,"Fracture")=' + f'({finding.value},SCT,"{finding.meaning}")' in text
    assert f'(122157,DCM,"Probability")="{probability:g}" (1,UCUM,"no units")' in text
    assert f'"Algorithm Name")="{card.display_name}"' in text
    assert f'"Algorithm Version")="{card.version}"' in text
    assert '(363679005,SCT,"Imaging procedure")' in text
    assert '(121005,DCM,"Observer Type")=(121007,DCM,"Device")' in text

    assert back.SOPClassUID == Comprehensive3DSRStorage
    assert (back.SOPInstanceUID, back.SeriesInstanceUID) == (SR_UID, SR_SERIES_UID)
    assert back.Manufacturer == MANUFACTURER
    assert (back.SeriesNumber, back.SeriesDescription) == (SR_SERIES_NUMBER, SR_SERIES_DESCRIPTION)
    assert (back.CompletionFlag, back.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    for keyword in PATIENT_STUDY:
        assert back.get(keyword) == header.get(keyword), keyword
    assert back.get("SpecificCharacterSet") == header.get("SpecificCharacterSet")
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == header.StudyInstanceUID
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == header.SOPInstanceUID

    study, image = _groups(back)
    for group in (study, image):
        assert group["probability"] == pytest.approx(probability)
        assert group["unit"] == "1"
        assert group["fracture"] == finding.value
        assert group["algorithm"] == card.display_name
        assert group["version"] == card.version
        assert group["images"] == [header.SOPInstanceUID]


def test_study_group_states_the_highest_probability_of_several_images(tmp_path):
    first = _header(testdata(RG3_UNCR))
    second = _header(testdata(RG3_UNCR))
    second.SOPInstanceUID = first.SOPInstanceUID + ".2"
    second.InstanceNumber = 2
    third = _header(testdata(RG3_UNCR))
    third.SOPInstanceUID = first.SOPInstanceUID + ".3"
    third.InstanceNumber = 3
    probabilities = [0.12, 0.91, 0.45]
    sr = build_sr(
        sources=[first, second, third],
        predictions=[_prediction(p) for p in probabilities],
        card=_card(),
        sop_instance_uid=SR_UID,
        series_instance_uid=SR_SERIES_UID,
    )
    path, back = _write(sr, tmp_path)
    assert dciodvfy(path) == []
    assert run_sr_validator(path).errors == []

    study, *images = _groups(back)
    assert study["identifier"] == "Fracture triage study result"
    assert study["probability"] == pytest.approx(0.91)
    assert study["fracture"] == PRESENT.value
    uids = [first.SOPInstanceUID, second.SOPInstanceUID, third.SOPInstanceUID]
    assert study["images"] == uids
    assert [g["probability"] for g in images] == pytest.approx(probabilities)
    assert [g["fracture"] for g in images] == [ABSENT.value, PRESENT.value, UNDETERMINED.value]
    assert [g["images"] for g in images] == [[uid] for uid in uids]
    assert len({g["tracking_uid"] for g in [study, *images]}) == 4
    listed = back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert {i.ReferencedSOPInstanceUID for i in listed.ReferencedSOPSequence} == set(uids)


def test_untrained_demo_is_named_in_the_algorithm_and_equipment(tmp_path):
    header = _header(testdata(RG3_UNCR))
    untrained = _card(trained=False)
    path, back = _write(
        build_sr(
            sources=[header],
            predictions=[_prediction(0.6, untrained)],
            card=untrained,
            sop_instance_uid=SR_UID,
            series_instance_uid=SR_SERIES_UID,
        ),
        tmp_path,
    )
    assert all(
        g["algorithm"] == "dicomnode fracture triage (UNTRAINED DEMO)" for g in _groups(back)
    )
    assert 'Algorithm Name")="dicomnode fracture triage (UNTRAINED DEMO)"' in dsrdump(path)
    (ours,) = [e for e in back.ContributingEquipmentSequence if e.Manufacturer == MANUFACTURER]
    assert "UNTRAINED DEMO" in ours.ManufacturerModelName
    assert untrained.version in ours.SoftwareVersions

    trained = _card()
    _, back_trained = _write(
        build_sr(
            sources=[header],
            predictions=[_prediction(0.6)],
            card=trained,
            sop_instance_uid=SR_UID,
            series_instance_uid=SR_SERIES_UID,
        ),
        tmp_path,
        "trained.dcm",
    )
    assert all("UNTRAINED" not in str(g["algorithm"]) for g in _groups(back_trained))
    equipment = back_trained.ContributingEquipmentSequence
    assert [e.ManufacturerModelName for e in equipment if e.Manufacturer == MANUFACTURER] == [
        trained.display_name
    ]


def test_new_version_names_its_predecessor(tmp_path):
    header = _header(testdata(RG1_UNCR))
    first = build_sr(
        sources=[header],
        predictions=[_prediction(0.2)],
        card=_card(),
        sop_instance_uid=SR_UID,
        series_instance_uid=SR_SERIES_UID,
    )
    _, first_back = _write(first, tmp_path, "v1.dcm")
    assert "PredecessorDocumentsSequence" not in first_back
    second = build_sr(
        sources=[header],
        predictions=[_prediction(0.8)],
        card=_card(),
        sop_instance_uid=SR_UID + ".2",
        series_instance_uid=SR_SERIES_UID,
        instance_number=2,
        previous_versions=[first_back],
    )
    path, back = _write(second, tmp_path, "v2.dcm")
    assert dciodvfy(path) == []
    (study,) = back.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == header.StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == SR_SERIES_UID
    (instance,) = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == SR_UID
    assert instance.ReferencedSOPClassUID == Comprehensive3DSRStorage
    assert back.InstanceNumber == 2


def test_repeated_build_gives_the_same_content_and_identifiers():
    header = _header(testdata(RG3_UNCR))
    kwargs: dict[str, Any] = dict(
        sources=[header],
        predictions=[_prediction(0.75)],
        card=_card(),
        sop_instance_uid=SR_UID,
        series_instance_uid=SR_SERIES_UID,
    )
    first, second = build_sr(**kwargs), build_sr(**kwargs)
    assert first.ContentSequence == second.ContentSequence
    other_model = build_sr(**{**kwargs, "card": _card(trained=False)})
    assert _tracking_uids(other_model) != _tracking_uids(first)


def _tracking_uids(ds: Dataset) -> list[str]:
    return [str(g["tracking_uid"]) for g in _groups(ds)]


def test_source_missing_type2_patient_attributes_still_gives_a_valid_report(tmp_path):
    header = _header(testdata(RG3_UNCR))
    for keyword in ("PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        delattr(header, keyword)
    path, back = _write(
        build_sr(
            sources=[header],
            predictions=[_prediction(0.1)],
            card=_card(),
            sop_instance_uid=SR_UID,
            series_instance_uid=SR_SERIES_UID,
        ),
        tmp_path,
    )
    assert dciodvfy(path) == []
    assert back.PatientBirthDate == "" and back.AccessionNumber == ""
    assert "PatientBirthDate" not in header  # the caller's dataset is left alone
    assert back.PatientID == header.PatientID


@pytest.mark.parametrize("problem", ["empty", "lengths", "two studies", "probability"])
def test_inconsistent_input_is_refused(problem):
    header = _header(testdata(RG3_UNCR))
    other = _header(testdata(RG1_UNCR))
    sources, predictions = [header], [_prediction(0.5)]
    if problem == "empty":
        sources, predictions = [], []
    elif problem == "lengths":
        predictions = [_prediction(0.5), _prediction(0.6)]
    elif problem == "two studies":
        sources, predictions = [header, other], [_prediction(0.5), _prediction(0.6)]
    else:
        out_of_range: Any = _ProbabilityOutOfRange(1.5, Outcome.POSITIVE, np.zeros((2, 2)))
        predictions = [out_of_range]
    with pytest.raises(ValueError):
        build_sr(
            sources=sources,
            predictions=predictions,
            card=_card(),
            sop_instance_uid=SR_UID,
            series_instance_uid=SR_SERIES_UID,
        )


class _ProbabilityOutOfRange:
    """Not a Prediction (which refuses such a value itself): proves build_sr checks too."""

    def __init__(self, probability: float, outcome: Outcome, heatmap: np.ndarray) -> None:
        self.probability, self.outcome, self.heatmap = probability, outcome, heatmap


# --- the validators themselves: they must see errors when there are some -------------------


def _valid_report(tmp_path: Path) -> Path:
    sr = build_sr(
        sources=[_header(testdata(RG3_UNCR))],
        predictions=[_prediction(0.9)],
        card=_card(),
        sop_instance_uid=SR_UID,
        series_instance_uid=SR_SERIES_UID,
    )
    return _write(sr, tmp_path, "valid.dcm")[0]


def test_dciodvfy_reports_errors_in_a_broken_report(tmp_path):
    ds = pydicom.dcmread(_valid_report(tmp_path))
    del ds.StudyInstanceUID
    ds.CompletionFlag = "BOGUS"
    ds.save_as(tmp_path / "broken.dcm")
    errors = dciodvfy(tmp_path / "broken.dcm")
    assert any("StudyInstanceUID" in e for e in errors), errors
    assert any("BOGUS" in e for e in errors), errors


def test_sr_validator_reports_a_procedure_outside_cid_100(tmp_path):
    ds = pydicom.dcmread(_valid_report(tmp_path))
    (procedure,) = [
        item for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    procedure.ConceptCodeSequence[0].CodeValue = "363680008"
    procedure.ConceptCodeSequence[0].CodeMeaning = "Radiographic imaging procedure"
    ds.save_as(tmp_path / "broken.dcm")
    errors = run_sr_validator(tmp_path / "broken.dcm").errors
    assert any("363680008" in e and "context group 100" in e for e in errors), errors


def test_parsers_read_each_kind_of_line():
    dciodvfy_output = (
        "Comprehensive3DSR\n"
        "Error - Missing attribute Type 1 Required Element=<StudyInstanceUID>\n"
        "(0x6167,0x6272)  ?  - Warning - Private tag without owner\n"
        "Abort - File open for read failed\n"
    )
    parsed = parse_dciodvfy(dciodvfy_output, 1)
    assert len(parsed.errors) == 2 and len(parsed.warnings) == 1
    assert parse_dciodvfy("SCImage\n", 1).errors  # failure without an error line still fails
    assert parse_dciodvfy("SCImage\n", 0).errors == []

    pixelmed_ok = (
        "Found Comprehensive3DSR IOD\nFound Root Template TID_1500 (MeasurementReport)\n"
        "Root Template Validation Complete\nWarning: 1.8: x: Content Item not in template\n"
        "IOD validation complete\n"
    )
    parsed = parse_sr_validator(pixelmed_ok)
    assert parsed.errors == [] and len(parsed.warnings) == 1
    assert parse_sr_validator(pixelmed_ok.replace("Warning:", "Error:")).errors
    assert parse_sr_validator("IOD (SOP Class) unrecognized\nIOD validation complete\n").errors
    assert parse_sr_validator(pixelmed_ok, "java.io.FileNotFoundException: x").errors


def test_odd_person_names_are_copied_without_being_quoted_in_warnings():
    header = _header(testdata(RG1_UNCR))  # Referring Physician's Name is the one-component "ward"
    header.PatientName = "Single"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # highdicom would quote the name in a UserWarning
        sr = build_sr(
            sources=[header],
            predictions=[_prediction(0.4)],
            card=_card(),
            sop_instance_uid=SR_UID,
            series_instance_uid=SR_SERIES_UID,
        )
    assert sr.ReferringPhysicianName == "ward" and sr.PatientName == "Single"
