"""Binary classification metrics in plain numpy (no scikit-learn in the node's dependencies).

`y` holds true labels (1 = fracture, 0 = normal), `p` the predicted P(fracture). A case counts
as positive at threshold t when p >= t, the rule the node uses for its operating points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


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


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts + 1
    return (first + (counts - 1) / 2.0)[inverse]


def roc_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve (Mann–Whitney U; a tie counts one half)."""
    y_arr, p_arr = _check(y, p)
    n_pos = int(y_arr.sum())
    n_neg = y_arr.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    ranks = average_ranks(p_arr)
    return float((ranks[y_arr == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_auc_ci(
    y: ArrayLike,
    p: ArrayLike,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUC.

    Stratified: positives and negatives are resampled separately, so every resample keeps the
    class counts of the data (and has an AUC).
    """
    y_arr, p_arr = _check(y, p)
    pos, neg = p_arr[y_arr == 1], p_arr[y_arr == 0]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUC needs both classes")
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    aucs = np.empty(n_resamples)
    for i in range(n_resamples):
        scores = np.concatenate(
            [pos[rng.integers(0, pos.size, pos.size)], neg[rng.integers(0, neg.size, neg.size)]]
        )
        aucs[i] = roc_auc(labels, scores)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(aucs, [alpha, 1.0 - alpha])
    return float(low), float(high)


def roc_curve(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) to (1, 1).

    The first threshold is +inf (nothing positive); point i is "positive when p >= thresholds[i]".
    """
    y_arr, p_arr = _check(y, p)
    n_pos, n_neg = int(y_arr.sum()), int(y_arr.size - y_arr.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs both classes")
    order = np.argsort(-p_arr, kind="stable")
    scores, labels = p_arr[order], y_arr[order]
    last_of_tie = np.r_[np.diff(scores) != 0, True]
    tp = np.cumsum(labels)[last_of_tie]
    fp = np.cumsum(1 - labels)[last_of_tie]
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    return fpr, tpr, np.r_[np.inf, scores[last_of_tie]]


def pr_curve(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds), one point per distinct score, by decreasing threshold."""
    y_arr, p_arr = _check(y, p)
    n_pos = int(y_arr.sum())
    if n_pos == 0:
        raise ValueError("a precision-recall curve needs positives")
    order = np.argsort(-p_arr, kind="stable")
    scores, labels = p_arr[order], y_arr[order]
    last_of_tie = np.r_[np.diff(scores) != 0, True]
    tp = np.cumsum(labels)[last_of_tie].astype(np.float64)
    predicted = (np.arange(1, labels.size + 1))[last_of_tie]
    return tp / predicted, tp / n_pos, scores[last_of_tie]


def average_precision(y: ArrayLike, p: ArrayLike) -> float:
    """Σ (R_k − R_{k−1}) · P_k over decreasing thresholds (the step-wise PR-curve area)."""
    precision, recall, _ = pr_curve(y, p)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


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
    predicted = p_arr >= threshold
    return Confusion(
        tp=int(np.sum(predicted & (y_arr == 1))),
        fp=int(np.sum(predicted & (y_arr == 0))),
        tn=int(np.sum(~predicted & (y_arr == 0))),
        fn=int(np.sum(~predicted & (y_arr == 1))),
    )


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
    """Equal-width bins over [0, 1]: p falls in bin floor(p · n_bins); the last includes 1.0."""
    y_arr, p_arr = _check(y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.floor(p_arr * n_bins).astype(np.int64), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        bins.append(
            ReliabilityBin(
                low=float(edges[b]),
                high=float(edges[b + 1]),
                count=count,
                mean_probability=float(p_arr[members].mean()) if count else math.nan,
                fraction_positive=float(y_arr[members].mean()) if count else math.nan,
            )
        )
    return bins


def expected_calibration_error(y: ArrayLike, p: ArrayLike, *, n_bins: int = 10) -> float:
    """ECE of P(fracture): Σ_b (n_b / N) · |fraction of fractures in b − mean p in b|."""
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
    return float(np.mean((p_arr - y_arr) ** 2))
