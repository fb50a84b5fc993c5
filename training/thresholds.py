"""Operating points and temperature scaling, both fitted on validation data.

The node reports three outcomes: negative below `threshold_low` (the high-sensitivity point),
positive at or above `threshold_high` (the high-specificity point), doubt in between. With
"positive when p >= t", both are chosen among the candidate thresholds halfway between
consecutive distinct validation probabilities (0 and 1 included as outer neighbours):

* low  = the largest candidate whose sensitivity is still >= target (default 0.95);
* high = the smallest candidate whose specificity is >= target (default 0.95).

Midpoints classify every validation image exactly as a threshold at the deciding score would,
but leave a margin: the node's probability for an image can differ from the training loop's by
~1e-6 (batching, memory format), which must not flip the deciding validation case.

A good model can satisfy both targets with one threshold: then low > high. Both are then set to
their midpoint, which still meets both targets on the validation data (a lower cut only raises
sensitivity, a higher one only raises specificity) and leaves no doubt band.

Temperature scaling divides the logits by one scalar T fitted by minimising the validation
negative log-likelihood. It changes the probabilities, not their order (so not the AUC); the
thresholds are chosen on the calibrated probabilities, which are what the node reports.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from training.metrics import confusion

#: Search range of the temperature; a separable validation set drives T towards the bound.
TEMPERATURE_RANGE = (0.05, 20.0)


def _scores(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y).astype(np.int64).ravel()
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    if y_arr.shape != p_arr.shape or y_arr.sum() == 0 or y_arr.sum() == y_arr.size:
        raise ValueError("thresholds need labels of both classes, one per probability")
    return y_arr, p_arr


def _needed(target: float, count: int) -> int:
    """Smallest k with k / count >= target (guarding against float round-off)."""
    if not 0.0 < target <= 1.0:
        raise ValueError("target must be in (0, 1]")
    return max(1, math.ceil(target * count - 1e-9))


def high_sensitivity_threshold(y: ArrayLike, p: ArrayLike, *, target: float = 0.95) -> float:
    """Largest candidate t with sensitivity(p >= t) >= target.

    The k-th highest fracture probability s must stay at or above t, so t is the midpoint
    between s and the next lower distinct probability (or 0).
    """
    y_arr, p_arr = _scores(y, p)
    positives = np.sort(p_arr[y_arr == 1])[::-1]
    kth = positives[_needed(target, positives.size) - 1]
    below = p_arr[p_arr < kth]
    return float((kth + (below.max() if below.size else 0.0)) / 2.0)


def high_specificity_threshold(y: ArrayLike, p: ArrayLike, *, target: float = 0.95) -> float:
    """Smallest candidate t with specificity(p >= t) >= target.

    The m-th lowest normal probability s must fall below t, so t is the midpoint between s
    and the next higher distinct probability (or 1).
    """
    y_arr, p_arr = _scores(y, p)
    negatives = np.sort(p_arr[y_arr == 0])
    mth = negatives[_needed(target, negatives.size) - 1]
    above = p_arr[p_arr > mth]
    return float((mth + (above.min() if above.size else 1.0)) / 2.0)


@dataclass(frozen=True)
class OperatingPoints:
    low: float
    high: float
    target_sensitivity: float
    target_specificity: float
    #: True when the high-sensitivity point lay above the high-specificity one (see module doc).
    merged: bool
    sensitivity_at_low: float
    specificity_at_low: float
    sensitivity_at_high: float
    specificity_at_high: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def choose_thresholds(
    y: ArrayLike,
    p: ArrayLike,
    *,
    target_sensitivity: float = 0.95,
    target_specificity: float = 0.95,
) -> OperatingPoints:
    """Both operating points on validation data, with low <= high guaranteed."""
    low = high_sensitivity_threshold(y, p, target=target_sensitivity)
    high = high_specificity_threshold(y, p, target=target_specificity)
    merged = low > high
    if merged:
        low = high = (low + high) / 2.0
    at_low, at_high = confusion(y, p, low), confusion(y, p, high)
    return OperatingPoints(
        low=low,
        high=high,
        target_sensitivity=target_sensitivity,
        target_specificity=target_specificity,
        merged=merged,
        sensitivity_at_low=at_low.sensitivity,
        specificity_at_low=at_low.specificity,
        sensitivity_at_high=at_high.sensitivity,
        specificity_at_high=at_high.specificity,
    )


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def negative_log_likelihood(logits: ArrayLike, targets: ArrayLike, temperature: float) -> float:
    """Mean NLL of softmax(logits / T); `targets` are class indices."""
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(targets).astype(np.int64)
    return float(-_log_softmax(z / temperature)[np.arange(t.size), t].mean())


def fit_temperature(logits: ArrayLike, targets: ArrayLike, *, iterations: int = 80) -> float:
    """T minimising the NLL of softmax(logits / T), by golden-section search on 1/T.

    The NLL is convex in 1/T, so the search finds the minimum within TEMPERATURE_RANGE.
    """
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(targets).astype(np.int64)
    if z.ndim != 2 or z.shape[0] != t.size or z.shape[0] == 0:
        raise ValueError("logits must be (N, classes) with one target per row")
    lo, hi = 1.0 / TEMPERATURE_RANGE[1], 1.0 / TEMPERATURE_RANGE[0]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0

    def nll(beta: float) -> float:
        return negative_log_likelihood(z, t, 1.0 / beta)

    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    beta = (a + b) / 2.0
    return float(1.0 / beta)


def calibrated_probability(
    logits: ArrayLike, *, temperature: float = 1.0, class_index: int = 1
) -> np.ndarray:
    """softmax(logits / T)[:, class_index] — P(fracture) as the node computes it."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(_log_softmax(z / temperature)[:, class_index])
