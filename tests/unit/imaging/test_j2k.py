"""Reduced-resolution JPEG 2000 decoding: right level, stored values kept, results within
tolerance of a full decode."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames

from dicomnode.imaging import j2k
from dicomnode.imaging.preprocess import to_grayscale, to_model_input
from dicomnode.model.classifier import Classifier
from tests.support import data


def _frame(name: str) -> bytes:
    ds = pydicom.dcmread(data.testdata(name))
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def test_reduction_level_keeps_the_long_side_at_least_min_size():
    assert j2k.reduction_for(1760, 768, 5) == 1  # 880
    assert j2k.reduction_for(1760, 384, 5) == 2  # 440
    assert j2k.reduction_for(1760, 1024, 5) == 0
    assert j2k.reduction_for(3000, 768, 5) == 1  # 1500 ≥ 768, 750 < 768
    assert j2k.reduction_for(4096, 384, 2) == 2  # never beyond the stream's levels


def test_codestream_header_is_read():
    assert j2k.codestream_info(_frame(data.RG3_J2KR)) == (1760, 1760, 10, 5, False)
    assert j2k.codestream_info(_frame(data.RG1_J2KR))[:3] == (1841, 1955, 15)
    assert j2k.codestream_info(b"not a codestream") is None


def test_reduced_decode_keeps_stored_values_and_aspect():
    full = pydicom.dcmread(data.testdata(data.RG1_J2KR)).pixel_array.astype(np.float64)
    reduced = j2k.decode_reduced(_frame(data.RG1_J2KR), min_size=768)
    assert reduced is not None and reduced.shape == (978, 921)
    assert reduced.max() < 2**15  # Pillow's 16-bit scaling undone: 15-bit stored values
    # The first wavelet level is a low-pass of the image: compare with a 2x2 mean.
    h, w = (full.shape[0] // 2) * 2, (full.shape[1] // 2) * 2
    pooled = full[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    diff = np.abs(reduced[: h // 2, : w // 2] - pooled)
    assert diff.mean() < 0.01 * (full.max() - full.min())


def test_no_reduction_when_the_image_is_not_larger_than_needed():
    assert j2k.decode_reduced(_frame(data.RG3_J2KR), min_size=1000) is None
    ds = pydicom.dcmread(data.testdata(data.RG3_J2KR))
    assert np.array_equal(to_grayscale(ds, min_size=1000), to_grayscale(ds))


def test_uncompressed_images_ignore_min_size():
    ds = pydicom.dcmread(data.testdata(data.RG3_UNCR))
    assert np.array_equal(to_grayscale(ds, min_size=768), to_grayscale(ds))


@pytest.mark.parametrize("name", [data.RG3_J2KR, data.RG1_J2KI])
def test_reduced_decode_is_within_tolerance_of_a_full_decode(name):
    """The documented tolerance: P(fracture) within 1e-3, and the model input (display units,
    [0, 1]) within 0.5 % on average: a resampling-filter difference."""
    ds = pydicom.dcmread(data.testdata(name))
    full, reduced = to_grayscale(ds), to_grayscale(ds, min_size=768)
    assert reduced.shape[0] * 2 in (full.shape[0], full.shape[0] + 1)
    classifier = Classifier.demo(architecture=data.TINY_ARCH, device="cpu")
    card = classifier.card
    a, b = (
        to_model_input(i, input_size=384, mean=(0, 0, 0), std=(1, 1, 1)) for i in (full, reduced)
    )
    assert np.abs(a - b).mean() < 0.005
    assert np.percentile(np.abs(a - b), 99) < 0.05
    p_full, p_reduced = classifier.predict(full), classifier.predict(reduced)
    assert abs(p_full.probability - p_reduced.probability) <= 1e-3
    assert p_full.heatmap.shape == p_reduced.heatmap.shape
    assert card.input_size <= 768
