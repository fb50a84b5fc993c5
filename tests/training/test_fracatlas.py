"""End to end on a FracAtlas-layout set: train → export → evaluate → the node serves it.

The synthetic set has FracAtlas's `dataset.csv` (body-part columns), its COCO fracture boxes,
and a patient list (`patients.csv`, eight images per patient) that FracAtlas itself lacks.
Checked: no patient in two splits, the card's operating points with their intervals, body
parts and minimum image size, and the pointing-game figure in the evaluation report.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from dicomnode.model.card import read_package
from dicomnode.model.classifier import Classifier
from tests.training.conftest import TINY_CONFIG
from training.data import load_grayscale, load_split, read_dataset
from training.evaluate import REPORT_FILE, evaluate
from training.export import export, main
from training.synthetic import IMAGES_PER_PATIENT, PATIENTS_CSV, write_dataset
from training.train import run

#: Small and short: what is checked is the path, not the model's quality (the conftest's run
#: checks that the tiny model learns).
N_IMAGES, IMAGE_SIZE, EPOCHS = 96, 64, 4


@dataclasses.dataclass(frozen=True)
class FracAtlasRun:
    data: Path
    split_file: Path
    package: Path
    evaluation: Path
    report: dict[str, Any]


@pytest.fixture(scope="module")
def fracatlas_run(tmp_path_factory: pytest.TempPathFactory) -> FracAtlasRun:
    base = tmp_path_factory.mktemp("fracatlas-e2e")
    data, split_file = base / "FracAtlas", base / "split.json"
    write_dataset(data, layout="fracatlas", n=N_IMAGES, size=IMAGE_SIZE)
    config = dataclasses.replace(
        TINY_CONFIG,
        image_size=IMAGE_SIZE,
        epochs=EPOCHS,
        data=dataclasses.replace(TINY_CONFIG.data, group_by=PATIENTS_CSV),
    )
    result = run(data=data, out=base / "run", config=config, split_file=split_file)
    package = base / "package"
    # card fields from the data; 96 images are too few for a package's claims: allowed here
    export(checkpoint=result.out / "best.pt", out=package, allow_small_validation=True)
    report = evaluate(
        package=package,
        data=data,
        out=base / "test",
        split="test",
        split_file=split_file,
        update_card=True,
    )
    return FracAtlasRun(data, split_file, package, base / "test", report)


def test_no_patient_is_in_two_splits(fracatlas_run: FracAtlasRun) -> None:
    with (fracatlas_run.data / PATIENTS_CSV).open() as fh:
        patient = {row["image_id"]: row["patient_id"] for row in csv.DictReader(fh)}
    split, raw = load_split(fracatlas_run.split_file)
    assert split.group_by == PATIENTS_CSV and "no group straddles" in raw["note"]
    where: dict[str, str] = {}
    for name in ("train", "val", "test"):
        assert split.names(name)
        for path in split.names(name):
            assert where.setdefault(patient[Path(path).name], name) == name
    assert len(where) == N_IMAGES // IMAGES_PER_PATIENT
    card, _ = read_package(fracatlas_run.package)
    assert not any("not by patient" in note for note in card.limitations)
    assert card.metrics["training"]["split"]["group_by"] == PATIENTS_CSV


def test_card_records_operating_points_with_intervals(fracatlas_run: FracAtlasRun) -> None:
    card, _ = read_package(fracatlas_run.package)
    validation = card.metrics["validation"]
    points = validation["operating_points"]
    assert points["low"]["threshold"] == card.threshold_low
    assert points["high"]["threshold"] == card.threshold_high
    for point in points.values():
        assert point["fracture"] == validation["fracture"]
        assert point["normal"] == validation["images"] - validation["fracture"]
        for key in ("sensitivity", "specificity"):
            low, high = point[f"{key}_ci95"]
            assert 0.0 <= low <= point[key] <= high <= 1.0
            assert high - low > 0.05  # a few dozen validation images: the interval is wide
    assert points["low"]["sensitivity"] >= points["low"]["target"]["sensitivity"]
    assert points["high"]["specificity"] >= points["high"]["target"]["specificity"]


def test_card_records_body_parts_and_smallest_training_image(fracatlas_run: FracAtlasRun) -> None:
    card, _ = read_package(fracatlas_run.package)
    assert card.body_parts == ("hand", "leg", "hip")  # the synthetic set has no shoulder
    assert "hand, leg, hip" in card.intended_use and "not a diagnosis" in card.intended_use
    assert card.min_image_size == IMAGE_SIZE  # the images are IMAGE_SIZE wide, 1.2x high
    profile = card.metrics["training"]["profile"]
    assert profile["min_image_size"] == IMAGE_SIZE and profile["body_parts"]["hand"] > 0
    assert any("below the 256 px" in note for note in card.limitations)  # said, not hidden
    # The node serves the package, and classifies the data's own images (not "too small").
    images = read_dataset(fracatlas_run.data)
    served = Classifier.from_package(fracatlas_run.package, device="cpu")
    dicom = next(s for s in images.samples if s.path.endswith(".dcm"))
    assert 0.0 <= served.predict(load_grayscale(images.root / dicom.path)).probability <= 1.0


def test_evaluation_reports_the_pointing_game(fracatlas_run: FracAtlasRun) -> None:
    where = fracatlas_run.report["localisation"]
    split, _ = load_split(fracatlas_run.split_file)
    fractured = [p for p in split.names("test") if "/Fractured/" in p]
    assert where["annotations"] == "COCO_fracture_masks.json"
    assert where["images"] == where["fractured_images"] == len(fractured) > 0  # all boxed
    assert 0 <= where["hits"] <= where["hits_within_cell"] <= where["images"]
    assert where["cam_cells"] == IMAGE_SIZE // 32  # the tiny EfficientNet's 2 x 2 CAM
    assert where["hit_rate"] == round(where["hits"] / where["images"], 6)
    low, high = where["hit_rate_ci95"]
    assert 0.0 <= low <= where["hit_rate"] <= high <= 1.0
    on_disk = json.loads((fracatlas_run.evaluation / REPORT_FILE).read_text())
    assert on_disk["localisation"] == where
    card, _ = read_package(fracatlas_run.package)  # --update-card carries it into the card
    assert card.metrics["test"]["pointing_game"] == {
        k: where[k] for k in ("images", "hit_rate", "hit_rate_ci95", "hit_rate_within_cell")
    }


def test_export_cli_overrides_body_parts_and_size(
    fracatlas_run: FracAtlasRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = fracatlas_run.split_file.parent / "run" / "best.pt"
    argv = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "pkg"),
            "--allow-small-validation"]  # fmt: skip
    assert main([*argv, "--body-parts", "wrist, hand", "--min-image-size", "300"]) == 0
    card, _ = read_package(tmp_path / "pkg")
    assert card.body_parts == ("wrist", "hand") and card.min_image_size == 300
    printed = capsys.readouterr().out
    assert "low threshold" in printed and "95% CI" in printed and "wrist, hand" in printed
