"""Radiograph → display-like greyscale image → model input. Pure; shared with training.

This module is the one entry point the node and `training` use (`preprocess.to_grayscale`, …);
the work is in `header`, `eligibility`, `decode`, `grayscale`, `files` and `geometry`.

`to_grayscale` turns a DICOM dataset into what a radiologist sees: float32 HxW in [0, 1],
black = low attenuation as displayed. The pipeline is the standard's (PS3.4 N.2.1): stored
values → Modality LUT (rescale or LUT) → VOI (VOI LUT Sequence, else the *first* window, else a
robust 0.5-99.5 % percentile window that ignores padding) → MONOCHROME1 inverted. Pixel
Padding Value (and Range Limit) pixels come out 0 (black). The linear/sigmoid window is done
here in float32 (pydicom's float64 `apply_voi_lut` is ~7x slower); a VOI LUT Sequence and a
Modality LUT Sequence are applied with pydicom. Presentation LUT Shape is not applied: for
CR/DX it must agree with the photometric interpretation (INVERSE only with MONOCHROME1).

Model geometry (`to_model_input`): the long side is resized to `input_size` (antialiased
Lanczos after an integer box reduction), the short side keeps the aspect ratio, and the image
is centred on a black (0.0) square before normalisation: a letterbox. `heatmap_to_image`
inverts that: it crops the letterbox bars off a model-grid heatmap and resizes the rest to the
image's aspect (long side at most 512 px by default).
"""

from dicomnode.imaging.decode import MAX_PIXELS
from dicomnode.imaging.eligibility import (
    RADIOGRAPH_CLASSES,
    RADIOGRAPHIC_MODALITIES,
    eligibility,
    too_small,
)
from dicomnode.imaging.files import load_image
from dicomnode.imaging.geometry import HEATMAP_MAX_SIZE, heatmap_to_image, to_model_input
from dicomnode.imaging.grayscale import PERCENTILE_WINDOW, to_grayscale
from dicomnode.imaging.header import NotClassifiable

__all__ = [
    "HEATMAP_MAX_SIZE",
    "MAX_PIXELS",
    "PERCENTILE_WINDOW",
    "RADIOGRAPHIC_MODALITIES",
    "RADIOGRAPH_CLASSES",
    "NotClassifiable",
    "eligibility",
    "heatmap_to_image",
    "load_image",
    "to_grayscale",
    "to_model_input",
    "too_small",
]
