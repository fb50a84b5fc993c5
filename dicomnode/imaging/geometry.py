"""Model geometry: the letterboxed, normalised model input, and its inverse for heatmaps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

#: Default long side of `heatmap_to_image`'s output.
HEATMAP_MAX_SIZE = 512


def _letterbox(shape: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """(height, width, top, left) of the resized image inside the size x size square."""
    height, width = shape
    long_side = max(height, width)
    new_h = max(1, round(height * size / long_side))
    new_w = max(1, round(width * size / long_side))
    return new_h, new_w, (size - new_h) // 2, (size - new_w) // 2


def to_model_input(
    image: np.ndarray, *, input_size: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Letterboxed, normalised model input: float32 (3, input_size, input_size).

    Long side resized to `input_size` with antialiasing, aspect kept, centred on black (0.0)
    padding, grey replicated to 3 channels, then (x - mean[c]) / std[c].
    """
    if image.ndim != 2 or image.size == 0:
        raise ValueError("image must be a non-empty 2-D array")
    if input_size < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError("input_size must be positive and mean/std have 3 values (std > 0)")
    new_h, new_w, top, left = _letterbox((image.shape[0], image.shape[1]), input_size)
    src = np.ascontiguousarray(image, dtype=np.float32)
    if (new_h, new_w) != src.shape:
        pil = Image.fromarray(src)
        src = np.asarray(
            pil.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=2.0),
            dtype=np.float32,
        )
        src = np.clip(src, 0.0, 1.0)  # Lanczos overshoots slightly at edges
    out = np.empty((3, input_size, input_size), dtype=np.float32)
    for channel in range(3):
        m, s = np.float32(mean[channel]), np.float32(std[channel])
        out[channel].fill(-m / s)
        out[channel, top : top + new_h, left : left + new_w] = (src - m) / s
    return out


def heatmap_to_image(
    heatmap: np.ndarray, image_shape: tuple[int, int], *, max_size: int = HEATMAP_MAX_SIZE
) -> np.ndarray:
    """Undo `to_model_input`'s letterbox on a model-grid heatmap.

    Returns float32 with the image's aspect ratio and orientation, long side
    min(max_size, image long side); the caller scales it to the image when drawing.
    """
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError("heatmap must be a non-empty 2-D array")
    height, width = int(image_shape[0]), int(image_shape[1])
    if height <= 0 or width <= 0:
        raise ValueError("image_shape must be positive")
    long_side = max(height, width)
    out_long = min(max_size, long_side)
    out_h = max(1, round(height * out_long / long_side))
    out_w = max(1, round(width * out_long / long_side))
    grid_h, grid_w = heatmap.shape
    frac_h, frac_w = height / long_side, width / long_side
    box = (
        grid_w * (1 - frac_w) / 2,
        grid_h * (1 - frac_h) / 2,
        grid_w * (1 + frac_w) / 2,
        grid_h * (1 + frac_h) / 2,
    )
    pil = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32))
    resized = pil.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.float32).copy()
