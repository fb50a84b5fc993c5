"""Where the model looked: suspected regions from the class activation map. Pure.

A region is a connected part of the heatmap at or above `fraction` x its peak (the model
card's `region_threshold`), 8-connected, outlined by the convex hull of its cells: a simple
polygon (no self-intersection, few vertices) that contains every cell of the region, the
peak's cell included. The hottest `MAX_REGIONS` regions are kept, hottest first.

Coordinates are fractions of the image's width and height, with (0, 0) the top-left corner of
the top-left pixel and (1, 1) the bottom-right corner of the bottom-right pixel. The heatmap
has the display image's extent and orientation (`geometry.heatmap_to_image` crops the
letterbox bars off; `to_grayscale` neither crops, flips nor rotates, and a JPEG 2000 image
decoded at a reduced resolution still covers the whole image), so the fractions hold for the
source at any resolution: `in_pixels` multiplies them by the source's Columns and Rows, which
is DICOM's image-relative convention (PS3.3 C.10.5.1.2 and C.18.6.1.2: the top-left corner of
the top-left pixel is 0\\0, the bottom-right corner of the bottom-right pixel Columns\\Rows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

#: At most this many regions per image (the hottest first).
MAX_REGIONS = 3
#: The default `region_threshold`: half the peak. Zhou et al. (CAM, 2016) boxed the regions
#: above 20 % of the peak for object localisation; a fracture is small, so half the peak keeps
#: the outline close to where the evidence is.
DEFAULT_REGION_THRESHOLD = 0.5

Point = tuple[float, float]


@dataclass(frozen=True)
class Region:
    """A suspected region as fractions of the image (x = column, y = row)."""

    #: Convex polygon, counter-clockwise in image coordinates, first vertex not repeated.
    outline: tuple[Point, ...]
    #: Centre of the hottest heatmap cell of the region.
    peak: Point

    def __post_init__(self) -> None:
        points = (*self.outline, self.peak)
        if len(self.outline) < 3 or not all(0.0 <= v <= 1.0 for p in points for v in p):
            raise ValueError("a region needs at least 3 outline points inside [0, 1]")

    def in_pixels(self, *, rows: int, columns: int) -> np.ndarray:
        """The outline in the image's pixel coordinates, (column, row) pairs, closed (the
        first point repeated at the end, as a DICOM POLYLINE outlining an area must be)."""
        if rows < 1 or columns < 1:
            raise ValueError("rows and columns must be positive")
        scale = np.array([columns, rows], dtype=np.float64)
        points = np.array([*self.outline, self.outline[0]], dtype=np.float64) * scale
        return np.clip(points, 0.0, scale)

    def box_in_pixels(self, *, rows: int, columns: int) -> np.ndarray:
        """The outline's bounding box in pixel coordinates, as a closed rectangle (5 points,
        clockwise on screen from the top-left corner)."""
        outline = self.in_pixels(rows=rows, columns=columns)
        (left, top), (right, bottom) = outline.min(axis=0), outline.max(axis=0)
        return np.array([[left, top], [right, top], [right, bottom], [left, bottom], [left, top]])

    def peak_in_pixels(self, *, rows: int, columns: int) -> tuple[float, float]:
        return (self.peak[0] * columns, self.peak[1] * rows)

    def to_json(self) -> dict[str, Any]:
        return {"outline": [list(p) for p in self.outline], "peak": list(self.peak)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Region:
        outline = tuple((float(x), float(y)) for x, y in data["outline"])
        x, y = data["peak"]
        return cls(outline=outline, peak=(float(x), float(y)))


def find_regions(
    heatmap: np.ndarray, *, fraction: float, max_regions: int = MAX_REGIONS
) -> tuple[Region, ...]:
    """The suspected regions of `heatmap` (2-D, non-negative; any scale), hottest first.

    None when the heatmap has no positive value (nothing is evidence) or is not finite."""
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError("heatmap must be a non-empty 2-D array")
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    values = np.asarray(heatmap, dtype=np.float64)
    if not np.isfinite(values).all():
        return ()
    peak = float(values.max())
    if peak <= 0.0:
        return ()
    labels, count = ndimage.label(values >= fraction * peak, structure=np.ones((3, 3)))
    index = np.arange(1, count + 1)
    hottest = ndimage.maximum_position(values, labels, index)
    maxima = ndimage.maximum(values, labels, index)
    order = sorted(range(count), key=lambda i: (-float(maxima[i]), hottest[i]))[:max_regions]
    height, width = values.shape
    regions = []
    for i in order:
        rows_of, columns_of = np.nonzero(labels == i + 1)
        hull = _convex_hull(_row_extremes(rows_of, columns_of))
        row, column = (int(v) for v in hottest[i])
        regions.append(
            Region(
                outline=tuple((x / width, y / height) for x, y in hull),
                peak=((column + 0.5) / width, (row + 0.5) / height),
            )
        )
    return tuple(regions)


def regions_to_json(regions: Sequence[Region]) -> list[dict[str, Any]]:
    return [region.to_json() for region in regions]


def regions_from_json(data: Sequence[Mapping[str, Any]]) -> tuple[Region, ...]:
    return tuple(Region.from_json(item) for item in data)


def _row_extremes(rows: np.ndarray, columns: np.ndarray) -> list[tuple[int, int]]:
    """The corners of the leftmost and rightmost cell of each row: the convex hull of these
    is the hull of every cell (x = column edge, y = row edge, integers)."""
    points: list[tuple[int, int]] = []
    for row in np.unique(rows):
        in_row = columns[rows == row]
        left, right = int(in_row.min()), int(in_row.max()) + 1
        r = int(row)
        points += [(left, r), (left, r + 1), (right, r), (right, r + 1)]
    return points


def _convex_hull(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Andrew's monotone chain on integer points (exact): the hull's vertices without
    collinear ones, counter-clockwise in a y-down image (clockwise as drawn on screen)."""
    unique = sorted(set(points))

    def turn(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[int, int]] = []
    upper: list[tuple[int, int]] = []
    for p in unique:
        while len(lower) >= 2 and turn(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(unique):
        while len(upper) >= 2 and turn(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]
