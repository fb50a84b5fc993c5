"""Metric functions: by hand on small cases, and against scikit-learn on random ones.

The property tests (hypothesis) pin the conventions the training tools rely on (curve order,
threshold rule p >= t, bins low < p <= high) to scikit-learn's own functions, so a change of
either side shows up here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import calibration
from sklearn import metrics as skm

from training.metrics import (
    average_precision,
    bootstrap_auc_ci,
    brier_score,
    confusion,
    expected_calibration_error,
    pr_curve,
    reliability_bins,
    roc_auc,
    roc_curve,
)

# Sorted by score: 0.8 (fracture), 0.4 (normal), 0.35 (fracture), 0.1 (normal).
Y = [0, 0, 1, 1]
P = [0.1, 0.4, 0.35, 0.8]

# Scores on a coarse grid, so that ties (the hard case for curves and bins) are common.
_scores = st.integers(min_value=0, max_value=20).map(lambda i: i / 20)
_cases = st.lists(st.tuples(st.integers(0, 1), _scores), min_size=2, max_size=60).filter(
    lambda rows: len({label for label, _ in rows}) == 2
)


def _arrays(rows: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def test_auc_of_known_cases() -> None:
    # Pairs (fracture, normal): (0.35, 0.1) ok, (0.35, 0.4) wrong, (0.8, *) ok → 3 of 4.
    assert roc_auc(Y, P) == pytest.approx(0.75)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    # A tie counts one half: (0.5, 0.2) 1, (0.5, 0.5) 0.5, (0.9, 0.2) 1, (0.9, 0.5) 1.
    assert roc_auc([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5


def test_auc_needs_both_classes_and_valid_labels() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match="both classes"):
        bootstrap_auc_ci([0, 0], [0.2, 0.3])


def test_roc_curve_points() -> None:
    fpr, tpr, thresholds = roc_curve(Y, P)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thresholds[0] == math.inf and thresholds[1:].tolist() == [0.8, 0.4, 0.35, 0.1]
    # The trapezoidal area under the points is the rank AUC.
    assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) == pytest.approx(0.75)


def test_precision_recall_and_average_precision() -> None:
    precision, recall, thresholds = pr_curve(Y, P)
    assert precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    assert recall.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert thresholds.tolist() == [0.8, 0.4, 0.35, 0.1]
    # 0.5 · 1 + 0 · 0.5 + 0.5 · 2/3 + 0 · 0.5
    assert average_precision(Y, P) == pytest.approx(0.5 + 1 / 3)


def test_confusion_at_threshold() -> None:
    c = confusion(Y, P, 0.35)  # positive when p >= 0.35: 0.4, 0.35, 0.8
    assert (c.tp, c.fp, c.tn, c.fn) == (2, 1, 1, 0)
    assert (c.sensitivity, c.specificity, c.ppv, c.npv) == (1.0, 0.5, pytest.approx(2 / 3), 1.0)
    assert math.isnan(confusion([0, 0], [0.1, 0.2], 0.5).sensitivity)  # no fractures at all


def test_expected_calibration_error_by_hand() -> None:
    y = [0, 1, 1, 1]
    p = [0.2, 0.2, 0.9, 0.9]
    # Bin (0.1, 0.2]: mean p 0.2, 50 % fractures → 0.3 · 2/4; bin (0.8, 0.9]: 0.1 · 2/4.
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.2)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    bins = reliability_bins(y, [0.2, 0.2, 0.9, 1.0], n_bins=10)
    # scikit-learn's bins: low < p <= high (0.0 in the first, 1.0 in the last).
    assert [b.count for b in bins] == [0, 2, 0, 0, 0, 0, 0, 0, 1, 1]
    assert bins[9].mean_probability == pytest.approx(1.0)
    assert math.isnan(bins[0].mean_probability)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_bins([0, 1], [0.5, 1.5])


def test_brier_score() -> None:
    assert brier_score([0, 1], [0.2, 0.6]) == pytest.approx((0.04 + 0.16) / 2)


def test_bootstrap_ci_contains_the_point_estimate() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(60), np.ones(40)].astype(int)
    p = np.clip(0.35 * y + rng.normal(0.3, 0.2, y.size), 0, 1)
    auc = roc_auc(y, p)
    low, high = bootstrap_auc_ci(y, p, n_resamples=500, seed=1)
    assert 0.0 <= low < auc < high <= 1.0
    assert high - low < 0.3
    assert bootstrap_auc_ci(y, p, n_resamples=500, seed=1) == (low, high)  # seeded
    assert bootstrap_auc_ci(y, p, n_resamples=500, seed=2) != (low, high)
    # Perfect separation survives every stratified resample.
    assert bootstrap_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_resamples=50) == (1.0, 1.0)


def test_bootstrap_resamples_each_class_separately() -> None:
    """A stratified resample keeps both classes: even one positive among many negatives
    gives an interval (an unstratified bootstrap would draw resamples without a positive)."""
    y = np.r_[np.zeros(30), np.ones(1)].astype(int)
    p = np.r_[np.linspace(0.0, 0.6, 30), 0.5]
    low, high = bootstrap_auc_ci(y, p, n_resamples=300, seed=0)
    assert 0.0 <= low <= roc_auc(y, p) <= high <= 1.0


@settings(max_examples=60, deadline=None)
@given(_cases)
def test_curves_and_scores_agree_with_scikit_learn(rows: list[tuple[int, float]]) -> None:
    y, p = _arrays(rows)
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))
    assert average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p))
    assert brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, p))
    fpr, tpr, thresholds = roc_curve(y, p)
    # One point per distinct score plus the (0, 0) start; the area is the AUC.
    assert len(fpr) == len(np.unique(p)) + 1 and (fpr[0], tpr[-1]) == (0.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, p))
    precision, recall, pr_thresholds = pr_curve(y, p)
    assert np.all(np.diff(pr_thresholds) < 0) and recall[-1] == 1.0
    # Each curve point is the confusion at its threshold, with the node's rule p >= t.
    for i, t in enumerate(thresholds[1:], 1):
        c = confusion(y, p, t)
        assert (c.sensitivity, 1 - c.specificity) == pytest.approx((tpr[i], fpr[i]))
    for prec, rec, t in zip(precision, recall, pr_thresholds, strict=True):
        c = confusion(y, p, t)
        assert (c.ppv, c.sensitivity) == pytest.approx((prec, rec))


@settings(max_examples=60, deadline=None)
@given(_cases, st.integers(min_value=2, max_value=12))
def test_reliability_bins_are_scikit_learns_calibration_curve(
    rows: list[tuple[int, float]], n_bins: int
) -> None:
    y, p = _arrays(rows)
    bins = reliability_bins(y, p, n_bins=n_bins)
    observed, predicted = calibration.calibration_curve(y, p, n_bins=n_bins)
    filled = [b for b in bins if b.count]
    assert sum(b.count for b in bins) == y.size
    assert [b.fraction_positive for b in filled] == pytest.approx(observed.tolist())
    assert [b.mean_probability for b in filled] == pytest.approx(predicted.tolist())
    for b in filled:  # every case in its bin: low < p <= high (p = 0 in the first)
        members = ((p > b.low) | (b.low == 0.0)) & (p <= b.high)
        assert int(members.sum()) == b.count
    # ECE, written by hand, from its definition on the raw data.
    ece = sum(
        np.sum(m) / y.size * abs(y[m].mean() - p[m].mean())
        for m in (
            np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], p) == i for i in range(n_bins)
        )
        if np.any(m)
    )
    assert expected_calibration_error(y, p, n_bins=n_bins) == pytest.approx(ece)
