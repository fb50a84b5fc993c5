"""Confidence intervals of proportions: sensitivity, specificity, pointing-game hit rate.

Each of these is k successes out of n independent cases, so its interval is a binomial one.
We use the Wilson score interval (scipy's `binomtest(...).proportion_ci`) rather than a
percentile bootstrap: the bootstrap of a proportion collapses to a single point at 0 % or
100 % (20 of 20 fractures found gives [1.0, 1.0]), which is exactly where sensitivity at a
95 % target sits on a small validation set, while Wilson still says [0.84, 1.0]. Elsewhere it
agrees with the bootstrap to within resampling noise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import binomtest

from training.metrics import confusion

CI_METHOD = "Wilson score interval"


def proportion_ci(successes: int, total: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval of successes / total; (nan, nan) when there are no cases."""
    if total == 0:
        return math.nan, math.nan
    ci = binomtest(int(successes), int(total)).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return float(ci.low), float(ci.high)


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def operating_point_with_ci(y: ArrayLike, p: ArrayLike, threshold: float) -> dict[str, Any]:
    """Sensitivity and specificity at `threshold` ("positive when p >= t"), each with its 95 %
    interval and the counts it comes from, JSON-ready."""
    c = confusion(np.asarray(y), np.asarray(p), threshold)
    sensitivity = c.tp / (c.tp + c.fn) if c.tp + c.fn else math.nan
    specificity = c.tn / (c.tn + c.fp) if c.tn + c.fp else math.nan
    return {
        "threshold": threshold,
        "sensitivity": _rounded(sensitivity),
        "sensitivity_ci95": [_rounded(v) for v in proportion_ci(c.tp, c.tp + c.fn)],
        "specificity": _rounded(specificity),
        "specificity_ci95": [_rounded(v) for v in proportion_ci(c.tn, c.tn + c.fp)],
        "fracture": c.tp + c.fn,
        "normal": c.tn + c.fp,
        "ci_method": CI_METHOD,
    }
