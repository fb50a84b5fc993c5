"""Patient-level splits from a patient list, FracAtlas's body parts, and the training profile."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from training.data import DataError, LabelledImages, make_split, read_dataset
from training.profile import training_profile
from training.synthetic import IMAGES_PER_PATIENT, PATIENTS_CSV, write_dataset

N, SIZE = 48, 40


@pytest.fixture(scope="module")
def fracatlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fracatlas")
    write_dataset(root, layout="fracatlas", n=N, size=SIZE, seed=3)
    return root


def _assert_patient_level(images: LabelledImages, group_by: str) -> None:
    split = make_split(images, val_fraction=0.25, test_fraction=0.25, seed=0, group_by=group_by)
    group_of = {s.path: s.group for s in images.samples}
    where: dict[str, str] = {}
    for name in ("train", "val", "test"):
        assert split.names(name), name
        for path in split.names(name):
            assert where.setdefault(group_of[path], name) == name, "a patient in two splits"


def test_patient_list_gives_a_patient_level_split_in_both_layouts(
    fracatlas: Path, tmp_path: Path
) -> None:
    images = read_dataset(fracatlas, group_by=PATIENTS_CSV)
    groups = Counter(s.group for s in images.samples)
    assert len(groups) == N // IMAGES_PER_PATIENT and set(groups.values()) == {IMAGES_PER_PATIENT}
    assert not any("SYN" in g for g in groups)  # only hashes of the patient ids are kept
    _assert_patient_level(images, PATIENTS_CSV)
    # Without the list, FracAtlas is split by image (each image its own group).
    assert all(not s.group for s in read_dataset(fracatlas).samples)

    folders = tmp_path / "folders"
    write_dataset(folders, layout="folders", n=N, size=SIZE, seed=3)
    absolute = str(folders / PATIENTS_CSV)  # an absolute path works as well as a relative one
    images = read_dataset(folders, group_by=absolute)
    assert len({s.group for s in images.samples}) == N // IMAGES_PER_PATIENT
    _assert_patient_level(images, absolute)


def test_patient_list_must_cover_every_image(fracatlas: Path, tmp_path: Path) -> None:
    root = tmp_path / "fa"
    shutil.copytree(fracatlas, root)
    lines = (root / PATIENTS_CSV).read_text().splitlines()
    (root / PATIENTS_CSV).write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="1 images are not in the patient list"):
        read_dataset(root, group_by=PATIENTS_CSV)
    (root / PATIENTS_CSV).write_text("\n".join([*lines, lines[1].replace("SYN", "X")]) + "\n")
    with pytest.raises(DataError, match="two patients"):
        read_dataset(root, group_by=PATIENTS_CSV)
    (root / "wrong.csv").write_text("image,patient\na.jpg,1\n")
    with pytest.raises(DataError, match="needs a 'patient_id' column"):
        read_dataset(root, group_by="wrong.csv")
    with pytest.raises(DataError, match="cannot read patient list"):
        read_dataset(root, group_by="absent.csv")


def test_fracatlas_body_parts_and_training_profile(fracatlas: Path) -> None:
    images = read_dataset(fracatlas)
    with (fracatlas / "dataset.csv").open() as fh:
        rows = {row["image_id"]: row for row in csv.DictReader(fh)}
    for sample in images.samples:
        row = rows[Path(sample.path).name]
        assert sample.body_parts == tuple(
            p for p in ("hand", "leg", "hip", "shoulder") if row[p] == "1"
        )
    profile = training_profile(images.root, images.samples[:9])
    # Images are SIZE wide and 1.2 * SIZE high; no shoulder in the synthetic set.
    assert profile == {
        "images": 9,
        "body_parts": {"hand": 3, "leg": 3, "hip": 3},
        "min_image_size": SIZE,
        "max_image_size": round(1.2 * SIZE),
    }
