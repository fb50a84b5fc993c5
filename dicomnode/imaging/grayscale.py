"""Stored values → the displayed radiograph (float32 HxW in [0, 1]), as the standard says
(PS3.4 N.2.1): Modality LUT → VOI (VOI LUT Sequence, else the first window, else a robust
percentile window that ignores padding) → MONOCHROME1 inverted; padding pixels black.
See `dicomnode.imaging.preprocess` for the whole chain."""

from __future__ import annotations

import struct

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi

from dicomnode.imaging.decode import check_header, decode_stored
from dicomnode.imaging.header import (
    HEADER_ERRORS,
    NotClassifiable,
    tag_float,
    tag_int,
    tag_text,
    tag_value,
)

#: Percentile window used when the dataset has neither a VOI LUT nor a window.
PERCENTILE_WINDOW = (0.5, 99.5)
_PERCENTILE_SAMPLES = 1 << 18  # pixels sampled (on a regular grid) for the percentile window


def _padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """True where a stored value is Pixel Padding (Value, or Value..Range Limit)."""
    value = tag_int(ds, "PixelPaddingValue")
    if value is None:
        return None
    limit = tag_int(ds, "PixelPaddingRangeLimit")
    bits = stored.dtype.itemsize * 8
    if stored.dtype.kind == "i":  # US/SS ambiguity: a signed image's padding read as unsigned
        value = value - (1 << bits) if value >= 1 << (bits - 1) else value
        if limit is not None and limit >= 1 << (bits - 1):
            limit -= 1 << bits
    if limit is None:
        mask = stored == value
    else:
        low, high = min(value, limit), max(value, limit)
        mask = (stored >= low) & (stored <= high)
    return mask if mask.any() else None


def _modality_lut(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    if tag_value(ds, "ModalityLUTSequence"):
        return apply_modality_lut(stored, ds).astype(np.float32)
    values = stored.astype(np.float32)
    slope = tag_float(tag_value(ds, "RescaleSlope"), 1.0)
    intercept = tag_float(tag_value(ds, "RescaleIntercept"), 0.0)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def _first_window(ds: Dataset) -> tuple[float, float] | None:
    center = tag_float(tag_value(ds, "WindowCenter"), float("nan"))
    width = tag_float(tag_value(ds, "WindowWidth"), float("nan"))
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        return None
    return center, width


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray | None:
    """PS3.3 C.11.2.1.2/3 in float32, in place, to [0, 1]; None if the width is invalid."""
    if function == "SIGMOID":
        values -= np.float32(center)
        values *= np.float32(-4.0 / width)
        with np.errstate(over="ignore"):  # exp → inf gives 1 / inf = 0, as it should
            np.exp(values, out=values)
        values += np.float32(1.0)
        np.reciprocal(values, out=values)
        return values
    if function == "LINEAR_EXACT":
        low, scale = center - width / 2, 1.0 / width
    elif width < 1:
        return None
    elif width == 1:  # degenerate LINEAR window: a threshold at center - 0.5
        return (values > center - 0.5).astype(np.float32)
    else:  # LINEAR: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped
        low, scale = center - 0.5 - (width - 1) / 2, 1.0 / (width - 1)
    values -= np.float32(low)
    values *= np.float32(scale)
    return np.clip(values, 0.0, 1.0, out=values)


def _voi_lut(ds: Dataset, values: np.ndarray) -> np.ndarray:
    """First VOI LUT Sequence item via pydicom, scaled by the LUT's own output range."""
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries, first = int(descriptor[0]) or 65536, int(descriptor[1])
    lut = apply_voi(np.arange(first, first + entries, dtype=np.int64), ds, index=0)
    low, high = float(lut.min()), float(lut.max())
    out = apply_voi(np.rint(values).astype(np.int64), ds, index=0).astype(np.float32)
    if high <= low:
        return np.zeros_like(out)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def _percentile_window(values: np.ndarray, padding: np.ndarray | None) -> np.ndarray:
    """Robust window from a regular-grid sample of the non-padding pixels."""
    step = max(1, int(np.sqrt(values.size / _PERCENTILE_SAMPLES)))
    sample = values[::step, ::step]
    if padding is not None:
        sample = sample[~padding[::step, ::step]]
    if sample.size == 0:
        return np.zeros_like(values)
    low, high = (float(v) for v in np.percentile(sample, PERCENTILE_WINDOW))
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if high <= low:
        return np.zeros_like(values)
    values -= np.float32(low)
    values *= np.float32(1.0 / (high - low))
    return np.clip(values, 0.0, 1.0, out=values)


def to_grayscale(ds: Dataset, *, min_size: int = 0) -> np.ndarray:
    """The displayed radiograph as float32 HxW in [0, 1] (see the module docstring).

    `min_size` > 0 lets a JPEG 2000 image be decoded at a reduced resolution whose long side
    is still at least `min_size` (several times faster; same aspect ratio, smaller array).

    Raises NotClassifiable (with a PHI-free reason) for multi-frame, colour, absurdly large,
    missing, short or undecodable pixel data.
    """
    rows, columns = check_header(ds)
    stored = decode_stored(ds, rows=rows, columns=columns, min_size=min_size)
    padding = _padding_mask(ds, stored)
    values = _modality_lut(ds, stored)
    image: np.ndarray | None = None
    try:
        if tag_value(ds, "VOILUTSequence"):
            image = _voi_lut(ds, values)
        elif (window := _first_window(ds)) is not None:
            function = tag_text(ds, "VOILUTFunction").upper() or "LINEAR"
            image = _window(values, *window, function)
    except (*HEADER_ERRORS, NotImplementedError, struct.error) as exc:
        raise NotClassifiable("VOI LUT could not be applied") from exc
    if image is None:
        image = _percentile_window(values, padding)
    if tag_text(ds, "PhotometricInterpretation").upper() == "MONOCHROME1":
        np.subtract(np.float32(1.0), image, out=image)
    if padding is not None:
        image[padding] = 0.0
    return np.ascontiguousarray(image, dtype=np.float32)
