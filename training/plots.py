"""ROC, precision-recall and reliability plots drawn with PIL (no matplotlib dependency).

Every plot is a PLOT_SIZE RGB PNG with both axes on [0, 1], a grid, axis labels and a legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.metrics import ReliabilityBin

PLOT_SIZE = (640, 640)
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 78, 24, 48, 70
_BLUE, _ORANGE, _GREEN, _GREY = (31, 119, 180), (255, 127, 14), (44, 160, 44), (150, 150, 150)
_BLACK, _LIGHT = (0, 0, 0), (225, 225, 225)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class Marker:
    x: float
    y: float
    label: str
    color: tuple[int, int, int]


class _Axes:
    """A [0, 1] × [0, 1] plotting area inside a PLOT_SIZE canvas."""

    def __init__(self, *, title: str, xlabel: str, ylabel: str) -> None:
        self.image = Image.new("RGB", PLOT_SIZE, "white")
        self.draw = ImageDraw.Draw(self.image)
        width, height = PLOT_SIZE
        self.left, self.top = _MARGIN_LEFT, _MARGIN_TOP
        self.right, self.bottom = width - _MARGIN_RIGHT, height - _MARGIN_BOTTOM
        self.legend: list[tuple[str, tuple[int, int, int]]] = []
        font, small = _font(18), _font(13)
        for i in range(6):
            v = i / 5
            x, y = self.to_pixel(v, v)
            self.draw.line([(x, self.top), (x, self.bottom)], fill=_LIGHT)
            self.draw.line([(self.left, y), (self.right, y)], fill=_LIGHT)
            self.draw.text((x, self.bottom + 6), f"{v:.1f}", fill=_BLACK, font=small, anchor="mt")
            self.draw.text((self.left - 6, y), f"{v:.1f}", fill=_BLACK, font=small, anchor="rm")
        self.draw.rectangle([self.left, self.top, self.right, self.bottom], outline=_BLACK)
        self.draw.text((width / 2, 14), title, fill=_BLACK, font=font, anchor="mt")
        centre_x = (self.left + self.right) / 2
        self.draw.text((centre_x, height - 22), xlabel, fill=_BLACK, font=_font(15), anchor="mb")
        label = Image.new("RGB", (self.bottom - self.top, 22), "white")
        ImageDraw.Draw(label).text(
            (label.width / 2, 11), ylabel, fill=_BLACK, font=_font(15), anchor="mm"
        )
        self.image.paste(label.rotate(90, expand=True), (8, self.top))

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        return (
            self.left + x * (self.right - self.left),
            self.bottom - y * (self.bottom - self.top),
        )

    def line(
        self,
        xs: Sequence[float] | np.ndarray,
        ys: Sequence[float] | np.ndarray,
        *,
        color: tuple[int, int, int],
        label: str = "",
        width: int = 3,
    ) -> None:
        points = [self.to_pixel(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        if len(points) >= 2:
            self.draw.line(points, fill=color, width=width, joint="curve")
        if label:
            self.legend.append((label, color))

    def marker(self, marker: Marker) -> None:
        x, y = self.to_pixel(marker.x, marker.y)
        self.draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=marker.color, outline=_BLACK)
        self.legend.append((marker.label, marker.color))

    def finish(self, *, legend_at: str = "bottom-right") -> Image.Image:
        font = _font(13)
        rows = len(self.legend)
        if rows:
            box_w = 18 + max(int(self.draw.textlength(t, font=font)) for t, _ in self.legend) + 14
            box_h = rows * 20 + 10
            x0 = self.right - box_w - 8 if legend_at.endswith("right") else self.left + 8
            y0 = self.bottom - box_h - 8 if legend_at.startswith("bottom") else self.top + 8
            self.draw.rectangle([x0, y0, x0 + box_w, y0 + box_h], fill="white", outline=_GREY)
            for i, (text, color) in enumerate(self.legend):
                y = y0 + 8 + i * 20
                self.draw.rectangle([x0 + 6, y + 2, x0 + 18, y + 12], fill=color)
                self.draw.text((x0 + 24, y), text, fill=_BLACK, font=font)
        return self.image


def roc_plot(
    fpr: np.ndarray,
    tpr: np.ndarray,
    *,
    auc: float,
    ci: tuple[float, float],
    markers: Sequence[Marker],
) -> Image.Image:
    axes = _Axes(title="ROC curve", xlabel="1 - specificity", ylabel="sensitivity")
    axes.line([0, 1], [0, 1], color=_GREY, width=1)
    axes.line(fpr, tpr, color=_BLUE, label=f"AUC {auc:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})")
    for marker in markers:
        axes.marker(marker)
    return axes.finish()


def pr_plot(
    precision: np.ndarray,
    recall: np.ndarray,
    *,
    average_precision: float,
    prevalence: float,
    markers: Sequence[Marker],
) -> Image.Image:
    axes = _Axes(title="Precision-recall curve", xlabel="recall (sensitivity)", ylabel="precision")
    axes.line([0, 1], [prevalence, prevalence], color=_GREY, width=1, label="prevalence")
    # Step-wise curve starting at recall 0 with the first precision.
    xs = np.repeat(np.r_[0.0, recall], 2)[1:-1]
    ys = np.repeat(precision, 2)
    axes.line(xs, ys, color=_BLUE, label=f"average precision {average_precision:.3f}")
    for marker in markers:
        axes.marker(marker)
    return axes.finish(legend_at="bottom-left")


def reliability_plot(bins: Sequence[ReliabilityBin], *, ece: float) -> Image.Image:
    """Observed fraction of fractures per probability bin against the diagonal."""
    axes = _Axes(
        title="Reliability (calibration)",
        xlabel="predicted P(fracture)",
        ylabel="observed fraction",
    )
    largest = max([1, *(b.count for b in bins)])
    for b in bins:
        if not b.count:
            continue
        x0, y0 = axes.to_pixel(b.low, b.fraction_positive)
        x1, y1 = axes.to_pixel(b.high, 0.0)
        axes.draw.rectangle([x0 + 1, y0, x1 - 1, y1], fill=(174, 199, 232), outline=_BLUE)
        # Number of cases in the bin, relative to the fullest bin (which reaches 0.2).
        _, yh = axes.to_pixel(0.0, 0.2 * b.count / largest)
        axes.draw.rectangle([x0 + 3, yh, x1 - 3, y1], fill=_ORANGE)
    axes.legend.append((f"observed (ECE {ece:.3f})", (174, 199, 232)))
    axes.legend.append(("cases per bin (relative)", _ORANGE))
    axes.line([0, 1], [0, 1], color=_GREY, width=2, label="perfect calibration")
    populated = [b for b in bins if b.count]
    axes.line(
        [b.mean_probability for b in populated],
        [b.fraction_positive for b in populated],
        color=_GREEN,
        width=2,
    )
    return axes.finish(legend_at="top-left")


def save_png(image: Image.Image, path: Path) -> Path:
    image.save(path, format="PNG", optimize=True)
    return path
