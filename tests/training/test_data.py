"""Data readers, the reproducible split, augmentation and the configuration file."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dicomnode.imaging import preprocess
from tests.training.conftest import IMAGE_SIZE, Synthetic
from training.augment import AugmentConfig, augment_image
from training.config import ConfigError, TrainConfig, load_config
from training.data import (
    DataError,
    RadiographDataset,
    load_or_make_split,
    load_split,
    make_split,
    read_dataset,
    read_folders,
    read_fracatlas,
    select,
)
from training.synthetic import write_dataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def fracatlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fracatlas")
    write_dataset(root, layout="fracatlas", n=40, size=48, seed=5)
    return root


def test_folder_layout_labels_follow_the_class_folders(synthetic_folders: Synthetic) -> None:
    images = read_dataset(synthetic_folders.root)
    assert images.layout == "folders"
    expected = {i.path: i.label for i in synthetic_folders.images}
    assert {s.path: s.label for s in images.samples} == expected
    suffixes = Counter(Path(s.path).suffix for s in images.samples)
    assert set(suffixes) == {".png", ".jpg", ".dcm"}
    assert "fracture" in images.describe() and str(images.root.parent) not in images.describe()


@pytest.mark.parametrize(
    ("positive", "negative"),
    [("Fractured", "Non_fractured"), ("positive", "negative"), ("1", "0"), ("abnormal", "normal")],
)
def test_class_folder_synonyms(tmp_path: Path, positive: str, negative: str) -> None:
    for name in (positive, negative):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"")
    labels = {s.path.split("/")[0]: s.label for s in read_folders(tmp_path).samples}
    assert labels == {positive: 1, negative: 0}


def test_dicom_files_without_suffix_are_found(synthetic_folders: Synthetic, tmp_path: Path) -> None:
    dicom = next(i for i in synthetic_folders.images if i.path.endswith(".dcm"))
    for name in ("fracture", "normal"):
        (tmp_path / name).mkdir()
    shutil.copyfile(synthetic_folders.root / dicom.path, tmp_path / "fracture" / "IM0001")
    (tmp_path / "fracture" / "README").write_text("not an image")
    (tmp_path / "normal" / "a.png").write_bytes(b"")
    paths = [s.path for s in read_folders(tmp_path).samples]
    assert paths == ["fracture/IM0001", "normal/a.png"]


def test_unknown_class_folders_need_positive_class(tmp_path: Path) -> None:
    for name in ("broken", "intact", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="--positive-class"):
        read_folders(tmp_path)
    labels = {
        s.path.split("/")[0]: s.label
        for s in read_folders(tmp_path, positive_class="broken").samples
    }
    assert labels == {"broken": 1, "intact": 0, "other": 0}


def test_fracatlas_layout(fracatlas: Path) -> None:
    images = read_fracatlas(fracatlas)
    with (fracatlas / "dataset.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(images.samples) == len(rows) == 40
    for sample, row in zip(images.samples, rows, strict=True):
        assert sample.path.endswith(row["image_id"])
        assert sample.label == int(row["fractured"])
        assert sample.path.startswith(
            "images/Fractured/" if sample.label else "images/Non_fractured/"
        )
    assert read_dataset(fracatlas).layout == "fracatlas"


def test_fracatlas_missing_image_is_an_error(fracatlas: Path, tmp_path: Path) -> None:
    copy = tmp_path / "fa"
    shutil.copytree(fracatlas, copy)
    next((copy / "images" / "Fractured").iterdir()).unlink()
    with pytest.raises(DataError, match=r"1 images listed in dataset\.csv are missing"):
        read_fracatlas(copy)


def test_split_is_stratified_seeded_and_disjoint(synthetic_folders: Synthetic) -> None:
    images = read_dataset(synthetic_folders.root)
    split = make_split(images, val_fraction=0.2, test_fraction=0.2, seed=3, group_by="")
    assert split == make_split(images, val_fraction=0.2, test_fraction=0.2, seed=3, group_by="")
    assert split != make_split(images, val_fraction=0.2, test_fraction=0.2, seed=4, group_by="")
    names = [set(split.names(n)) for n in ("train", "val", "test")]
    assert sum(len(n) for n in names) == len(images.samples) == len(set().union(*names))
    labels = {s.path: s.label for s in images.samples}
    overall = sum(labels.values()) / len(labels)
    for name, expected in (("val", 32), ("test", 32)):
        chosen = split.names(name)
        assert len(chosen) == expected
        assert abs(sum(labels[p] for p in chosen) / len(chosen) - overall) < 0.05


def test_split_file_is_written_then_reused(synthetic_folders: Synthetic, tmp_path: Path) -> None:
    images = read_dataset(synthetic_folders.root)
    path = tmp_path / "split.json"
    first, notes = load_or_make_split(
        images, path, val_fraction=0.2, test_fraction=0.2, seed=1, group_by=""
    )
    assert notes[0].startswith("wrote split file")
    raw = json.loads(path.read_text())
    assert "no patient ids" in raw["note"]
    assert raw["counts"]["test"]["images"] == len(raw["test"])
    again, notes = load_or_make_split(
        images, path, val_fraction=0.5, test_fraction=0.1, seed=99, group_by=""
    )
    assert again == first and notes[0].startswith("reusing split file")
    # A split file that lists images the data does not have is refused.
    raw["test"].append("normal/not-there.png")
    path.write_text(json.dumps(raw))
    split, _ = load_split(path)
    with pytest.raises(DataError, match="not in the data set"):
        select(images, split, "test")


def test_group_aware_split_keeps_each_patient_in_one_split(fracatlas: Path, tmp_path: Path) -> None:
    root = tmp_path / "grouped"
    shutil.copytree(fracatlas, root)
    with (root / "dataset.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        row["patient"] = f"P{i // 3}"  # three images per patient
    with (root / "dataset.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    images = read_dataset(root, group_by="patient")
    assert all(s.group and "P" not in s.group for s in images.samples)  # hashed, not raw
    split = make_split(images, val_fraction=0.25, test_fraction=0.25, seed=0, group_by="patient")
    group_of = {s.path: s.group for s in images.samples}
    seen: dict[str, str] = {}
    for name in ("train", "val", "test"):
        assert split.names(name), name
        for path in split.names(name):
            assert seen.setdefault(group_of[path], name) == name
    with pytest.raises(DataError, match="no 'ward' column"):
        read_dataset(root, group_by="ward")


def test_dicom_patient_id_groups(synthetic_folders: Synthetic) -> None:
    images = read_folders(synthetic_folders.root, group_by="patient-id")
    groups = Counter(s.group for s in images.samples if s.path.endswith(".dcm"))
    assert len(groups) == 20 and set(groups.values()) == {2}  # 40 DICOM files, 2 per patient
    assert all(not s.group for s in images.samples if not s.path.endswith(".dcm"))
    split = make_split(images, val_fraction=0.2, test_fraction=0.2, seed=0, group_by="patient-id")
    where = {p: n for n in ("train", "val", "test") for p in split.names(n)}
    for group in groups:
        members = [s.path for s in images.samples if s.group == group]
        assert len({where[m] for m in members}) == 1


def test_dataset_items_are_the_serving_preprocessing(synthetic_folders: Synthetic) -> None:
    images = read_dataset(synthetic_folders.root)
    dicoms = [s for s in images.samples if s.path.endswith(".dcm")][:4]
    dataset = RadiographDataset(images.root, dicoms, input_size=64, mean=MEAN, std=STD)
    for i, sample in enumerate(dicoms):
        x, label = dataset[i]
        expected = preprocess.to_model_input(
            preprocess.load_image(images.root / sample.path), input_size=64, mean=MEAN, std=STD
        )
        assert label == sample.label
        assert np.array_equal(x.numpy(), expected)


def test_augmented_items_are_reproducible_per_epoch(synthetic_folders: Synthetic) -> None:
    images = read_dataset(synthetic_folders.root)
    samples = list(images.samples[:3])
    common = {"input_size": 64, "mean": MEAN, "std": STD, "augment": AugmentConfig(), "seed": 7}
    a = RadiographDataset(images.root, samples, **common)  # type: ignore[arg-type]
    b = RadiographDataset(images.root, samples, **common)  # type: ignore[arg-type]
    a.set_epoch(2)
    b.set_epoch(2)
    assert np.array_equal(a[1][0].numpy(), b[1][0].numpy())
    b.set_epoch(3)
    assert not np.array_equal(a[1][0].numpy(), b[1][0].numpy())


def test_augmentation_stays_in_range_and_can_be_disabled() -> None:
    image = np.linspace(0, 1, 60 * 50, dtype=np.float32).reshape(60, 50)
    rng = np.random.default_rng(0)
    config = AugmentConfig(rotate_degrees=10, hflip=True, vflip=True, crop_scale=(0.5, 0.9))
    for _ in range(10):
        out = augment_image(image, rng, config)
        assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
        assert 0.5 * image.size * 0.8 <= out.size <= 0.9 * image.size * 1.2
    assert augment_image(image, rng, AugmentConfig(enabled=False)) is image
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))


def test_config_file_overrides_defaults_and_rejects_typos(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'architecture = "test_efficientnet"\nepochs = 3\nlr = 1\n'
        '[augment]\nhflip = true\ngamma = [0.9, 1.1]\n[data]\ngroup_by = "patient"\n'
    )
    config = load_config(path)
    assert (config.epochs, config.lr, config.batch_size) == (3, 1.0, TrainConfig().batch_size)
    assert config.augment.hflip and config.augment.gamma == (0.9, 1.1)
    assert config.data.group_by == "patient"
    assert load_config(None) == TrainConfig()
    path.write_text("epoch = 3\n")
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(path)
    path.write_text("[augment]\nrotate_degree = 3\n")
    with pytest.raises(ConfigError, match=r"augment\.rotate_degree"):
        load_config(path)
    path.write_text('epochs = "3"\n')
    with pytest.raises(ConfigError, match="epochs must be an integer"):
        load_config(path)
    path.write_text('imbalance = "oversample"\n')
    with pytest.raises(ConfigError, match="imbalance"):
        load_config(path)


def test_example_configs_are_valid() -> None:
    folder = Path(__file__).parents[2] / "training" / "configs"
    configs = sorted(folder.glob("*.toml"))
    assert configs
    for path in configs:
        load_config(path)


def test_image_size_of_the_synthetic_set(synthetic_folders: Synthetic) -> None:
    first = synthetic_folders.root / synthetic_folders.images[0].path
    assert preprocess.load_image(first).shape == (round(IMAGE_SIZE * 1.2), IMAGE_SIZE)
