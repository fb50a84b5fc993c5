"""Evaluation: report and plots, and probabilities the node reproduces."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dicomnode.imaging import preprocess
from dicomnode.model.card import read_package
from dicomnode.model.classifier import Classifier
from dicomnode.model.equivalence import MAX_DELTA_P
from dicomnode.model.runtime import MAX_PROBABILITY_DELTA
from tests.training.conftest import Synthetic
from training.evaluate import PLOT_FILES, PREDICTIONS_FILE, REPORT_FILE, evaluate
from training.plots import PLOT_SIZE
from training.train import RunResult

REPO = Path(__file__).parents[2]


def _predictions(out: Path) -> list[dict[str, str]]:
    with (out / PREDICTIONS_FILE).open() as fh:
        return list(csv.DictReader(fh))


def test_report_has_the_expected_keys(evaluation: tuple[Path, dict[str, Any]]) -> None:
    out, report = evaluation
    assert json.loads((out / REPORT_FILE).read_text()) == report
    for key in (
        "auc",
        "auc_ci95",
        "average_precision",
        "thresholds",
        "outcomes",
        "calibration",
        "model",
        "data",
        "plots",
        "images",
        "fracture",
        "normal",
    ):
        assert key in report, key
    low, high = report["auc_ci95"]
    assert 0.0 <= low <= report["auc"] <= high <= 1.0
    assert report["images"] == 32 and report["data"]["split"] == "test"
    for name in ("low", "high"):
        point = report["thresholds"][name]
        assert set(point) == {"threshold", "sensitivity", "specificity", "ppv", "npv", "confusion"}
        assert sum(point["confusion"].values()) == report["images"]
        c = point["confusion"]
        assert point["sensitivity"] == pytest.approx(c["tp"] / (c["tp"] + c["fn"]))
    outcomes = report["outcomes"]
    assert sum(outcomes["fracture"].values()) == report["fracture"]
    assert sum(outcomes["normal"].values()) == report["normal"]
    calibration = report["calibration"]
    assert 0.0 <= calibration["ece"] <= 1.0 and len(calibration["bins"]) == 10
    assert sum(b["count"] for b in calibration["bins"]) == report["images"]


def test_plots_are_pngs_of_the_expected_size(evaluation: tuple[Path, dict[str, Any]]) -> None:
    out, report = evaluation
    assert report["plots"] == PLOT_FILES
    for name in PLOT_FILES.values():
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size == PLOT_SIZE and image.mode == "RGB"
            # Something was drawn: more than a handful of colours.
            assert len(image.getcolors(maxcolors=100_000) or []) > 20


def test_probabilities_are_the_nodes(
    evaluation: tuple[Path, dict[str, Any]], package: Path, synthetic_folders: Synthetic
) -> None:
    out, _ = evaluation
    rows = _predictions(out)
    classifier = Classifier.from_package(package, device="cpu")
    for row in rows:
        prediction = classifier.predict(preprocess.load_image(synthetic_folders.root / row["path"]))
        assert abs(prediction.probability - float(row["probability"])) <= MAX_PROBABILITY_DELTA
        assert str(prediction.outcome) == row["outcome"]


def test_dicomnode_classify_reproduces_the_evaluation(
    evaluation: tuple[Path, dict[str, Any]],
    package: Path,
    synthetic_folders: Synthetic,
    tmp_path: Path,
) -> None:
    out, _ = evaluation
    rows = [r for r in _predictions(out) if r["path"].endswith(".dcm")]
    assert rows, "the test split should contain DICOM files"
    files = [str(synthetic_folders.root / r["path"]) for r in rows]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomnode.cli",
            "classify",
            "--model",
            str(package),
            "--out",
            str(tmp_path / "out"),
            *files,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(files)
    # classify serves what runtime = "auto" chose for this trained package: possibly bf16,
    # admitted by the node's equivalence check, so its bound (|Δp| <= 0.01, same decisions).
    card = json.loads((package / "model.json").read_text())
    for row, line in zip(rows, lines, strict=True):
        p, expected = line["probability"], float(row["probability"])
        assert abs(p - expected) <= MAX_DELTA_P, row["path"]
        for threshold in (card["threshold_low"], card["threshold_high"]):
            assert (p >= threshold) == (expected >= threshold), row["path"]


def test_evaluate_all_images_and_update_card(
    package: Path, synthetic_folders: Synthetic, tmp_path: Path
) -> None:
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)  # with its plots/ folder
    report = evaluate(
        package=copy,
        data=synthetic_folders.root,
        out=tmp_path / "eval",
        split="all",
        n_bootstrap=100,
        update_card=True,
    )
    assert report["images"] == len(synthetic_folders.images)
    card, _ = read_package(copy)  # still verifies: only model.json changed
    assert card.metrics["all"]["auc"] == report["auc"]
    assert "validation" in card.metrics


def test_evaluate_cli(
    package: Path, synthetic_folders: Synthetic, trained_run: RunResult, tmp_path: Path
) -> None:
    from training.evaluate import main

    assert (
        main(
            [
                "--package",
                str(package),
                "--data",
                str(synthetic_folders.root),
                "--out",
                str(tmp_path),
                "--split",
                "val",
                "--split-file",
                str(trained_run.out / "split.json"),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / REPORT_FILE).read_text())["data"]["split"] == "val"
    assert (
        main(
            [
                "--package",
                str(tmp_path),
                "--data",
                str(synthetic_folders.root),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
