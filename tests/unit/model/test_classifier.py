"""classifier: the tiny timm architecture for speed, one run of the real efficientnet_b4."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from safetensors.torch import save_file

from dicomnode.imaging.preprocess import heatmap_to_image, to_grayscale, to_model_input
from dicomnode.model.card import WEIGHTS_FILE, ModelCard, ModelPackageError, write_card
from dicomnode.model.classifier import (
    Classifier,
    Outcome,
    Prediction,
    create_model,
    load_classifier,
    outcome_for,
)
from dicomnode.model.runtime import MAX_PROBABILITY_DELTA
from tests.support import data

TINY = data.TINY_ARCH


@pytest.fixture(scope="module")
def radiograph() -> np.ndarray:
    return to_grayscale(pydicom.dcmread(data.testdata(data.RG3_UNCR)))


@pytest.fixture(scope="module")
def wide(radiograph) -> np.ndarray:
    return np.ascontiguousarray(radiograph[400:1000, :])  # 600 x 1760


@pytest.fixture(scope="module")
def tiny() -> Classifier:
    return Classifier.demo(architecture=TINY, device="cpu")


def make_package(folder: Path, model: torch.nn.Module, card: ModelCard) -> ModelCard:
    """Write a model package the way training exports one."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    return write_card(folder, card)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --- outcome and values ----------------------------------------------------------------------


def test_outcome_thresholds(tiny):
    card = dataclasses.replace(tiny.card, threshold_low=0.2, threshold_high=0.8)
    assert outcome_for(0.8, card) is Outcome.POSITIVE
    assert outcome_for(0.7999, card) is Outcome.DOUBT
    assert outcome_for(0.2, card) is Outcome.DOUBT
    assert outcome_for(0.1999, card) is Outcome.NEGATIVE
    assert outcome_for(1.0, card) is Outcome.POSITIVE and outcome_for(0.0, card) is Outcome.NEGATIVE
    assert str(Outcome.DOUBT) == "doubt"


def test_prediction_refuses_impossible_values():
    with pytest.raises(ValueError):
        Prediction(probability=1.5, outcome=Outcome.POSITIVE, heatmap=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        Prediction(probability=0.5, outcome=Outcome.DOUBT, heatmap=np.zeros(4, np.float32))


# --- the demo model ------------------------------------------------------------------------------


def test_demo_card_is_labelled_untrained_and_uses_timms_config(tiny):
    card = tiny.card
    assert card.trained is False and "UNTRAINED DEMO" in card.display_name
    assert card.name == "dicomnode fracture triage"
    assert card.version == f"demo-{TINY}-seed0" and card.architecture == TINY
    assert card.input_size == 160  # timm's test_efficientnet config
    assert card.mean == (0.485, 0.456, 0.406) and card.std == (0.229, 0.224, 0.225)
    assert tiny.device == "cpu" and not tiny.model.training


def test_demo_is_deterministic_and_leaves_the_global_rng_alone(tiny, radiograph):
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    again = Classifier.demo(architecture=TINY, device="cpu", seed=0)
    assert torch.equal(torch.rand(3), expected_draw)
    first, second = tiny.predict(radiograph), again.predict(radiograph)
    assert first.probability == second.probability
    assert np.array_equal(first.heatmap, second.heatmap)
    other = Classifier.demo(architecture=TINY, device="cpu", seed=1).predict(radiograph)
    assert other.probability != first.probability


def test_prediction_values_and_heatmap_geometry(tiny, wide):
    prediction = tiny.predict(wide)
    assert 0.0 <= prediction.probability <= 1.0
    assert prediction.outcome is outcome_for(prediction.probability, tiny.card)
    heatmap = prediction.heatmap
    assert heatmap.dtype == np.float32 and heatmap.ndim == 2
    assert heatmap.shape == (175, 512)  # 600 x 1760 at long side 512
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert heatmap.max() == 1.0  # normalised over the image, letterbox bars cropped first


def test_heatmap_is_the_class_activation_map_of_the_same_forward_pass(tiny, wide):
    card, model = tiny.card, tiny.model
    x = torch.from_numpy(
        to_model_input(wide, input_size=card.input_size, mean=card.mean, std=card.std)
    )[None]
    with torch.inference_mode():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    head = model.get_classifier()
    f, n = card.fracture_index, 1 - card.fracture_index
    raw = torch.einsum("chw,c->hw", features[0], head.weight[f] - head.weight[n])
    # For an average-pool + linear head the CAM's mean *is* the logit difference.
    difference = float(logits[0, f] - logits[0, n])
    assert float(raw.mean() + head.bias[f] - head.bias[n]) == pytest.approx(difference, abs=1e-4)
    expected = heatmap_to_image(raw.relu().numpy(), wide.shape)
    expected /= expected.max()
    prediction = tiny.predict(wide)
    assert np.abs(prediction.heatmap - expected).max() < 1e-5
    assert prediction.probability == pytest.approx(float(torch.softmax(logits, 1)[0, f]), abs=1e-6)


def test_batch_equals_single(tiny, radiograph, wide):
    images = [radiograph, wide, np.ascontiguousarray(radiograph[:, 300:900])]
    batch = tiny.predict_batch(images)
    assert len(batch) == 3 and tiny.predict_batch([]) == []
    for image, together in zip(images, batch, strict=True):
        alone = tiny.predict(image)
        assert abs(alone.probability - together.probability) <= MAX_PROBABILITY_DELTA
        assert alone.heatmap.shape == together.heatmap.shape
        assert np.abs(alone.heatmap - together.heatmap).max() <= 1e-3


def test_temperature_scales_the_logit(tiny, radiograph):
    hot = Classifier(tiny.model, dataclasses.replace(tiny.card, temperature=2.0), device="cpu")
    p1, p2 = tiny.predict(radiograph).probability, hot.predict(radiograph).probability
    assert logit(p2) == pytest.approx(logit(p1) / 2, abs=1e-4)


def test_heads_without_average_pool_are_refused():
    with pytest.raises(ModelPackageError, match="average-pool"):
        Classifier.demo(architecture="test_vit", device="cpu")


def test_device_is_resolved():
    with pytest.raises(ValueError, match="unknown device"):
        Classifier.demo(architecture=TINY, device="toaster")
    assert load_classifier(None, device="auto", demo_architecture=TINY).device in ("cpu", "cuda")


# --- model packages -------------------------------------------------------------------------------


def test_package_round_trip_gives_identical_outputs(tmp_path, tiny, radiograph, wide):
    card = dataclasses.replace(tiny.card, name="fracture triage", version="1.0", trained=True)
    make_package(tmp_path / "pkg", tiny.model, card)
    loaded = Classifier.from_package(tmp_path / "pkg", device="cpu")
    assert loaded.card.version == "1.0" and loaded.card.trained
    for image in (radiograph, wide):
        a, b = tiny.predict(image), loaded.predict(image)
        assert a.probability == b.probability and np.array_equal(a.heatmap, b.heatmap)
    via_loader = load_classifier(str(tmp_path / "pkg"), device="cpu")
    assert via_loader.card == loaded.card


def test_package_weights_are_really_loaded(tmp_path, tiny, radiograph):
    other = create_model(TINY)  # different random weights, same architecture
    make_package(tmp_path / "pkg", other, dataclasses.replace(tiny.card, version="2"))
    loaded = Classifier.from_package(tmp_path / "pkg", device="cpu")
    assert loaded.predict(radiograph).probability != tiny.predict(radiograph).probability


def test_tampered_weights_are_refused(tmp_path, tiny):
    make_package(tmp_path, tiny.model, tiny.card)
    weights = tmp_path / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelPackageError, match="does not match"):
        Classifier.from_package(tmp_path, device="cpu")


def test_wrong_architecture_in_the_card_is_refused(tmp_path, tiny):
    make_package(tmp_path, tiny.model, dataclasses.replace(tiny.card, architecture="resnet18"))
    with pytest.raises(ModelPackageError, match="do not fit architecture resnet18"):
        Classifier.from_package(tmp_path, device="cpu")


def test_unknown_architecture_and_class_count_mismatch_are_refused(tmp_path, tiny):
    make_package(tmp_path / "a", tiny.model, dataclasses.replace(tiny.card, architecture="nope"))
    with pytest.raises(ModelPackageError, match="unknown architecture"):
        Classifier.from_package(tmp_path / "a", device="cpu")
    three = dataclasses.replace(tiny.card, class_names=("normal", "fracture", "other"))
    make_package(tmp_path / "b", tiny.model, three)
    with pytest.raises(ModelPackageError, match="do not fit"):
        Classifier.from_package(tmp_path / "b", device="cpu")


def test_unreadable_weights_are_refused(tmp_path, tiny):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    write_card(tmp_path, tiny.card)
    with pytest.raises(ModelPackageError, match="cannot read the weights"):
        Classifier.from_package(tmp_path, device="cpu")


# --- the real network ---------------------------------------------------------------------------


def test_real_efficientnet_b4_demo(radiograph):
    classifier = load_classifier(None, device="cpu")
    card = classifier.card
    assert card.architecture == "efficientnet_b4" and card.version == "demo-efficientnet_b4-seed0"
    assert card.input_size == 384  # timm's test size for efficientnet_b4 (trained at 320)
    prediction = classifier.predict(radiograph)
    assert 0.0 <= prediction.probability <= 1.0
    assert prediction.heatmap.shape == (512, 512) and prediction.heatmap.max() <= 1.0
    assert prediction.outcome is outcome_for(prediction.probability, card)


def test_no_evidence_gives_an_all_zero_heatmap(tmp_path, tiny, radiograph):
    model = create_model(TINY)
    with torch.no_grad():
        head = model.get_classifier()
        head.weight[1] = head.weight[0]  # fracture and normal weigh the features alike
        head.bias.copy_(torch.tensor([0.0, 1.0]))
    make_package(tmp_path, model, tiny.card)
    prediction = Classifier.from_package(tmp_path, device="cpu").predict(radiograph)
    assert not prediction.heatmap.any() and prediction.heatmap.shape == (512, 512)
    assert prediction.probability == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-5)
