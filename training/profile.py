"""What a model was trained on, for its card: body parts and the smallest image.

The node skips images smaller than the card's `min_image_size` and a reader of the card wants
to know which body parts the model has seen. Both come from the training split itself, so the
card cannot claim more than the data holds: `training.train` stores this profile in every
checkpoint and `training.export` writes it into `model.json`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

from training.data import DICOM_SUFFIXES, FRACATLAS_BODY_PARTS, DataError, Sample


def image_shape(path: Path) -> tuple[int, int]:
    """(rows, columns) from the file header, without decoding the pixels."""
    try:
        if path.suffix.lower() in DICOM_SUFFIXES:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            return int(ds.Rows), int(ds.Columns)
        with Image.open(path) as image:
            width, height = image.size
        return int(height), int(width)
    except (InvalidDicomError, UnidentifiedImageError, AttributeError, OSError) as exc:
        raise DataError(f"cannot read the size of {path.name}: {exc}") from exc


def body_part_counts(samples: Sequence[Sample]) -> dict[str, int]:
    """Images per body part, in FracAtlas's column order; parts never seen are left out."""
    counts = Counter(part for s in samples for part in s.body_parts)
    known = [p for p in FRACATLAS_BODY_PARTS if counts[p]]
    return {part: counts[part] for part in known + sorted(set(counts) - set(known))}


def training_profile(root: Path, samples: Sequence[Sample]) -> dict[str, Any]:
    """Body parts and smallest image side of `samples` (the training split), JSON-ready."""
    if not samples:
        raise DataError("the training split is empty")
    shapes = [image_shape(root / s.path) for s in samples]
    return {
        "images": len(samples),
        "body_parts": body_part_counts(samples),
        "min_image_size": min(min(shape) for shape in shapes),
        "max_image_size": max(max(shape) for shape in shapes),
    }
