"""Reading DICOM header values tolerantly, and the one error of the imaging package.

Strict when writing DICOM, tolerant when reading it: a malformed value counts as absent, so a
radiograph with an odd header is refused with a reason rather than an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.imaging.dicom_errors import VALUE_ERRORS

HEADER_ERRORS = VALUE_ERRORS  # a malformed value counts as absent (dicom_errors)


class NotClassifiable(ValueError):
    """The input cannot be turned into a model image; `reason` is safe to log (no PHI/UIDs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def tag_value(ds: Dataset, keyword: str) -> Any:
    """Value of `keyword` or None; a malformed value counts as absent (never raises)."""
    try:
        return ds.get(keyword)
    except HEADER_ERRORS:
        return None


def tag_text(ds: Dataset, keyword: str) -> str:
    value = tag_value(ds, keyword)
    return "" if value is None else str(value).strip()


def tag_int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = tag_value(ds, keyword)
        return None if value is None or value == "" else int(value)
    except HEADER_ERRORS:
        return None


def safe_code(value: str) -> str:
    """A code string (CS) made safe to put into a reason."""
    cleaned = "".join(ch for ch in value.upper() if ch.isalnum() or ch in " _")[:16].strip()
    return cleaned or "none"


def tag_float(value: Any, default: float) -> float:
    """A DS/IS value (the first of several) as a finite float, else `default`."""
    try:
        several = isinstance(value, Sequence | np.ndarray) and not isinstance(value, str)
        number = float(value[0] if several else value)
    except HEADER_ERRORS:
        return default
    return number if np.isfinite(number) else default
