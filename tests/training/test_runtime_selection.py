"""runtime = "auto" on the trained package (the synthetic-trained tiny model): lower precision
(bf16, int8) is tried there and admitted only through the equivalence check; int8 is calibrated
on the package's own validation images (written by `training.export --calibration-data`), and
not tried without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicomnode.imaging.files import load_image
from dicomnode.model import select
from dicomnode.model.classifier import Classifier, load_classifier
from dicomnode.model.equivalence import MAX_DELTA_P, MIN_HALF_PEAK_IOU
from tests.training.conftest import IMAGE_SIZE
from training.export import export
from training.train import RunResult


@pytest.fixture(scope="module")
def with_validation(tmp_path_factory, trained_run: RunResult, synthetic_folders) -> Path:
    """The package exported with 12 validation images of its own (`validation/`)."""
    out = tmp_path_factory.mktemp("pkg") / "p"
    export(checkpoint=trained_run.out / "best.pt", out=out, onnx=True, min_image_size=IMAGE_SIZE,
           allow_small_validation=True, calibration_data=synthetic_folders.root,
           calibration_images=12)  # fmt: skip
    assert len(list((out / select.VALIDATION_DIR).iterdir())) == 12
    return out


def test_lower_precision_is_admitted_only_through_the_check(with_validation, tmp_path):
    served = load_classifier(with_validation, device="cpu", runtime="auto",
                             cache_dir=tmp_path)  # fmt: skip
    selection = served.selection
    assert selection is not None and served.runtime == f"auto ({selection['chosen']})"
    candidates = {c["variant"]: c for c in selection["candidates"]}
    assert select.INT8 in candidates  # calibrated on the package's own validation images
    if "BF16" in select.openvino_capabilities():
        assert "openvino-bf16" in candidates
    for variant, c in candidates.items():
        check = c["check"]
        if check is None:  # could not be built or run: never served
            assert not c["passed"] and variant != selection["chosen"]
            continue
        within = (check["decisions_differ"] == 0 and check["max_delta_p"] <= MAX_DELTA_P
                  and check["min_iou"] >= MIN_HALF_PEAK_IOU)  # fmt: skip
        assert c["passed"] == check["passed"]
        assert not c["passed"] or within
        assert (c["ms"] is not None) == c["passed"]  # only what passed is timed
    assert candidates[selection["chosen"]]["passed"]
    # seeded inputs + the validation images not used for calibration
    assert candidates["torch"]["check"]["inputs"] == 2 + 6
    # what is served gives PyTorch's decisions on the validation images
    reference = Classifier.from_package(with_validation, device="cpu", runtime="torch")
    for path in sorted((with_validation / select.VALIDATION_DIR).iterdir()):
        image = load_image(path)
        got, expected = served.predict(image), reference.predict(image)
        assert got.outcome == expected.outcome
        assert abs(got.probability - expected.probability) <= MAX_DELTA_P
        assert np.isfinite(got.heatmap).all()


def test_without_validation_images_int8_is_not_tried(package, tmp_path):
    served = load_classifier(package, device="cpu", runtime="auto", cache_dir=tmp_path)
    assert served.selection is not None
    variants = {c["variant"] for c in served.selection["candidates"]}
    assert select.INT8 not in variants
    assert select.NO_CALIBRATION in served.selection["notes"]
