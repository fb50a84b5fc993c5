"""The output registry (`objects.outputs`): every object the node makes is listed once, and
the list is what the builders, the UIDs and retention follow."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from dicomnode.imaging.preprocess import to_grayscale
from dicomnode.imaging.regions import find_regions
from dicomnode.model.classifier import Outcome, Prediction
from dicomnode.objects.outputs import (
    IMAGE_OUTPUTS,
    OUTPUTS,
    STUDY_OUTPUTS,
    ClassifiedImage,
    OutputRefused,
    OutputUIDs,
    StudyImages,
    image_outputs,
    study_outputs,
)
from dicomnode.objects.series import OWN_SERIES_DESCRIPTIONS
from dicomnode.retention.policy import OWN_SERIES_DESCRIPTIONS as RETENTION_SERIES
from dicomnode.store.tables import ResultKind
from tests.support.data import RG3_UNCR, testdata
from tests.support.results import result_card

ROOT = "1.2.826.0.1.3680043.8.498.4711"


def _classified() -> ClassifiedImage:
    ds = pydicom.dcmread(testdata(RG3_UNCR))
    image = to_grayscale(ds)
    heatmap = np.full((8, 8), 0.5, dtype=np.float32)
    heatmap[2:4, 5:7] = 1.0
    regions = find_regions(heatmap, fraction=0.5)
    return ClassifiedImage(source=ds, image=image,
                           prediction=Prediction(0.9, Outcome.POSITIVE, heatmap, regions),
                           sop_instance_uid=str(ds.SOPInstanceUID),
                           study_instance_uid=str(ds.StudyInstanceUID))  # fmt: skip


def test_every_output_is_a_result_kind_with_its_own_series() -> None:
    kinds = [o.kind for o in OUTPUTS]
    assert len(set(kinds)) == len(kinds)
    assert {ResultKind(kind) for kind in kinds} == set(ResultKind)
    numbers = [o.series_number for o in OUTPUTS]
    assert len(set(numbers)) == len(numbers)
    # Retention deletes the node's own series in PACS: it knows every one, from one place.
    assert {o.series_description for o in OUTPUTS} == OWN_SERIES_DESCRIPTIONS
    assert RETENTION_SERIES is OWN_SERIES_DESCRIPTIONS


def test_each_object_is_in_its_series_with_the_derived_uids() -> None:
    image = _classified()
    card = result_card()
    uids = OutputUIDs(root=ROOT, model_version=card.version)
    built = image_outputs(image, card=card, uids=uids)
    study = StudyImages(study_instance_uid=image.study_instance_uid, sources=[image.source],
                        predictions=[image.prediction], version=2)  # fmt: skip
    reports, left_out = study_outputs(study, card=card, uids=uids)
    assert left_out == {}
    assert [o for o, _ in built] == list(IMAGE_OUTPUTS)
    assert [o for o, _ in reports] == list(STUDY_OUTPUTS)
    for output, ds in [*built, *reports]:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        back = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
        assert (back.SeriesNumber, back.SeriesDescription) == (
            output.series_number, output.series_description)  # fmt: skip
        assert back.SeriesInstanceUID == uids.series(output, image.study_instance_uid)
        assert back.StudyInstanceUID == image.study_instance_uid
        key = image.sop_instance_uid if output in IMAGE_OUTPUTS else image.study_instance_uid
        assert back.SOPInstanceUID == uids.instance(output, key, version=2)
    # Repeating a job repeats its objects: the UIDs depend on nothing else.
    again = image_outputs(image, card=card, uids=uids)
    assert [ds.SOPInstanceUID for _, ds in again] == [ds.SOPInstanceUID for _, ds in built]


def test_a_refused_source_names_the_object() -> None:
    image = _classified()
    del image.source.SeriesInstanceUID  # an image the builders cannot reference
    card = result_card()
    with pytest.raises(OutputRefused) as refused:
        image_outputs(image, card=card, uids=OutputUIDs(root=ROOT, model_version=card.version))
    assert refused.value.reason.startswith(f"the {IMAGE_OUTPUTS[0].noun} cannot be built: ")


def test_a_negative_image_has_no_presentation_state() -> None:
    """A GSPS only where there is a finding to show: a negative image gets the overlay only."""
    image = _classified()
    negative = Prediction(0.1, Outcome.NEGATIVE, image.prediction.heatmap)
    card = result_card()
    uids = OutputUIDs(root=ROOT, model_version=card.version)
    built = image_outputs(
        ClassifiedImage(source=image.source, image=image.image, prediction=negative,
                        sop_instance_uid=image.sop_instance_uid,
                        study_instance_uid=image.study_instance_uid),
        card=card, uids=uids,
    )  # fmt: skip
    assert [o.kind for o, _ in built] == ["sc"]
    assert [o.kind for o, _ in image_outputs(image, card=card, uids=uids)] == ["sc", "gsps"]
