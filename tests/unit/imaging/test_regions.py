"""Suspected regions from the class activation map (`imaging.regions`): where they lie, what
they contain, and that the geometry from the model grid back to the source image holds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dicomnode.imaging.geometry import heatmap_to_image, to_model_input
from dicomnode.imaging.regions import MAX_REGIONS, Region, find_regions, regions_from_json

heatmaps = arrays(
    np.float32,
    st.tuples(st.integers(1, 24), st.integers(1, 24)),
    elements=st.floats(0.0, 1.0, width=32),
)


def _contains(region: Region, x: float, y: float, *, rows: int, columns: int) -> bool:
    """(x, y) inside or on the convex outline: on the same side of every edge."""
    outline = region.in_pixels(rows=rows, columns=columns)
    edges = itertools.pairwise(outline)
    turns = [(b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0]) for a, b in edges]
    return all(t >= -1e-9 for t in turns) or all(t <= 1e-9 for t in turns)


@settings(max_examples=150, deadline=None)
@given(heatmap=heatmaps, fraction=st.floats(0.05, 1.0), rows=st.integers(1, 4000),
       columns=st.integers(1, 4000))  # fmt: skip
def test_regions_lie_inside_the_image(heatmap, fraction, rows, columns) -> None:
    regions = find_regions(heatmap, fraction=fraction)
    assert len(regions) <= MAX_REGIONS
    if float(heatmap.max()) <= 0.0:
        assert regions == ()
    for region in regions:
        outline = region.in_pixels(rows=rows, columns=columns)
        assert (outline[:, 0] >= 0).all() and (outline[:, 0] <= columns).all()
        assert (outline[:, 1] >= 0).all() and (outline[:, 1] <= rows).all()
        assert (outline[0] == outline[-1]).all()  # closed, as a DICOM area outline
        box = region.box_in_pixels(rows=rows, columns=columns)
        assert (box[0] == box[-1]).all() and len(box) == 5
        assert (box.min(axis=0) == outline.min(axis=0)).all()
        assert (box.max(axis=0) == outline.max(axis=0)).all()
        assert regions_from_json([region.to_json()]) == (region,)


@settings(max_examples=150, deadline=None)
@given(shape=st.tuples(st.integers(2, 40), st.integers(2, 40)), data=st.data(),
       fraction=st.floats(0.05, 1.0))  # fmt: skip
def test_a_single_peak_gives_one_region_containing_it(shape, data, fraction) -> None:
    """A map falling away from one peak (a Gaussian blob, any width) has exactly one region,
    and its outline contains the peak, in the source's pixels too."""
    row = data.draw(st.integers(0, shape[0] - 1))
    column = data.draw(st.integers(0, shape[1] - 1))
    sigma = data.draw(st.floats(0.5, 10.0))
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    heatmap = np.exp(-((ys - row) ** 2 + (xs - column) ** 2) / (2 * sigma**2)).astype(np.float32)
    regions = find_regions(heatmap, fraction=fraction)
    assert len(regions) == 1
    rows, columns = shape[0] * 7, shape[1] * 5
    x, y = regions[0].peak_in_pixels(rows=rows, columns=columns)
    assert (x, y) == pytest.approx(((column + 0.5) * 5, (row + 0.5) * 7))
    assert _contains(regions[0], x, y, rows=rows, columns=columns)


def test_separate_hot_spots_are_separate_regions_hottest_first() -> None:
    heatmap = np.zeros((20, 30), np.float32)
    heatmap[2:5, 2:5] = 0.7
    heatmap[3, 3] = 0.8
    heatmap[12:16, 20:26] = 0.9
    heatmap[13, 20] = 1.0
    heatmap[18, 0] = 0.3  # below half the peak: not a region
    regions = find_regions(heatmap, fraction=0.5)
    assert [r.peak for r in regions] == [(20.5 / 30, 13.5 / 20), (3.5 / 30, 3.5 / 20)]
    # The outline is the hot block's own box (convex hull of its cells), in fractions.
    assert set(regions[0].outline) == {(20 / 30, 12 / 20), (26 / 30, 12 / 20),
                                       (26 / 30, 16 / 20), (20 / 30, 16 / 20)}  # fmt: skip


@pytest.mark.parametrize("heatmap", [np.zeros((4, 4)), np.full((4, 4), np.nan)])
def test_no_evidence_no_region(heatmap) -> None:
    assert find_regions(heatmap, fraction=0.5) == ()


@pytest.mark.parametrize("shape", [(300, 120), (120, 300), (257, 257), (1760, 2140)])
def test_a_spot_in_the_image_is_found_where_it_is_after_the_letterbox(shape) -> None:
    """Geometry round trip: a bright square in the image goes through the letterboxed model
    input; a heatmap made on the model grid from that input, brought back with
    `heatmap_to_image`, gives a region over the square in the source's pixel coordinates."""
    rows, columns = shape
    image = np.zeros(shape, np.float32)
    top, left = int(rows * 0.6), int(columns * 0.2)
    height, width = max(8, rows // 8), max(8, columns // 8)
    image[top : top + height, left : left + width] = 1.0
    model_input = to_model_input(image, input_size=64, mean=(0, 0, 0), std=(1, 1, 1))
    grid = model_input[0]  # the "activation" is the input itself: same geometry as a CAM
    heatmap = heatmap_to_image(grid, shape)
    regions = find_regions(heatmap, fraction=0.5)
    assert len(regions) == 1
    outline = regions[0].in_pixels(rows=rows, columns=columns)
    tolerance = max(rows, columns) / 64 * 1.5  # one model-grid cell, and a half
    assert abs(outline[:, 0].min() - left) <= tolerance
    assert abs(outline[:, 0].max() - (left + width)) <= tolerance
    assert abs(outline[:, 1].min() - top) <= tolerance
    assert abs(outline[:, 1].max() - (top + height)) <= tolerance
