"""X-ray-appropriate augmentation of a grayscale radiograph before `preprocess.to_model_input`.

Radiographs are grey, so there is no colour jitter. The geometry stays mild (a small rotation, a
random crop that keeps most of the image); left/right and up/down flips are off by default
because they mirror anatomy and side markers, and can be switched on in the config. Intensity
changes imitate exposure and processing differences: brightness, contrast and gamma.

All randomness comes from the `numpy.random.Generator` passed in, which the data set seeds from
(seed, epoch, index): an epoch's augmentations are the same whether or not the run was resumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    #: Uniform rotation in [-rotate_degrees, +rotate_degrees]; corners are filled with black.
    rotate_degrees: float = 10.0
    hflip: bool = False
    vflip: bool = False
    #: Random resized crop: fraction of the image area kept, and aspect-ratio change.
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    #: Additive brightness in [-brightness, +brightness] (image range is [0, 1]).
    brightness: float = 0.1
    #: Contrast factor in [1 - contrast, 1 + contrast] around the image mean.
    contrast: float = 0.15
    #: Gamma drawn log-uniformly from this range.
    gamma: tuple[float, float] = (0.8, 1.25)

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError("augment.crop_scale must satisfy 0 < low <= high <= 1")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError("augment.crop_ratio must satisfy 0 < low <= high")
        if not 0.0 < self.gamma[0] <= self.gamma[1]:
            raise ValueError("augment.gamma must satisfy 0 < low <= high")
        if not 0.0 <= self.rotate_degrees <= 45.0:
            raise ValueError("augment.rotate_degrees must be in [0, 45]")
        if not 0.0 <= self.brightness < 1.0 or not 0.0 <= self.contrast < 1.0:
            raise ValueError("augment.brightness and augment.contrast must be in [0, 1)")


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> np.ndarray:
    """Crop a random box holding `scale` of the area with its aspect ratio changed by `ratio`."""
    height, width = image.shape
    area = height * width * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]))) * width / height
    crop_w = min(width, max(1, round(math.sqrt(area * aspect))))
    crop_h = min(height, max(1, round(math.sqrt(area / aspect))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return image[top : top + crop_h, left : left + crop_w]


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre, same size, bilinear, black corners."""
    if degrees == 0.0:
        return image
    rotated = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).rotate(
        degrees, resample=Image.Resampling.BILINEAR, fillcolor=0.0
    )
    return np.asarray(rotated, dtype=np.float32)


def adjust_intensity(
    image: np.ndarray, *, brightness: float, contrast: float, gamma: float
) -> np.ndarray:
    """Gamma, then contrast around the mean, then brightness; result clipped to [0, 1]."""
    out = np.clip(image, 0.0, 1.0) ** gamma
    mean = float(out.mean())
    out = (out - mean) * contrast + mean + brightness
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def augment_image(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """A randomly augmented copy of a float32 HxW image in [0, 1] (same value range)."""
    if not config.enabled:
        return image
    out = random_resized_crop(image, rng, scale=config.crop_scale, ratio=config.crop_ratio)
    out = rotate(out, float(rng.uniform(-config.rotate_degrees, config.rotate_degrees)))
    if config.hflip and rng.random() < 0.5:
        out = out[:, ::-1]
    if config.vflip and rng.random() < 0.5:
        out = out[::-1, :]
    gamma = math.exp(rng.uniform(math.log(config.gamma[0]), math.log(config.gamma[1])))
    return adjust_intensity(
        out,
        brightness=float(rng.uniform(-config.brightness, config.brightness)),
        contrast=float(rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)),
        gamma=gamma,
    )
