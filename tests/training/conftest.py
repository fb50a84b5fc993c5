"""Shared, session-scoped training artefacts: one synthetic data set, one trained tiny model,
its exported package and its evaluation. Each is built once; tests only read them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.support.data import TINY_ARCH
from training.augment import AugmentConfig
from training.config import DataConfig, TrainConfig
from training.evaluate import evaluate
from training.export import export
from training.synthetic import SyntheticImage, write_dataset
from training.train import RunResult, run

#: 160 images of 96 px: 96 images gave a noisy validation AUC for a network trained from
#: scratch; with 160 the tiny model reaches > 0.95 within 15 CPU epochs (~10 s).
N_IMAGES, IMAGE_SIZE = 160, 96

TINY_CONFIG = TrainConfig(
    architecture=TINY_ARCH,
    image_size=IMAGE_SIZE,
    epochs=15,
    batch_size=16,
    lr=2e-3,
    warmup_epochs=1.0,
    patience=100,
    num_workers=0,
    seed=1,
    data=DataConfig(val_fraction=0.2, test_fraction=0.2),
    augment=AugmentConfig(rotate_degrees=5.0, crop_scale=(0.9, 1.0)),
)


@dataclasses.dataclass(frozen=True)
class Synthetic:
    root: Path
    images: list[SyntheticImage]


@pytest.fixture(scope="session")
def synthetic_folders(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    root = tmp_path_factory.mktemp("synthetic") / "folders"
    return Synthetic(root, write_dataset(root, layout="folders", n=N_IMAGES, size=IMAGE_SIZE))


@pytest.fixture(scope="session")
def trained_run(
    tmp_path_factory: pytest.TempPathFactory, synthetic_folders: Synthetic
) -> RunResult:
    out = tmp_path_factory.mktemp("run")
    return run(data=synthetic_folders.root, out=out, config=TINY_CONFIG)


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory, trained_run: RunResult) -> Path:
    out = tmp_path_factory.mktemp("package")
    # The synthetic images are 96 px: below the default min_image_size, the node would skip them.
    # 32 validation images are too few for a package's claims: exported anyway, as allowed.
    export(checkpoint=trained_run.out / "best.pt", out=out, onnx=True, min_image_size=IMAGE_SIZE,
           allow_small_validation=True)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def evaluation(
    tmp_path_factory: pytest.TempPathFactory,
    package: Path,
    synthetic_folders: Synthetic,
    trained_run: RunResult,
) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("evaluation")
    # The split is kept with the run (the data folder is only read).
    report = evaluate(
        package=package,
        data=synthetic_folders.root,
        out=out,
        split="test",
        split_file=trained_run.out / "split.json",
    )
    return out, report
