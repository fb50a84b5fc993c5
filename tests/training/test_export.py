"""Export: the package loads in the node, carries its card, and ONNX agrees with PyTorch."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from dicomnode.imaging import preprocess
from dicomnode.model.card import PLOT_FILES, PLOTS_DIR, ModelCard, ModelPackageError, read_package
from dicomnode.model.classifier import Classifier, create_model
from dicomnode.model.equivalence import (
    MAX_DELTA_P,
    MAX_PEAK_SHIFT,
    MIN_HALF_PEAK_IOU,
    Equivalence,
)
from dicomnode.model.evidence import messages
from dicomnode.model.runtime import MAX_PROBABILITY_DELTA
from dicomnode.model.select import VALIDATION_DIR
from tests.support.data import TINY_ARCH
from tests.training.conftest import IMAGE_SIZE, TINY_CONFIG, Synthetic
from training import evaluate
from training.checkpoint import BEST
from training.export import (
    ONNX_FILE,
    ExportError,
    check_batch,
    export,
    export_onnx,
    main,
    onnx_refusal,
)
from training.thresholds import calibrated_probability
from training.train import RunResult


def test_package_loads_in_the_node_with_a_complete_card(package: Path) -> None:
    classifier = Classifier.from_package(package, device="cpu")
    card = classifier.card
    assert card.trained and card.architecture == TINY_CONFIG.architecture
    assert card.input_size == TINY_CONFIG.image_size and card.class_names == ("normal", "fracture")
    assert 0.0 <= card.threshold_low <= card.threshold_high <= 1.0
    assert card.temperature > 0 and card.created and card.version.startswith(card.architecture)
    assert card.min_image_size == IMAGE_SIZE  # written as the export was told
    assert card.weights_sha256[:8] in card.version
    validation = card.metrics["validation"]
    assert validation["auc"] > 0.9 and validation["sensitivity_at_low"] >= 0.95
    assert validation["specificity_at_high"] >= 0.95
    assert "160 images" in card.training_data
    assert any("not by patient" in note for note in card.limitations)
    check = card.metrics["onnx_check"]
    assert check["passed"] and check["decisions_differ"] == 0
    assert check["max_delta_p"] <= MAX_PROBABILITY_DELTA and check["min_iou"] >= MIN_HALF_PEAK_IOU
    assert check["inputs"] == 3  # the probe and the node's two seeded check inputs
    assert check["unreproducible_inputs"] == 0
    assert check["logits_max_abs"] >= 0 and check["features_relative"] >= 0  # reported


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
    # The node's runtime check tolerance: float32 results move with threads and CPU kernels.
    assert np.abs(onnx_p - np.array(node_p)).max() <= MAX_PROBABILITY_DELTA


def test_export_refuses_to_overwrite_and_bad_packages_are_refused(
    package: Path, trained_run: RunResult, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="already holds"):
        export(checkpoint=trained_run.out / BEST, out=package, allow_small_validation=True)
    # A tampered card no longer matches the weights: the node refuses it.
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    (copy / "weights.safetensors").write_bytes(b"x" + (copy / "weights.safetensors").read_bytes())
    with pytest.raises(ModelPackageError, match="does not match"):
        Classifier.from_package(copy)


def test_a_small_validation_set_is_refused_unless_allowed(
    package: Path, trained_run: RunResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "refused"
    small = r"validation: \d+ images \(\d+ fractures\); fewer than 50 fractures"
    with pytest.raises(ExportError, match=small):
        export(checkpoint=trained_run.out / BEST, out=out)
    assert not out.exists()  # nothing written
    assert main(["--checkpoint", str(trained_run.out / BEST), "--out", str(out)]) == 2
    assert "--allow-small-validation" in capsys.readouterr().err
    # Allowed (the session's package): the warning is in the card, with its numbers.
    card, _ = read_package(package)
    [note] = [n for n in card.limitations if "--allow-small-validation" in n]
    validation = card.metrics["validation"]
    assert f"{validation['images']} images ({validation['fracture']} fractures)" in note
    assert validation["fracture"] < 50 and messages(card)  # the node warns too


def test_the_package_carries_its_validation_plots(package: Path) -> None:
    assert PLOT_FILES == evaluate.PLOT_FILES  # the node serves what training draws
    for name in PLOT_FILES.values():
        with Image.open(package / PLOTS_DIR / name) as plot:
            assert plot.format == "PNG" and plot.width >= 400
            assert np.unique(np.asarray(plot.convert("L"))).size > 10  # a drawing, not a blank


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
                "--allow-small-validation",
            ]
        )
        == 0
    )
    card = json.loads((out / "model.json").read_text())
    assert card["temperature"] == 1.0 and card["version"] == "v-test"
    assert card["min_image_size"] == 300  # the node skips smaller images with this package
    assert not (out / ONNX_FILE).exists()
    assert main(["--checkpoint", str(tmp_path / "nothing.pt"), "--out", str(out)]) == 2
    default = tmp_path / "default"
    assert main(["--checkpoint", str(trained_run.out / BEST), "--out", str(default),
                 "--allow-small-validation"]) == 0  # fmt: skip
    # By default, the smallest training image (the synthetic images are IMAGE_SIZE wide),
    # with a limitation saying it is below the 256 px radiograph floor.
    card = json.loads((default / "model.json").read_text())
    assert card["min_image_size"] == IMAGE_SIZE
    assert any("below the 256 px" in note for note in card["limitations"])


def test_a_confident_model_is_not_refused_for_float32_rounding(tmp_path: Path) -> None:
    # Logits of ±100 (a well-trained, confident model) carry float32 rounding of ~1e-5 per
    # operation; summed in another order by ONNX Runtime they differ by a few 1e-4 while the
    # probabilities agree to 1e-12. The export used to gate on |Δ logit| <= 1e-4 and refused
    # such a model (and flipped with the machine's thread count on the tests' tiny one).
    torch.manual_seed(0)
    model = create_model(TINY_ARCH, num_classes=2).eval()
    with torch.no_grad():
        model.get_classifier().weight.mul_(1e4)
    card = ModelCard(name="t", version="1", architecture=TINY_ARCH, input_size=96,
                     mean=(0.5,) * 3, std=(0.25,) * 3)  # fmt: skip
    inputs = check_batch(card, tmp_path)
    figures, extra = export_onnx(model, tmp_path / ONNX_FILE, inputs, card=card)
    with torch.inference_mode():
        assert float(model(inputs).abs().max()) > 50  # the scenario: large logits
    assert onnx_refusal(figures) is None, figures
    assert figures.max_delta_p <= MAX_PROBABILITY_DELTA and extra["logits_max_abs"] > 0


def test_the_onnx_check_runs_on_the_images_the_package_carries(tmp_path: Path) -> None:
    card = ModelCard(name="t", version="1", architecture=TINY_ARCH, input_size=96,
                     mean=(0.5,) * 3, std=(0.25,) * 3)  # fmt: skip
    assert len(check_batch(card, tmp_path)) == 3  # probe + two seeded
    (tmp_path / VALIDATION_DIR).mkdir()
    for index in range(4):
        image = (np.random.default_rng(index).random((120, 90)) * 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / VALIDATION_DIR / f"{index:03d}-normal.png")
    batch = check_batch(card, tmp_path)
    assert batch.shape == (7, 3, 96, 96) and torch.isfinite(batch).all()


BASE = Equivalence(inputs=5, decisions_differ=0, max_delta_p=0.0, min_iou=1.0,
                   max_peak_shift=0.0, cam_max_abs_relative=0.5)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({}, False),  # a raw CAM difference alone (the former 1 % gate) is not a refusal
        ({"max_delta_p": MAX_DELTA_P, "min_iou": MIN_HALF_PEAK_IOU}, False),
        ({"decisions_differ": 1}, True),
        ({"max_delta_p": MAX_DELTA_P * 1.5}, True),
        ({"min_iou": MIN_HALF_PEAK_IOU - 0.01}, True),
        ({"max_peak_shift": MAX_PEAK_SHIFT * 2}, True),
        ({"decisions_differ": 3, "max_delta_p": 0.3, "min_iou": 0.1}, True),  # another graph
    ],
)
def test_onnx_check_refuses_what_the_node_would_refuse(change: dict, refused: bool) -> None:
    figures = dataclasses.replace(BASE, **change)
    reason = onnx_refusal(figures)
    assert (reason is not None) == refused
    if reason:
        assert all(r in reason for r in figures.reasons()) and "5 check inputs" in reason
