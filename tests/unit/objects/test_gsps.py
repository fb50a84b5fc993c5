"""Findings located: the GSPS outlining the suspected regions on the source image, and the
same regions in the SR as TID 1410 planar ROI groups. Built from real radiographs, written,
read back (pydicom, highdicom) and checked by dciodvfy and pixelmed's DicomSRValidator."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from dicomnode.imaging.regions import find_regions
from dicomnode.model.classifier import Outcome, Prediction
from dicomnode.objects.gsps import (
    CONTENT_LABEL,
    GSPS_SERIES_DESCRIPTION,
    GSPS_SERIES_NUMBER,
    LAYER_NAME,
    annotation_text,
    build_gsps,
)
from dicomnode.objects.sr import build_sr
from tests.support.data import RG1_UNCR, RG3_UNCR, cat_dx, testdata
from tests.support.results import result_card
from tests.support.validators import dciodvfy, run_sr_validator

GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
UID = "1.2.826.0.1.3680043.8.498.4711.2001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.4711.2002"
KNOWN_WARNING = '(72704001,SCT,"Fracture"): Content Item not in template'

SOURCES = {
    "RG3 CR extremity (MONOCHROME1)": lambda: pydicom.dcmread(testdata(RG3_UNCR)),
    "RG1 CR chest": lambda: pydicom.dcmread(testdata(RG1_UNCR)),
    "deid-data DX": lambda: pydicom.dcmread(cat_dx()),
}


def _prediction(outcome: Outcome, probability: float = 0.87) -> Prediction:
    heatmap = np.zeros((24, 32), np.float32)
    heatmap[4:9, 20:27] = 0.9
    heatmap[6, 23] = 1.0
    heatmap[18:22, 2:6] = 0.7  # a second, cooler region
    regions = () if outcome == Outcome.NEGATIVE else find_regions(heatmap, fraction=0.5)
    return Prediction(probability, outcome, heatmap, regions)


def _gsps(source: Dataset, outcome: Outcome = Outcome.POSITIVE, *, trained: bool = True):
    return build_gsps(source=source, prediction=_prediction(outcome), card=result_card(
        trained=trained), sop_instance_uid=UID, series_instance_uid=SERIES_UID,
        instance_number=3)  # fmt: skip


def _inside(points: np.ndarray, source: Dataset) -> bool:
    columns, rows = int(source.Columns), int(source.Rows)
    return bool(((points >= 0) & (points <= [columns, rows])).all())


@pytest.mark.parametrize("name", SOURCES)
def test_gsps_outlines_the_regions_on_the_source_and_passes_dciodvfy(name, tmp_path: Path):
    source = SOURCES[name]()
    gsps = _gsps(source)
    assert gsps is not None
    path = tmp_path / "gsps.dcm"
    gsps.save_as(path, enforce_file_format=True)
    assert dciodvfy(path) == []
    back = pydicom.dcmread(path)
    assert back.SOPClassUID == GSPS_CLASS
    assert back.file_meta.MediaStorageSOPClassUID == GSPS_CLASS
    # In the source's study, in its own series, and pointing at the source image.
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.SeriesInstanceUID == SERIES_UID != source.SeriesInstanceUID
    assert (back.SeriesNumber, back.SeriesDescription) == (GSPS_SERIES_NUMBER,
                                                          GSPS_SERIES_DESCRIPTION)  # fmt: skip
    assert back.ContentLabel == CONTENT_LABEL
    referenced = back.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    annotation = back.GraphicAnnotationSequence[0]
    assert annotation.GraphicLayer == LAYER_NAME
    assert [i.ReferencedSOPInstanceUID for i in annotation.ReferencedImageSequence] == [
        source.SOPInstanceUID]  # fmt: skip
    outlines = annotation.GraphicObjectSequence
    assert len(outlines) == 2  # one per region
    for outline in outlines:
        assert (outline.GraphicType, outline.GraphicAnnotationUnits) == ("POLYLINE", "PIXEL")
        points = np.array(outline.GraphicData, dtype=float).reshape(-1, 2)
        assert (points[0] == points[-1]).all() and len(points) >= 4
        assert _inside(points, source)
    assert annotation.TextObjectSequence[0].UnformattedTextValue == "AI: fracture suspected 0.87"
    assert _inside(np.array([annotation.TextObjectSequence[0].AnchorPoint]), source)
    assert back.GraphicLayerSequence[0].GraphicLayer == LAYER_NAME


def test_negative_image_gets_no_gsps_and_the_demo_says_so():
    source = SOURCES["RG3 CR extremity (MONOCHROME1)"]()
    assert _gsps(source, Outcome.NEGATIVE) is None
    demo = _gsps(source, Outcome.DOUBT, trained=False)
    text = demo.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert text == "UNTRAINED DEMO - AI: fracture indeterminate 0.87 - review"
    assert "UNTRAINED DEMO" in demo.GraphicLayerSequence[0].GraphicLayerDescription
    assert annotation_text("positive", 0.874) == "AI: fracture suspected 0.87"


def test_sr_holds_the_regions_as_planar_rois_readable_by_highdicom(tmp_path: Path):
    """TID 1410 groups with a SCOORD on each positive/doubt image, none for a negative one;
    0 errors from dciodvfy and DicomSRValidator; highdicom reads the regions back and they lie
    inside their image."""
    sources = [pydicom.dcmread(testdata(RG3_UNCR), stop_before_pixels=True),
               pydicom.dcmread(testdata(RG1_UNCR), stop_before_pixels=True)]  # fmt: skip
    # One study: the chest joins the extremity's study (as a late image of it would).
    sources[1].StudyInstanceUID = sources[0].StudyInstanceUID
    predictions = [_prediction(Outcome.POSITIVE), _prediction(Outcome.NEGATIVE, 0.1)]
    sr = build_sr(sources=sources, predictions=predictions, card=result_card(trained=False),
                  sop_instance_uid=UID, series_instance_uid=SERIES_UID)  # fmt: skip
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy(path) == []
    findings = run_sr_validator(path)
    assert findings.errors == []
    assert all(KNOWN_WARNING in w for w in findings.warnings)

    report = hd.sr.srread(path)
    groups = report.content.get_planar_roi_measurement_groups()
    # The positive image's two regions, each as outline and bounding box; none for the other.
    assert len(groups) == 4
    names = ["region 1", "region 1 bounding box", "region 2", "region 2 bounding box"]
    for name, group in zip(names, groups, strict=True):
        assert group.tracking_identifier.endswith(f"{name} (UNTRAINED DEMO)")
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        image = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert image.ReferencedSOPInstanceUID == sources[0].SOPInstanceUID
        points = region.value
        assert (points[0] == points[-1]).all()
        assert _inside(points, sources[0])
    # The SR's outline of a region is the GSPS's (the same pixels on the same image).
    gsps = _gsps(pydicom.dcmread(testdata(RG3_UNCR)))
    first = gsps.GraphicAnnotationSequence[0].GraphicObjectSequence[0].GraphicData
    assert np.allclose(np.array(first, dtype=float).reshape(-1, 2), groups[0].roi.value)


def test_a_report_with_a_single_region_passes_the_validators(tmp_path: Path):
    """One image, one region (the common case): still 0 errors (pixelmed misreads a report
    holding a single TID 1410 group; the outline and its box make two)."""
    source = pydicom.dcmread(cat_dx(), stop_before_pixels=True)
    heatmap = np.zeros((24, 32), np.float32)
    heatmap[2:5, 3:6] = 1.0
    prediction = Prediction(0.9, Outcome.POSITIVE, heatmap, find_regions(heatmap, fraction=0.5))
    assert len(prediction.regions) == 1
    sr = build_sr(sources=[source], predictions=[prediction], card=result_card(),
                  sop_instance_uid=UID, series_instance_uid=SERIES_UID)  # fmt: skip
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy(path) == []
    assert run_sr_validator(path).errors == []
    outline, box = (g.roi.value for g in
                    hd.sr.srread(path).content.get_planar_roi_measurement_groups())  # fmt: skip
    assert (box.min(axis=0) == outline.min(axis=0)).all()
    assert (box.max(axis=0) == outline.max(axis=0)).all() and len(box) == 5
