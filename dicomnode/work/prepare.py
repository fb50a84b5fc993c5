"""From a read dataset to the image the model takes, or the reason there is none.

One function for the worker pipeline and for `dicomnode classify` / HTTP analysis
(`uploads.offline`), so a file is skipped or failed for the same reason on every path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from dicomnode.imaging import preprocess
from dicomnode.imaging.dicom_errors import READ_ERRORS
from dicomnode.imaging.reasons import reason
from dicomnode.store.tables import JobState


@dataclass(frozen=True)
class NotClassified:
    """Why an image is not classified: `state` is SKIPPED (not for the model) or FAILED."""

    state: JobState
    reason: str


def display_image(
    ds: Dataset, *, uid_root: str, min_image_size: int, decode_min_size: int = 0
) -> np.ndarray | NotClassified:
    """`preprocess.to_grayscale(ds)` if `ds` is a radiograph the model takes.

    `min_image_size`: the model card's; `decode_min_size` > 0 lets a JPEG 2000 image be decoded
    at a reduced resolution (0: full resolution)."""
    skipped = preprocess.eligibility(ds, uid_root=uid_root, min_size=min_image_size)
    if skipped is not None:
        return NotClassified(JobState.SKIPPED, skipped)
    try:
        return preprocess.to_grayscale(ds, min_size=decode_min_size)
    except preprocess.NotClassifiable as exc:
        return NotClassified(JobState.FAILED, exc.reason)
    except READ_ERRORS as exc:
        return NotClassified(
            JobState.FAILED, reason("pixel_decode_error", error=type(exc).__name__)
        )
