"""Metric functions against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


def test_roc_curve_points() -> None:
    fpr, tpr, thresholds = roc_curve(Y, P)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thresholds[0] == math.inf and thresholds[1:].tolist() == [0.8, 0.4, 0.35, 0.1]
    # The trapezoidal area under the points is the rank AUC.
    assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) == pytest.approx(0.75)


def test_precision_recall_and_average_precision() -> None:
    precision, recall, _ = pr_curve(Y, P)
    assert precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    assert recall.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])
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
    # Bin [0.2, 0.3): mean p 0.2, 50 % fractures → 0.3 · 2/4; bin [0.9, 1]: 0.1 · 2/4.
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.2)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    bins = reliability_bins(y, [0.2, 0.2, 0.9, 1.0], n_bins=10)
    assert [b.count for b in bins] == [0, 0, 2, 0, 0, 0, 0, 0, 0, 2]  # 1.0 in the last bin
    assert bins[9].mean_probability == pytest.approx(0.95)
    assert math.isnan(bins[0].mean_probability)


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
    # Perfect separation survives every stratified resample.
    assert bootstrap_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_resamples=50) == (1.0, 1.0)
