"""ROC, precision-recall, reliability, threshold and learning-curve plots, drawn by matplotlib.

Figures are made with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global backend state), rendered to a PLOT_SIZE RGB image and saved as PNG. The file names the
tools write (`roc.png`, `pr.png`, `reliability.png`, `thresholds.png`, `curves.png`) are stable:
the node's About page embeds them from the exported package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

try:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("training needs the 'training' extra: pip install -e '.[training]'") from exc

from training.metrics import ReliabilityBin

PLOT_SIZE = (640, 640)
CURVES_SIZE = (1120, 480)
_DPI = 100
_BLUE, _ORANGE, _GREEN, _GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#969696"


@dataclass(frozen=True)
class Marker:
    """An operating point on a curve; `color` is RGB 0-255."""

    x: float
    y: float
    label: str
    color: tuple[int, int, int]

    @property
    def mpl_color(self) -> tuple[float, float, float]:
        r, g, b = self.color
        return (r / 255, g / 255, b / 255)


def _figure(size: tuple[int, int] = PLOT_SIZE, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def _unit_axes(ax: Axes, *, title: str, xlabel: str, ylabel: str) -> None:
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_aspect("equal")
    ax.grid(True, color="#e1e1e1")


def _markers(ax: Axes, markers: Sequence[Marker]) -> None:
    for m in markers:
        ax.plot([m.x], [m.y], "o", ms=9, color=m.mpl_color, markeredgecolor="black", label=m.label)


def render(figure: Figure) -> Image.Image:
    """The figure as an RGB image of exactly its pixel size (no tight-bbox cropping)."""
    canvas = figure.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def roc_plot(
    fpr: np.ndarray,
    tpr: np.ndarray,
    *,
    auc: float,
    ci: tuple[float, float],
    markers: Sequence[Marker],
) -> Image.Image:
    figure, (ax,) = _figure()
    _unit_axes(ax, title="ROC curve", xlabel="1 - specificity", ylabel="sensitivity")
    ax.plot([0, 1], [0, 1], color=_GREY, lw=1, ls="--", label="chance")
    ax.plot(fpr, tpr, color=_BLUE, lw=2, label=f"AUC {auc:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})")
    _markers(ax, markers)
    ax.legend(loc="lower right")
    return render(figure)


def pr_plot(
    precision: np.ndarray,
    recall: np.ndarray,
    *,
    average_precision: float,
    prevalence: float,
    markers: Sequence[Marker],
) -> Image.Image:
    """Step-wise curve by decreasing threshold, starting at recall 0 with the first precision."""
    figure, (ax,) = _figure()
    _unit_axes(
        ax, title="Precision-recall curve", xlabel="recall (sensitivity)", ylabel="precision"
    )
    ax.axhline(prevalence, color=_GREY, lw=1, ls="--", label=f"prevalence {prevalence:.3f}")
    ax.step(
        np.r_[0.0, recall],
        np.r_[precision[:1], precision],
        where="pre",
        color=_BLUE,
        lw=2,
        label=f"average precision {average_precision:.3f}",
    )
    _markers(ax, markers)
    ax.legend(loc="lower left")
    return render(figure)


def reliability_plot(bins: Sequence[ReliabilityBin], *, ece: float) -> Image.Image:
    """Observed fraction of fractures per probability bin against the diagonal, with counts."""
    figure, (ax,) = _figure()
    _unit_axes(
        ax, title="Reliability (calibration)", xlabel="predicted P(fracture)", ylabel="observed"
    )
    filled = [b for b in bins if b.count]
    lows = [b.low for b in filled]
    widths = [b.high - b.low for b in filled]
    ax.bar(
        lows,
        [b.fraction_positive for b in filled],
        width=widths,
        align="edge",
        color="#aec7e8",
        edgecolor=_BLUE,
        label=f"observed fraction (ECE {ece:.3f})",
    )
    largest = max([1, *(b.count for b in filled)])
    ax.bar(
        lows,
        [0.2 * b.count / largest for b in filled],
        width=[0.6 * w for w in widths],
        align="edge",
        color=_ORANGE,
        label="cases per bin (relative)",
    )
    ax.plot([0, 1], [0, 1], color=_GREY, lw=1.5, ls="--", label="perfect calibration")
    ax.plot(
        [b.mean_probability for b in filled],
        [b.fraction_positive for b in filled],
        "o-",
        color=_GREEN,
        lw=1.5,
    )
    ax.legend(loc="upper left")
    return render(figure)


def threshold_plot(
    thresholds: np.ndarray,
    sensitivity: np.ndarray,
    specificity: np.ndarray,
    *,
    operating_points: Mapping[str, float],
) -> Image.Image:
    """Sensitivity and specificity against the threshold (positive when p >= t), with the
    operating points as vertical lines: what moving a threshold costs on either side."""
    figure, (ax,) = _figure()
    _unit_axes(ax, title="Sensitivity and specificity by threshold", xlabel="threshold", ylabel="")
    finite = np.isfinite(thresholds)
    ax.step(thresholds[finite], sensitivity[finite], where="post", color=_BLUE, label="sensitivity")
    ax.step(
        thresholds[finite], specificity[finite], where="post", color=_ORANGE, label="specificity"
    )
    for (name, value), color in zip(
        operating_points.items(), ("#d62728", "#9467bd", _GREEN), strict=False
    ):
        ax.axvline(value, color=color, lw=1.5, ls=":", label=f"{name} {value:.3f}")
    ax.legend(loc="center right")
    return render(figure)


def curves_plot(history: Sequence[Mapping[str, Any]], *, best_epoch: int) -> Image.Image:
    """Per-epoch training/validation loss and validation AUC, the best epoch marked."""
    figure, (loss_ax, auc_ax) = _figure(CURVES_SIZE, ncols=2)
    epochs = [int(r["epoch"]) for r in history]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", color=_BLUE, label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], "o-", color=_ORANGE, label="validation")
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    auc_ax.plot(epochs, [r["val_auc"] for r in history], "o-", color=_GREEN, label="validation")
    auc_ax.set(title="Validation AUC", xlabel="epoch", ylabel="AUC", ylim=(0, 1.01))
    for ax in (loss_ax, auc_ax):
        if best_epoch:
            ax.axvline(best_epoch, color=_GREY, ls="--", label=f"best epoch {best_epoch}")
        ax.grid(True, color="#e1e1e1")
        ax.legend(loc="best")
    return render(figure)


def save_png(image: Image.Image, path: Path) -> Path:
    image.save(path, format="PNG", optimize=True)
    return path
