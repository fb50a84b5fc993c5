"""Export: the package loads in the node, carries its card, and ONNX agrees with PyTorch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from dicomnode import preprocess
from dicomnode.card import ModelPackageError, read_package
from dicomnode.classifier import Classifier
from tests.training.conftest import TINY_CONFIG, Synthetic
from training.checkpoint import BEST
from training.export import ONNX_FILE, ExportError, export, main
from training.thresholds import calibrated_probability
from training.train import RunResult


def test_package_loads_in_the_node_with_a_complete_card(package: Path) -> None:
    classifier = Classifier.from_package(package, device="cpu")
    card = classifier.card
    assert card.trained and card.architecture == TINY_CONFIG.architecture
    assert card.input_size == TINY_CONFIG.image_size and card.class_names == ("normal", "fracture")
    assert 0.0 <= card.threshold_low <= card.threshold_high <= 1.0
    assert card.temperature > 0 and card.created and card.version.startswith(card.architecture)
    assert card.min_image_size == 256  # written, with the default
    assert card.weights_sha256[:8] in card.version
    validation = card.metrics["validation"]
    assert validation["auc"] > 0.9 and validation["sensitivity_at_low"] >= 0.95
    assert validation["specificity_at_high"] >= 0.95
    assert "160 images" in card.training_data
    assert any("not by patient" in note for note in card.limitations)
    assert card.metrics["onnx_max_abs_diff"]["logits"] <= 1e-4


def test_onnx_model_matches_the_node(package: Path, synthetic_folders: Synthetic) -> None:
    card, _ = read_package(package)
    session = onnxruntime.InferenceSession(
        str(package / ONNX_FILE), providers=["CPUExecutionProvider"]
    )
    assert [o.name for o in session.get_outputs()] == ["logits", "features"]
    paths = [synthetic_folders.root / i.path for i in synthetic_folders.images[:3]]
    images = [preprocess.load_image(p) for p in paths]
    batch = np.stack(
        [
            preprocess.to_model_input(i, input_size=card.input_size, mean=card.mean, std=card.std)
            for i in images
        ]
    )
    logits, features = session.run(None, {"input": batch})
    assert features.ndim == 4 and features.shape[0] == 3
    onnx_p = calibrated_probability(logits, temperature=card.temperature)
    node_p = [p.probability for p in Classifier.from_package(package).predict_batch(images)]
    assert np.abs(onnx_p - np.array(node_p)).max() < 1e-4


def test_export_refuses_to_overwrite_and_bad_packages_are_refused(
    package: Path, trained_run: RunResult, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="already holds"):
        export(checkpoint=trained_run.out / BEST, out=package)
    # A tampered card no longer matches the weights: the node refuses it.
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    (copy / "weights.safetensors").write_bytes(b"x" + (copy / "weights.safetensors").read_bytes())
    with pytest.raises(ModelPackageError, match="does not match"):
        Classifier.from_package(copy)


def test_export_cli_without_temperature(trained_run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    assert (
        main(
            [
                "--checkpoint",
                str(trained_run.out / BEST),
                "--out",
                str(out),
                "--no-temperature",
                "--version",
                "v-test",
                "--min-image-size",
                "300",
            ]
        )
        == 0
    )
    card = json.loads((out / "model.json").read_text())
    assert card["temperature"] == 1.0 and card["version"] == "v-test"
    assert card["min_image_size"] == 300  # the node skips smaller images with this package
    assert not (out / ONNX_FILE).exists()
    assert main(["--checkpoint", str(tmp_path / "nothing.pt"), "--out", str(out)]) == 2
