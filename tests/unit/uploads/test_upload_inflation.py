"""Uploads are classified without being spooled, so they do not pass the C-STORE handler's
inflation check: a deflated DICOM (alone, or inside a study ZIP) must still be refused before
pydicom inflates it in one piece, at the node's configured `max_dataset_mb`."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomnode.ingest.admission import StoreStatus
from dicomnode.model.classifier import Classifier
from dicomnode.uploads.offline import classify_files
from tests.reliability.malformed import CR_CLASS, deflate_bomb, file_with
from tests.support import data

LIMIT = 8 * 1024 * 1024  # a configured node.max_dataset_mb of 8
BOMB_MB = 64


@pytest.fixture(scope="module")
def bomb() -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_CLASS
    meta.MediaStorageSOPInstanceUID = data.new_uid("upload-inflation", "bomb")
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return file_with(meta, deflate_bomb(BOMB_MB))


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.demo(architecture=data.TINY_ARCH, device="cpu")


def test_a_deflated_bomb_is_refused_before_it_is_read(bomb, classifier, tmp_path: Path) -> None:
    assert len(bomb) < LIMIT  # small on disk, inflating past the limit
    path = tmp_path / "bomb.dcm"
    path.write_bytes(bomb)
    [result] = classify_files([path], classifier=classifier, uid_root="1.2.3", out_dir=tmp_path,
                              max_dataset_bytes=LIMIT)  # fmt: skip
    assert result.state == "failed" and result.refused == StoreStatus.OUT_OF_RESOURCES
    assert result.reason == "inflated dataset larger than max_dataset_mb"


def test_a_bomb_inside_a_study_zip_is_left_out_with_the_reason(bomb, tmp_path: Path) -> None:
    from dicomnode.uploads.analysis import _read_header

    path = tmp_path / "bomb.dcm"
    path.write_bytes(bomb)
    entry = _read_header("study/bomb.dcm", path, max_dataset_bytes=LIMIT)
    assert entry.header is None
    assert entry.reason == "inflated dataset larger than max_dataset_mb"
