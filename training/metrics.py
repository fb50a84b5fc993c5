"""Binary classification metrics: scikit-learn's, behind the names the training tools use.

`y` holds true labels (1 = fracture, 0 = normal), `p` the predicted P(fracture). A case counts
as positive at threshold t when p >= t, the rule the node uses for its operating points.

scikit-learn computes the AUC, the ROC and precision-recall curves, average precision, the
confusion matrix, the reliability (calibration) curve and the Brier score; the AUC's confidence
interval is a stratified percentile bootstrap by `scipy.stats.bootstrap`. Written here only
what neither has: the expected calibration error and per-bin case counts. These modules are in
the `training` extra (`pip install -e ".[training]"`); the node never imports them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

try:
    from scipy import stats
    from sklearn import calibration
    from sklearn import metrics as skm
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"training needs the 'training' extra ({exc.name} is missing): pip install -e '.[training]'"
    ) from exc


def _check(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y).astype(np.int64).ravel()
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    if y_arr.shape != p_arr.shape:
        raise ValueError("labels and probabilities differ in length")
    if not np.isin(y_arr, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p_arr).all():
        raise ValueError("scores must be finite")
    return y_arr, p_arr


def _both_classes(y: np.ndarray, what: str) -> None:
    # scikit-learn only warns (and returns nan) here; a training run must not carry on silently.
    if y.size == 0 or y.min() == y.max():
        raise ValueError(f"{what} needs both classes")


def roc_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve (a tie counts one half)."""
    y_arr, p_arr = _check(y, p)
    _both_classes(y_arr, "AUC")
    return float(skm.roc_auc_score(y_arr, p_arr))


def _auc_of_groups(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUC = Mann–Whitney U of the positives / (n_pos · n_neg), vectorised along `axis`."""
    u = stats.mannwhitneyu(pos, neg, axis=axis, method="asymptotic").statistic
    return np.asarray(u / (pos.shape[axis] * neg.shape[axis]))


def _auc_against_one(
    x: np.ndarray, axis: int = -1, *, single: np.ndarray, single_is_positive: bool
) -> np.ndarray:
    fixed = np.broadcast_to(single, (*x.shape[:-1], 1))
    return _auc_of_groups(*((fixed, x) if single_is_positive else (x, fixed)), axis=axis)


def bootstrap_auc_ci(
    y: ArrayLike,
    p: ArrayLike,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Seeded percentile bootstrap CI of the AUC (scikit-learn has none).

    Stratified: `scipy.stats.bootstrap` resamples the positives and the negatives separately
    (two unpaired samples), so every resample keeps the class counts and has an AUC.
    """
    y_arr, p_arr = _check(y, p)
    _both_classes(y_arr, "AUC")
    pos, neg = p_arr[y_arr == 1], p_arr[y_arr == 0]
    if pos.size == 1 and neg.size == 1:
        auc = float(_auc_of_groups(pos, neg))
        return auc, auc
    data: tuple[np.ndarray, ...] = (pos, neg)
    statistic: Callable[..., np.ndarray] = _auc_of_groups
    if min(pos.size, neg.size) == 1:
        # scipy resamples samples of two or more; a class of one is the same in every resample.
        data = (neg,) if pos.size == 1 else (pos,)
        statistic = functools.partial(
            _auc_against_one, single=pos if pos.size == 1 else neg, single_is_positive=pos.size == 1
        )
    result = stats.bootstrap(
        data,
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        paired=False,
        batch=max(1, min(n_resamples, 2_000_000 // max(1, y_arr.size))),
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def roc_curve(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) to (1, 1).

    The first threshold is +inf (nothing positive); point i is "positive when p >= thresholds[i]".
    """
    y_arr, p_arr = _check(y, p)
    _both_classes(y_arr, "a ROC curve")
    fpr, tpr, thresholds = skm.roc_curve(y_arr, p_arr, drop_intermediate=False)
    return fpr, tpr, thresholds


def pr_curve(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds), one point per distinct score, by decreasing threshold.

    scikit-learn's curve in the other order, without its closing (recall 0, precision 1) point.
    """
    y_arr, p_arr = _check(y, p)
    if not y_arr.sum():
        raise ValueError("a precision-recall curve needs positives")
    precision, recall, thresholds = skm.precision_recall_curve(
        y_arr, p_arr, drop_intermediate=False
    )
    return precision[-2::-1], recall[-2::-1], thresholds[::-1]


def average_precision(y: ArrayLike, p: ArrayLike) -> float:
    """Σ (R_k − R_{k−1}) · P_k over decreasing thresholds (the step-wise PR-curve area)."""
    y_arr, p_arr = _check(y, p)
    if not y_arr.sum():
        raise ValueError("average precision needs positives")
    return float(skm.average_precision_score(y_arr, p_arr))


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float:
        return _ratio(self.tn, self.tn + self.fn)

    def to_json(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def confusion(y: ArrayLike, p: ArrayLike, threshold: float) -> Confusion:
    y_arr, p_arr = _check(y, p)
    tn, fp, fn, tp = skm.confusion_matrix(y_arr, p_arr >= threshold, labels=[0, 1]).ravel()
    return Confusion(tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn))


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    #: Mean predicted P(fracture) in the bin (nan when empty).
    mean_probability: float
    #: Observed fraction of fractures in the bin (nan when empty).
    fraction_positive: float


def reliability_bins(y: ArrayLike, p: ArrayLike, *, n_bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1], as `sklearn.calibration.calibration_curve` makes them.

    A bin holds low < p <= high (the first also p = 0). scikit-learn gives the mean probability
    and observed fraction of the non-empty bins; the count per bin is added here.
    """
    y_arr, p_arr = _check(y, p)
    if p_arr.size and (p_arr.min() < 0 or p_arr.max() > 1):
        raise ValueError("probabilities must be in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p_arr), minlength=n_bins)
    observed, predicted = (
        calibration.calibration_curve(y_arr, p_arr, n_bins=n_bins, strategy="uniform")
        if y_arr.size
        else (np.empty(0), np.empty(0))
    )
    filled = iter(zip(predicted.tolist(), observed.tolist(), strict=True))
    bins = []
    for b in range(n_bins):
        mean_p, fraction = next(filled) if counts[b] else (math.nan, math.nan)
        bins.append(
            ReliabilityBin(
                low=float(edges[b]),
                high=float(edges[b + 1]),
                count=int(counts[b]),
                mean_probability=float(mean_p),
                fraction_positive=float(fraction),
            )
        )
    return bins


def expected_calibration_error(y: ArrayLike, p: ArrayLike, *, n_bins: int = 10) -> float:
    """ECE of P(fracture): Σ_b (n_b / N) · |fraction of fractures in b − mean p in b|.

    Not in scikit-learn; built on its calibration curve (`reliability_bins`).
    """
    y_arr, _ = _check(y, p)
    total = y_arr.size
    return float(
        sum(
            b.count / total * abs(b.fraction_positive - b.mean_probability)
            for b in reliability_bins(y, p, n_bins=n_bins)
            if b.count
        )
    )


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    y_arr, p_arr = _check(y, p)
    return float(skm.brier_score_loss(y_arr, p_arr, pos_label=1))
