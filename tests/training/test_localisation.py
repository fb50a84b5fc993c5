"""The pointing game (heatmap peak inside the fracture box) and the intervals of proportions."""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from dicomnode.model.classifier import Classifier
from tests.support.data import TINY_ARCH
from training.data import DataError, load_grayscale, read_dataset
from training.localisation import (
    Box,
    cam_cells,
    find_coco_file,
    heatmap_peak,
    pointing_game,
    read_coco_boxes,
)
from training.proportions import operating_point_with_ci, proportion_ci
from training.synthetic import COCO_JSON, write_dataset


@pytest.fixture(scope="module")
def fracatlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fracatlas-boxes")
    write_dataset(root, layout="fracatlas", n=24, size=48, seed=4)
    return root


def test_heatmap_peak_is_mapped_back_to_image_pixels() -> None:
    # The node's heatmap keeps the image's aspect ratio at a smaller size: 10 x 8 for 100 x 80.
    heatmap = np.zeros((10, 8), dtype=np.float32)
    heatmap[2, 5] = 0.7
    assert heatmap_peak(heatmap, (100, 80)) == (55.0, 25.0)  # centre of cell (row 2, col 5)
    assert heatmap_peak(np.zeros((10, 8), np.float32), (100, 80)) is None  # points nowhere


def test_box_contains_with_tolerance() -> None:
    box = Box(10, 20, 5, 4)
    assert box.contains(10, 20) and box.contains(15, 24) and not box.contains(16, 22)
    assert box.contains(16, 22, tolerance=1.5) and not box.contains(9, 19)


def test_coco_boxes_of_the_fracatlas_layout(fracatlas: Path, tmp_path: Path) -> None:
    assert find_coco_file(fracatlas) == fracatlas / COCO_JSON
    boxes = read_coco_boxes(fracatlas / COCO_JSON)
    fractured = {PurePosixPath(s.path).name for s in read_dataset(fracatlas).samples if s.label}
    assert set(boxes) == fractured and all(len(b) == 1 for b in boxes.values())
    assert find_coco_file(tmp_path) is None
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="cannot read COCO boxes"):
        read_coco_boxes(tmp_path / "bad.json")


def test_pointing_game_counts_peaks_inside_the_boxes(fracatlas: Path) -> None:
    classifier = Classifier.demo(architecture=TINY_ARCH, device="cpu")
    images = read_dataset(fracatlas)
    fractured = [s for s in images.samples if s.label]
    # Boxes around each image's own heatmap peak: all hits; boxes in a corner far from it:
    # none; the same boxes with a tolerance reaching the peak: all hits again.
    cells = cam_cells(classifier)
    assert cells == classifier.card.input_size // 32  # EfficientNet: stride 32
    around, corner, near = {}, {}, {}
    for sample in fractured:
        image = load_grayscale(fracatlas / sample.path)
        peak = heatmap_peak(classifier.predict(image).heatmap, (image.shape[0], image.shape[1]))
        assert peak is not None
        name = PurePosixPath(sample.path).name
        around[name] = [Box(peak[0] - 1, peak[1] - 1, 2, 2)]
        far_x = 0.0 if peak[0] > image.shape[1] / 2 else image.shape[1] - 1.0
        corner[name] = [Box(far_x, peak[1], 1, 1)]
        # Beside the peak, within its CAM cell (half a cell is several pixels here).
        assert max(image.shape) / cells / 2 > 2.0
        near[name] = [Box(peak[0] + 1, peak[1] + 1, 1, 1)]
    del around[PurePosixPath(fractured[0].path).name]  # a fractured image without boxes
    result = pointing_game(classifier, fracatlas, images.samples, around, source="around")
    assert result["fractured_images"] == len(fractured)
    assert result["images"] == result["hits"] == len(fractured) - 1 and result["hit_rate"] == 1.0
    low, high = result["hit_rate_ci95"]
    assert 0.5 < low < 1.0 == high  # not the degenerate [1, 1] a bootstrap would give
    assert result["hits_within_cell"] == result["hits"] and result["cam_cells"] == cells
    missed = pointing_game(classifier, fracatlas, images.samples, corner, source="corner")
    assert missed["hits"] == missed["hits_within_cell"] == 0
    assert missed["images"] == len(fractured)
    assert missed["hit_rate_ci95"][0] == 0.0 < missed["hit_rate_ci95"][1]
    wide = pointing_game(
        classifier, fracatlas, images.samples, corner, source="corner", tolerance=64.0
    )
    assert wide["hits"] == len(fractured)
    beside = pointing_game(classifier, fracatlas, images.samples, near, source="near")
    assert beside["hits"] == 0 and beside["hits_within_cell"] == len(fractured)
    assert beside["hit_rate_within_cell"] == 1.0 and beside["hit_rate"] == 0.0
    empty = pointing_game(classifier, fracatlas, images.samples, {}, source="none")
    assert empty["images"] == 0 and empty["hit_rate"] is None


def test_wilson_interval_of_a_proportion() -> None:
    # Textbook values (Wilson score, z = 1.96): 20/20 -> [0.8389, 1]; 8/10 -> [0.4902, 0.9433].
    low, high = proportion_ci(20, 20)
    assert low == pytest.approx(0.8389, abs=1e-4) and high == 1.0
    assert proportion_ci(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert all(math.isnan(v) for v in proportion_ci(0, 0))


def test_operating_point_with_ci_counts() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.2, 0.1, 0.1, 0.05])
    point = operating_point_with_ci(y, p, 0.5)
    assert point["sensitivity"] == 0.75 and point["specificity"] == round(5 / 6, 6)
    assert (point["fracture"], point["normal"]) == (4, 6)
    assert point["sensitivity_ci95"] == pytest.approx(proportion_ci(3, 4), abs=1e-6)
    assert point["specificity_ci95"] == pytest.approx(proportion_ci(5, 6), abs=1e-6)
