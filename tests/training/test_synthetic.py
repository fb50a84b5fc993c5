"""The synthetic data set: valid DICOM CR, both photometric interpretations, both layouts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.imaging import preprocess
from dicomnode.uids import DEFAULT_UID_ROOT, is_valid_uid
from tests.training.conftest import Synthetic
from training.synthetic import make_dicom, make_image


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
    assert len(list((tmp_path / "folders").rglob("*.*"))) == 16
    assert len(list((tmp_path / "fracatlas" / "images").rglob("*.*"))) == 16
