"""Validation images carried in a model package (`<package>/validation/`), for the node's
`runtime = "auto"`: int8 is calibrated on half of them and every candidate runtime is checked
against PyTorch on the other half (`dicomnode.model.select`). Without them the node does not
try int8, and checks the other runtimes on its built-in inputs only.

A package carrying images carries patients' pixels, so nothing is written unless the export is
given the data folder (`--calibration-data`), and then only what the node needs:
- images of the run's **validation split** only (never training or test images), recorded
  in the card (`metrics.validation_images`) and printed by the export;
- pixels only: 8-bit greyscale PNG, long side resized to the model's input size, no DICOM
  header and no text chunks, named by index and label (a file name can hold a patient's name);
- a DICOM whose Burned In Annotation (0028,0301) is not `NO` is skipped: text burned into the
  pixels (a name, a date) must not travel with the package. Other formats carry no such
  attribute and are taken as they are: check them before sharing a package.

The order is fracture, fracture, normal, normal, … so that the node's halves (every second
image) are balanced between the classes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image

from dicomnode.model.select import MAX_CALIBRATION, MAX_CHECK, VALIDATION_DIR
from training.data import DataError, load_grayscale, read_dataset, select
from training.data import load_split as read_split
from training.tracking import dataset_hash

#: As many as the node uses: MAX_CALIBRATION calibrate int8, MAX_CHECK join the check inputs.
DEFAULT_CALIBRATION_IMAGES = MAX_CALIBRATION + MAX_CHECK
FORMAT = "8-bit greyscale PNG, long side {size} px, pixels only (no header, no file names)"


@dataclass(frozen=True)
class Written:
    images: int
    fracture: int
    skipped_burned_in: int

    def to_json(self, *, input_size: int) -> dict[str, Any]:
        return {
            "images": self.images,
            "fracture": self.fracture,
            "split": "val",
            "skipped_burned_in_annotation": self.skipped_burned_in,
            "format": FORMAT.format(size=input_size),
            "use": "int8 calibration and the runtime equivalence check (runtime = auto)",
        }


def burned_in_text(path: Path) -> bool:
    """True for a DICOM file that has, or may have, text burned into its pixels."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError):
        return False  # not DICOM: no attribute to read
    return str(ds.get("BurnedInAnnotation", "")).strip().upper() != "NO"


def _interleaved(fracture: list[Path], normal: list[Path]) -> list[tuple[Path, str]]:
    """F, F, N, N, F, F, …; the rest of one class when the other runs out."""
    out: list[tuple[Path, str]] = []
    f, n = iter(fracture), iter(normal)
    while True:
        pair = [(p, "fracture") for p in (next(f, None), next(f, None)) if p is not None]
        pair += [(p, "normal") for p in (next(n, None), next(n, None)) if p is not None]
        if not pair:
            return out
        out += pair


def pixels_only(image: np.ndarray, *, input_size: int) -> Image.Image:
    """The image as the node reads it ([0, 1] greyscale), long side `input_size`, 8 bit."""
    data = np.clip(np.nan_to_num(image) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    picture = Image.fromarray(data, mode="L")
    scale = input_size / max(picture.size)
    if scale < 1:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return picture


def write_validation_images(
    *,
    state: dict[str, Any],
    data: Path,
    package: Path,
    count: int = DEFAULT_CALIBRATION_IMAGES,
    split_file: Path | None = None,
) -> Written:
    """Write up to `count` of the run's validation images into `package/validation/`
    (replacing what was there). `state` is the training checkpoint: the data must be the
    data the model was trained on (same content hash), and the split the run's."""
    recorded = state["data"]
    config = state.get("config", {}).get("data", {})
    images = read_dataset(data, positive_class=str(config.get("positive_class", "")),
                          group_by=str(recorded.get("group_by", "")))  # fmt: skip
    if recorded.get("data_sha256") and dataset_hash(images) != recorded["data_sha256"]:
        raise DataError(f"{data} is not the data this model was trained on (content hash differs)")
    path = split_file or Path(recorded["split_file"])
    split, _ = read_split(path)
    samples = select(images, split, "val")
    input_size = int(state["model_info"]["input_size"])
    by_label: dict[int, list[Path]] = {0: [], 1: []}
    skipped = 0
    for sample in samples:
        file = images.root / sample.path
        if burned_in_text(file):
            skipped += 1
            continue
        by_label[sample.label].append(file)
    target = package / VALIDATION_DIR
    partial = package / f".{VALIDATION_DIR}.part"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    chosen = _interleaved(by_label[1], by_label[0])[: max(0, count)]
    for index, (file, label) in enumerate(chosen):
        picture = pixels_only(load_grayscale(file), input_size=input_size)
        picture.save(partial / f"{index:03d}-{label}.png", format="PNG")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return Written(len(chosen), sum(label == "fracture" for _, label in chosen), skipped)
