"""What the exported model card claims, and on what evidence.

`training.export` writes these into `model.json`:

* the two operating points with the sensitivity and specificity each reaches on the
  validation split, their 95 % intervals and the counts behind them, so a reader sees how
  firm "sensitivity 0.95" is (`metrics.validation.operating_points`);
* the body parts the model was trained on (`body_parts`, also named in `intended_use`) and
  the smallest image it was trained on (`min_image_size`: the node skips smaller images),
  both taken from the training split's profile in the checkpoint (`training.profile`)
  unless the export is told otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dicomnode.model.card import DEFAULT_MIN_IMAGE_SIZE
from training.proportions import operating_point_with_ci
from training.thresholds import OperatingPoints


def operating_points_report(
    labels: np.ndarray, p: np.ndarray, points: OperatingPoints
) -> dict[str, Any]:
    """Both operating points on the validation data: threshold, the sensitivity/specificity
    targets, and what each achieves with its 95 % interval (see `training.proportions`)."""
    return {
        name: {**operating_point_with_ci(labels, p, threshold), "target": target}
        for name, threshold, target in (
            ("low", points.low, {"sensitivity": points.target_sensitivity}),
            ("high", points.high, {"specificity": points.target_specificity}),
        )
    }


@dataclass(frozen=True)
class TrainedOn:
    """What the card says the model is for: body parts and the smallest image it accepts."""

    body_parts: tuple[str, ...]
    min_image_size: int
    intended_use: str
    #: Limitations the card must add (e.g. a minimum below the radiograph floor).
    notes: tuple[str, ...] = ()


def trained_on(
    state: dict[str, Any], *, body_parts: Sequence[str] | None, min_image_size: int | None
) -> TrainedOn:
    """Body parts and minimum image size from the export's options, else from the training
    split's profile in the checkpoint (`training.profile`), else the card's default size.

    The node skips images smaller than `min_image_size`: by default that is the smallest
    image the model was trained on, so it is not asked about sizes it has never seen."""
    profile = state["data"].get("profile") or {}
    parts = tuple(body_parts) if body_parts is not None else tuple(profile.get("body_parts", {}))
    if min_image_size is None:
        min_image_size = int(profile.get("min_image_size", DEFAULT_MIN_IMAGE_SIZE))
    where = f"radiographs of the {', '.join(parts)}" if parts else "radiographs"
    notes = []
    if not parts:
        notes.append("The training data did not say which body parts it shows.")
    if 0 < min_image_size < DEFAULT_MIN_IMAGE_SIZE:
        notes.append(
            f"Accepts images down to {min_image_size} px per side, below the "
            f"{DEFAULT_MIN_IMAGE_SIZE} px under which an image is rarely a diagnostic radiograph."
        )
    return TrainedOn(
        body_parts=parts,
        min_image_size=min_image_size,
        intended_use=f"Triage aid for bone fracture on {where}; not a diagnosis.",
        notes=tuple(notes),
    )
