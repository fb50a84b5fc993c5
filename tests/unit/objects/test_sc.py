"""The overlay Secondary Capture: built from real radiographs (CR extremity, CR chest, DX),
written, read back and checked by dciodvfy; banner text, colours, heatmap and geometry."""

from __future__ import annotations

import copy
import io
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from dicomnode import MANUFACTURER
from dicomnode.imaging.preprocess import to_grayscale
from dicomnode.model.card import ModelCard
from dicomnode.model.classifier import Outcome, Prediction
from dicomnode.objects.sc import (
    SC_MAX_SIZE,
    SC_SERIES_DESCRIPTION,
    SC_SERIES_NUMBER,
    banner_text,
    build_sc,
    footer_text,
    render_overlay,
    render_png,
)
from tests.support.data import RG1_UNCR, RG3_J2KI, RG3_UNCR, cat_dx, testdata
from tests.support.results import PATIENT_STUDY as SHARED_PATIENT_STUDY
from tests.support.results import result_card
from tests.support.validators import dciodvfy, run_dciodvfy

SC_UID = "1.2.826.0.1.3680043.8.498.4711.2001"
SC_SERIES_UID = "1.2.826.0.1.3680043.8.498.4711.2002"

PATIENT_STUDY = (*SHARED_PATIENT_STUDY, "SpecificCharacterSet")


_card = result_card


def _blob(shape: tuple[int, int], centre: tuple[float, float] = (0.4, 0.6)) -> np.ndarray:
    """A heatmap with the image's aspect (smaller, as the classifier gives it): one hot spot."""
    rows, columns = max(2, shape[0] // 8), max(2, shape[1] // 8)
    y, x = np.mgrid[0:rows, 0:columns]
    d2 = (y / rows - centre[0]) ** 2 + (x / columns - centre[1]) ** 2
    return np.exp(-d2 / 0.02).astype(np.float32)


def _prediction(outcome: Outcome, probability: float, heatmap: np.ndarray) -> Prediction:
    return Prediction(probability, outcome, heatmap)


@cache
def _source(name: str) -> tuple[Dataset, np.ndarray]:
    path = {"RG3": testdata(RG3_UNCR), "RG1": testdata(RG1_UNCR), "cat": cat_dx()}[name]
    ds = pydicom.dcmread(path)
    image = to_grayscale(ds)
    del ds.PixelData  # the pipeline keeps headers; build_sc must not need the source pixels
    return ds, image


def _build(
    source: Dataset,
    image: np.ndarray,
    outcome: Outcome = Outcome.POSITIVE,
    probability: float = 0.87,
    *,
    card: ModelCard | None = None,
    heatmap: np.ndarray | None = None,
) -> Dataset:
    return build_sc(
        source=source,
        image=image,
        prediction=_prediction(
            outcome, probability, _blob(image.shape) if heatmap is None else heatmap
        ),
        card=card or _card(),
        sop_instance_uid=SC_UID,
        series_instance_uid=SC_SERIES_UID,
        instance_number=7,
    )


def _write(ds: Dataset, folder: Path, name: str = "sc.dcm") -> tuple[Path, Dataset]:
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path, pydicom.dcmread(path)


def _banner_corner(pixels: np.ndarray) -> np.ndarray:
    """Mean colour of the banner's top-left corner (background: the text is centred)."""
    return pixels[2:8, 2:8].reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize(("name", "laterality"), [("RG3", "R"), ("RG1", None), ("cat", None)])
def test_overlay_is_a_valid_secondary_capture_of_the_source(tmp_path, name, laterality):
    source, image = _source(name)
    path, back = _write(_build(source, image), tmp_path)

    report = run_dciodvfy(path)
    assert report.errors == []
    # Only warnings about values copied as they are from the source may remain.
    assert all("Referring Physician" in w for w in report.warnings), report.warnings

    assert back.SOPClassUID == SecondaryCaptureImageStorage
    assert (back.SOPInstanceUID, back.SeriesInstanceUID, back.InstanceNumber) == (
        SC_UID,
        SC_SERIES_UID,
        7,
    )
    assert (back.SeriesNumber, back.SeriesDescription) == (SC_SERIES_NUMBER, SC_SERIES_DESCRIPTION)
    assert back.Manufacturer == MANUFACTURER
    assert back.BurnedInAnnotation == "YES"
    assert (back.PhotometricInterpretation, back.SamplesPerPixel, back.BitsAllocated) == (
        "RGB",
        3,
        8,
    )
    for keyword in PATIENT_STUDY:
        assert back.get(keyword) == source.get(keyword), keyword
    assert list(back.PatientOrientation) == list(source.PatientOrientation)
    assert back.get("Laterality") == laterality
    (reference,) = back.SourceImageSequence
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert [e.ManufacturerModelName for e in back.ContributingEquipmentSequence
            if e.Manufacturer == MANUFACTURER] == ["dicomnode fracture triage"]  # fmt: skip

    pixels = back.pixel_array
    assert pixels.dtype == np.uint8 and pixels.shape == (back.Rows, back.Columns, 3)
    assert max(back.Rows, back.Columns) <= SC_MAX_SIZE
    assert max(back.Rows, back.Columns) >= SC_MAX_SIZE * 0.75  # large enough to read


def test_banner_sentences():
    assert banner_text(Outcome.POSITIVE, 0.8712) == (
        "AI triage: fracture suspected 0.87 — not a diagnosis"
    )
    assert banner_text(Outcome.DOUBT, 0.5249) == (
        "AI triage: indeterminate 0.52 — review — not a diagnosis"
    )
    assert banner_text(Outcome.NEGATIVE, 0.04) == (
        "AI triage: no fracture detected 0.04 — not a diagnosis"
    )
    assert banner_text(Outcome.NEGATIVE, 0.04, trained=False) == (
        "UNTRAINED DEMO — AI triage: no fracture detected 0.04 — not a diagnosis"
    )
    with pytest.raises(ValueError):
        banner_text("maybe", 0.5)
    untrained = _card(trained=False)
    assert "UNTRAINED DEMO" in footer_text(untrained) and untrained.version in footer_text(
        untrained
    )


def test_banner_is_red_amber_or_green_by_outcome():
    source, image = _source("RG3")
    colours = {
        outcome: _banner_corner(_build(source, image, outcome, p).pixel_array)
        for outcome, p in [
            (Outcome.POSITIVE, 0.9),
            (Outcome.DOUBT, 0.5),
            (Outcome.NEGATIVE, 0.1),
        ]
    }
    red, green, blue = colours[Outcome.POSITIVE]
    assert red > 150 and green < 60 and blue < 60
    red, green, blue = colours[Outcome.DOUBT]
    assert red > 200 and 120 < green < 220 and blue < 60
    red, green, blue = colours[Outcome.NEGATIVE]
    assert green > 100 and red < 60 and blue < 100


def test_untrained_demo_banner_differs_from_the_trained_one():
    source, image = _source("RG3")
    trained = _build(source, image, card=_card()).pixel_array
    untrained = _build(source, image, card=_card(trained=False)).pixel_array
    top = min(trained.shape[0], untrained.shape[0]) // 20
    assert trained.shape != untrained.shape or not np.array_equal(trained[:top], untrained[:top])


def test_heatmap_is_coloured_where_hot_and_absent_where_cold():
    image = np.full((400, 300), 0.5, np.float32)
    kwargs: dict[str, Any] = dict(outcome="negative", probability=0.1, card=_card())
    cold = render_overlay(image, np.zeros((50, 38), np.float32), **kwargs)
    hot = render_overlay(image, np.ones((50, 38), np.float32), **kwargs)
    assert cold.shape == hot.shape
    middle = (cold.shape[0] // 2, cold.shape[1] // 2)
    r, g, b = cold[middle].astype(int)
    assert r == g == b  # untouched grey
    r, g, b = hot[middle].astype(int)
    assert r > g + 40 and r > b + 40  # the top of the colour map is red


def test_image_keeps_its_aspect_and_the_overlay_its_bound():
    image = np.ones((3000, 1000), np.float32)  # tall, white
    pixels = render_overlay(
        image, np.zeros((30, 10), np.float32), outcome="doubt", probability=0.5, card=_card()
    )
    assert max(pixels.shape[:2]) <= SC_MAX_SIZE
    white = np.all(pixels > 240, axis=-1)
    rows, columns = np.nonzero(white.any(axis=1))[0], np.nonzero(white.any(axis=0))[0]
    height, width = rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1
    assert height / width == pytest.approx(3.0, rel=0.02)


def test_source_without_orientation_or_laterality_still_gives_a_valid_overlay(tmp_path):
    source, image = _source("RG3")
    source = copy.deepcopy(source)
    del source.PatientOrientation
    del source.Laterality  # EXTREMITY: a paired part whose side is now unknown
    path, back = _write(_build(source, image), tmp_path)
    assert dciodvfy(path) == []
    assert back.PatientOrientation in (None, "", [])
    assert "Laterality" in back and not back.Laterality


def test_lossy_source_is_flagged_lossy_in_the_overlay(tmp_path):
    source = pydicom.dcmread(testdata(RG3_J2KI), stop_before_pixels=True)
    _, image = _source("RG3")
    path, back = _write(_build(source, image), tmp_path)
    assert dciodvfy(path) == []
    assert back.LossyImageCompression == "01"
    assert back.LossyImageCompressionRatio == source.LossyImageCompressionRatio


def test_render_png_is_a_bounded_thumbnail():
    source, image = _source("cat")
    sc = _build(source, image)
    data = render_png(sc, max_size=256)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    thumbnail = Image.open(io.BytesIO(data))
    assert thumbnail.mode == "RGB" and max(thumbnail.size) == 256
    aspect = sc.Columns / sc.Rows
    assert thumbnail.size[0] / thumbnail.size[1] == pytest.approx(aspect, rel=0.02)


def test_dciodvfy_reports_errors_in_a_broken_overlay(tmp_path):
    source, image = _source("RG3")
    _, back = _write(_build(source, image), tmp_path)
    del back.Rows
    back.BurnedInAnnotation = "MAYBE"
    back.save_as(tmp_path / "broken.dcm")
    errors = dciodvfy(tmp_path / "broken.dcm")
    assert any("Rows" in e for e in errors), errors
    assert any("MAYBE" in e for e in errors), errors


def test_odd_person_names_are_copied_without_being_quoted_in_warnings(tmp_path):
    source, image = _source("RG1")  # Referring Physician's Name is the one-component "ward"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # highdicom would quote the name in a UserWarning
        sc = _build(source, image)
    assert sc.ReferringPhysicianName == source.ReferringPhysicianName == "ward"
    assert sc.PatientName == source.PatientName
