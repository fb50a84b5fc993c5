"""Is the heatmap on the fracture? The pointing game, on data with fracture boxes.

The node draws a class activation map (CAM) on every Secondary Capture, and a radiologist
reads it as "the model looked here". Where a data set marks its fractures with boxes
(FracAtlas ships COCO annotations: `Annotations/COCO JSON/COCO_fracture_masks.json`), this
checks that claim with the pointing game (Zhang et al., ECCV 2016): on each fractured image
that has boxes, the CAM's peak is a *hit* if it falls inside one of them (optionally within a
tolerance in pixels). The hit rate, with its 95 % interval, goes into the evaluation report.

The heatmap is the node's own (`Classifier.predict_batch`, brought back to the image's
geometry), so what is measured is what the Secondary Capture shows. A heatmap with no
positive evidence at all points nowhere and counts as a miss.

A CAM has one value per cell of the network's last feature map (12 x 12 for EfficientNet-B4
at 384 px: a cell is 1/12 of the image's long side), so its peak can only say "this cell".
Besides the strict hit rate the report therefore gives the *cell-level* one: a hit when a box
overlaps the peak's cell (the point test with half a cell of tolerance). A thin fracture box
that misses every cell centre lowers the strict figure, not the cell-level one.

Boxes are matched to images by file name (FracAtlas's `file_name` is the image id); only the
COCO `bbox` is used.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from dicomnode.model.classifier import Classifier
from training.data import DataError, Sample, load_grayscale
from training.proportions import CI_METHOD, proportion_ci

#: Where FracAtlas keeps its COCO file, relative to the data folder.
FRACATLAS_COCO = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"


@dataclass(frozen=True)
class Box:
    """A COCO `bbox`: top-left corner and size, in pixels of the original image."""

    x: float
    y: float
    width: float
    height: float

    def contains(self, x: float, y: float, *, tolerance: float = 0.0) -> bool:
        return (
            self.x - tolerance <= x <= self.x + self.width + tolerance
            and self.y - tolerance <= y <= self.y + self.height + tolerance
        )


def find_coco_file(root: Path) -> Path | None:
    """FracAtlas's COCO file under `root`, or the only JSON file in `Annotations/COCO JSON`."""
    if (root / FRACATLAS_COCO).is_file():
        return root / FRACATLAS_COCO
    found = sorted((root / FRACATLAS_COCO.parent).glob("*.json"))
    return found[0] if len(found) == 1 else None


def read_coco_boxes(path: Path) -> dict[str, list[Box]]:
    """{image file name: its boxes} from a COCO annotation file."""
    try:
        coco = json.loads(path.read_text("utf-8"))
        names = {entry["id"]: PurePosixPath(entry["file_name"]).name for entry in coco["images"]}
        boxes: dict[str, list[Box]] = defaultdict(list)
        for annotation in coco["annotations"]:
            x, y, width, height = (float(v) for v in annotation["bbox"])
            boxes[names[annotation["image_id"]]].append(Box(x, y, width, height))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read COCO boxes from {path.name}: {exc}") from exc
    return dict(boxes)


def heatmap_peak(heatmap: np.ndarray, image_shape: tuple[int, int]) -> tuple[float, float] | None:
    """(x, y) of the heatmap's maximum in image pixels (the centre of its cell), or None when
    the heatmap has no positive value. The node's heatmap keeps the image's aspect ratio at a
    smaller size (`preprocess.heatmap_to_image`), so each cell is scaled back separately."""
    if not np.isfinite(heatmap).all() or float(heatmap.max()) <= 0.0:
        return None
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    rows, cols = heatmap.shape
    return (col + 0.5) * image_shape[1] / cols, (row + 0.5) * image_shape[0] / rows


def cam_cells(classifier: Classifier) -> int | None:
    """Cells per side of the CAM grid (the last feature map at the card's input size), or
    None when the classifier was loaded without PyTorch."""
    import torch

    try:
        model: Any = classifier.model  # a timm model: forward_features
    except RuntimeError:
        return None
    size = classifier.card.input_size
    with torch.inference_mode():
        features = model.forward_features(torch.zeros(1, 3, size, size))
    return int(features.shape[-1])


def pointing_game(
    classifier: Classifier,
    root: Path,
    samples: Sequence[Sample],
    boxes: dict[str, list[Box]],
    *,
    source: str,
    tolerance: float = 0.0,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Hit rate of the CAM peak on the fractured `samples` that have boxes, JSON-ready."""
    boxed = [s for s in samples if s.label == 1 and boxes.get(PurePosixPath(s.path).name)]
    cells = cam_cells(classifier) if boxed else None
    hits = cell_hits = 0
    for start in range(0, len(boxed), batch_size):
        chunk = boxed[start : start + batch_size]
        images = [load_grayscale(root / s.path) for s in chunk]
        for sample, image, prediction in zip(
            chunk, images, classifier.predict_batch(images), strict=True
        ):
            peak = heatmap_peak(prediction.heatmap, (image.shape[0], image.shape[1]))
            image_boxes = boxes[PurePosixPath(sample.path).name]
            if peak is None:
                continue
            hits += any(b.contains(*peak, tolerance=tolerance) for b in image_boxes)
            if cells:
                half_cell = max(image.shape[0], image.shape[1]) / cells / 2
                cell_hits += any(
                    b.contains(*peak, tolerance=tolerance + half_cell) for b in image_boxes
                )
    fractured = sum(1 for s in samples if s.label == 1)
    return {
        "method": "pointing game: CAM peak inside an annotated fracture box",
        "annotations": source,
        "tolerance_px": tolerance,
        "fractured_images": fractured,
        "images": len(boxed),
        **_rate("", hits, len(boxed)),
        "cam_cells": cells,
        **_rate("_within_cell", cell_hits if cells else None, len(boxed)),
        "ci_method": CI_METHOD,
    }


def _rate(suffix: str, hits: int | None, total: int) -> dict[str, Any]:
    if hits is None or not total:
        return {f"hits{suffix}": hits, f"hit_rate{suffix}": None, f"hit_rate{suffix}_ci95": None}
    low, high = proportion_ci(hits, total)
    return {
        f"hits{suffix}": hits,
        f"hit_rate{suffix}": round(hits / total, 6),
        f"hit_rate{suffix}_ci95": [round(low, 6), round(high, 6)],
    }
