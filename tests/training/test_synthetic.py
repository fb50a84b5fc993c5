"""The synthetic data set: valid DICOM CR, both photometric interpretations, both layouts."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.imaging import preprocess
from dicomnode.uids import DEFAULT_UID_ROOT, is_valid_uid
from tests.training.conftest import Synthetic
from training.synthetic import (
    COCO_JSON,
    IMAGES_PER_PATIENT,
    PATIENTS_CSV,
    make_dicom,
    make_image,
    write_dataset,
)


def test_dicom_files_are_valid_cr_the_node_accepts(synthetic_folders: Synthetic) -> None:
    dicoms = [i for i in synthetic_folders.images if i.path.endswith(".dcm")]
    assert {i.photometric for i in dicoms} == {"MONOCHROME1", "MONOCHROME2"}
    for item in dicoms[:6]:
        ds = pydicom.dcmread(synthetic_folders.root / item.path)
        assert ds.Modality == "CR" and ds.PhotometricInterpretation == item.photometric
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
            assert is_valid_uid(str(uid))
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert preprocess.eligibility(ds, uid_root=DEFAULT_UID_ROOT) is None


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_dicom_files_pass_dciodvfy(synthetic_folders: Synthetic) -> None:
    dicoms = [i for i in synthetic_folders.images if i.path.endswith(".dcm")]
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        item = next(i for i in dicoms if i.photometric == photometric)
        result = subprocess.run(
            ["dciodvfy", str(synthetic_folders.root / item.path)], capture_output=True, text=True
        )
        messages = (result.stdout + result.stderr).splitlines()
        assert not [m for m in messages if m.startswith(("Error", "Warning"))], messages


def test_monochrome1_and_monochrome2_decode_to_the_same_image() -> None:
    image = make_image(np.random.default_rng(0), size=64, fracture=True)
    decoded = [
        preprocess.to_grayscale(make_dicom(image, seed=0, index=3, photometric=photometric))
        for photometric in ("MONOCHROME1", "MONOCHROME2")
    ]
    assert np.allclose(decoded[0], decoded[1], rtol=0, atol=1e-6)  # 1 - x in float32
    assert np.abs(decoded[0] - image).max() <= 0.5 / 4095 + 1e-6  # 12-bit quantisation only


def test_fracture_is_a_line_across_the_bone() -> None:
    # Same random draws up to the fracture: the images differ only along a thin line.
    normal = make_image(np.random.default_rng(1), size=96, fracture=False)
    fracture = make_image(np.random.default_rng(1), size=96, fracture=True)
    changed = np.abs(normal - fracture) > 0.2
    assert 20 < changed.sum() < 0.05 * changed.size


def test_cli_writes_both_layouts(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.synthetic",
            "--out",
            str(tmp_path),
            "--n",
            "16",
            "--size",
            "40",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert "16 images" in result.stdout
    assert (tmp_path / "fracatlas" / "dataset.csv").is_file()
    assert len(list((tmp_path / "folders").glob("*/*.*"))) == 16  # the class folders
    assert len(list((tmp_path / "fracatlas" / "images").rglob("*.*"))) == 16
    for layout in ("folders", "fracatlas"):
        assert (tmp_path / layout / PATIENTS_CSV).is_file()
    assert (tmp_path / "fracatlas" / COCO_JSON).is_file()


def test_fracatlas_layout_has_patients_body_parts_and_fracture_boxes(tmp_path: Path) -> None:
    images = write_dataset(tmp_path, layout="fracatlas", n=40, size=48, seed=2)
    with (tmp_path / PATIENTS_CSV).open() as fh:
        patients = {row["image_id"]: row["patient_id"] for row in csv.DictReader(fh)}
    assert {Path(i.path).name: i.patient for i in images} == patients
    assert set(Counter(patients.values()).values()) == {IMAGES_PER_PATIENT}  # 5 patients of 8
    for item in images:  # a DICOM file's PatientID is its patient in the list
        if item.path.endswith(".dcm"):
            ds = pydicom.dcmread(tmp_path / item.path)
            assert ds.PatientID == item.patient
            assert ds.BodyPartExamined == item.body_part.upper()
    with (tmp_path / "dataset.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {p for row in rows for p in ("hand", "leg", "hip", "shoulder") if row[p] == "1"} == {
        "hand",
        "leg",
        "hip",
    }
    coco = json.loads((tmp_path / COCO_JSON).read_text())
    fractured = {Path(i.path).name: i for i in images if i.label}
    assert sorted(e["file_name"] for e in coco["images"]) == sorted(fractured)
    names = {e["id"]: e["file_name"] for e in coco["images"]}
    for annotation in coco["annotations"]:
        item = fractured[names[annotation["image_id"]]]
        assert annotation["bbox"] == list(item.box or ())
        # The box holds the fracture line: it is where a fractured image differs from the
        # same draws without a fracture.
        normal = make_image(np.random.default_rng([2, images.index(item)]), size=48, fracture=False)
        broken = make_image(np.random.default_rng([2, images.index(item)]), size=48, fracture=True)
        rows_changed, cols_changed = np.nonzero(np.abs(normal - broken) > 0.2)
        x, y, w, h = annotation["bbox"]
        assert x <= cols_changed.min() and cols_changed.max() < x + w
        assert y <= rows_changed.min() and rows_changed.max() < y + h
