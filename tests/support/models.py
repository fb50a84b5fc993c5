"""Model packages built in tests: real `weights.safetensors` + `model.json` from a tiny arch.

`tiny_package()` writes the weights of a seeded tiny timm network (head scaled so different
radiographs get clearly different probabilities) and a card; `place_thresholds()` rewrites the
card so that chosen images fall into chosen outcomes. That is a legitimate model package,
loaded by the node through the same `Classifier.from_package` as any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from pydicom import dcmread
from safetensors.torch import save_file
from timm.data import resolve_model_data_config

from dicomnode.imaging import preprocess
from dicomnode.model.card import WEIGHTS_FILE, ModelCard, write_card
from dicomnode.model.classifier import Classifier, create_model
from tests.support.data import TINY_ARCH


def tiny_package(folder: Path, *, seed: int = 0, head_scale: float = 50.0) -> ModelCard:
    """Write a package of the tiny arch into `folder`; returns its card (untrained)."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(TINY_ARCH, num_classes=2)
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.mul_(head_scale)
    config = resolve_model_data_config(model, use_test_size=True)
    mean = tuple(float(v) for v in config["mean"])
    std = tuple(float(v) for v in config["std"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    card = ModelCard(
        name="test package", version=f"test-{TINY_ARCH}-seed{seed}", architecture=TINY_ARCH,
        input_size=int(config["input_size"][-1]), mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]), trained=False,
        training_data="none: seeded random weights for tests",
    )  # fmt: skip
    return write_card(folder, card)


def probabilities(folder: Path, files: Sequence[Path]) -> list[float]:
    """P(fracture) of each file, computed the way the node computes it."""
    classifier = Classifier.from_package(folder, device="cpu")
    images = [preprocess.to_grayscale(dcmread(f)) for f in files]
    return [classifier.predict(image).probability for image in images]


def place_thresholds(folder: Path, card: ModelCard, *, low: float, high: float) -> ModelCard:
    """Rewrite the card with the given operating thresholds (weights unchanged)."""
    return write_card(folder, dataclasses.replace(card, threshold_low=low, threshold_high=high))


#: A validation set like that of issue 19: 9 images, 3 fractures, AUC 0.833 (95 % CI ~0.44-1.00).
SMALL_LABELS = (1, 1, 1, 0, 0, 0, 0, 0, 0)
SMALL_PROBABILITIES = (0.91, 0.62, 0.35, 0.7, 0.4, 0.22, 0.15, 0.1, 0.05)


def small_validation_package(folder: Path, *, seed: int = 0) -> ModelCard:
    """A trained-looking package of the tiny arch whose card records the small validation set
    of issue 19 (metrics computed by `training.metrics`), with the ROC, PR and reliability
    plots `training.export` draws into a package."""
    import numpy as np

    from dicomnode.model.card import PLOTS_DIR
    from dicomnode.model.classifier import outcome_for
    from training.evaluate import compute_report, draw_plots
    from training.thresholds import choose_thresholds

    card = dataclasses.replace(tiny_package(folder, seed=seed), trained=True,
                               name="small validation package")  # fmt: skip
    y, p = np.array(SMALL_LABELS), np.array(SMALL_PROBABILITIES)
    outcomes = [str(outcome_for(float(x), card)) for x in p]
    report = compute_report(y, p, outcomes, card=card, n_bootstrap=500)
    points = choose_thresholds(y, p)
    card = dataclasses.replace(card, metrics={"validation": {
        "images": report["images"], "fracture": report["fracture"], "auc": report["auc"],
        "auc_ci95": report["auc_ci95"], "brier": report["calibration"]["brier"],
        **{k: v for k, v in points.to_json().items() if k.endswith(("_at_low", "_at_high"))},
    }})  # fmt: skip
    (folder / PLOTS_DIR).mkdir(exist_ok=True)
    draw_plots(y, p, report, folder / PLOTS_DIR)
    return write_card(folder, card)
