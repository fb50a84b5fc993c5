"""Operating points and temperature scaling against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import confusion
from training.thresholds import (
    TEMPERATURE_RANGE,
    calibrated_probability,
    choose_thresholds,
    fit_temperature,
    high_sensitivity_threshold,
    high_specificity_threshold,
    negative_log_likelihood,
)

NORMALS = [0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50]
FRACTURES = [0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75]
Y = [0] * 10 + [1] * 10
P = NORMALS + FRACTURES


def test_high_sensitivity_threshold_is_the_largest_meeting_the_target() -> None:
    # 90 % of 10 fractures = 9 must be >= t: the 9th highest fracture probability is 0.35, the
    # next lower score 0.30, so t is their midpoint.
    t = high_sensitivity_threshold(Y, P, target=0.9)
    assert t == pytest.approx(0.325)
    assert confusion(Y, P, t).sensitivity == 0.9
    assert confusion(Y, P, 0.375).sensitivity < 0.9  # the next larger candidate fails
    assert high_sensitivity_threshold(Y, P, target=1.0) == pytest.approx(0.275)
    # The lowest score of all: the outer neighbour is 0.
    assert high_sensitivity_threshold([1, 0], [0.2, 0.6], target=1.0) == pytest.approx(0.1)


def test_high_specificity_threshold_is_the_smallest_meeting_the_target() -> None:
    # 9 normals must lie below t: the 9th lowest normal is 0.45, the next higher score 0.50.
    t = high_specificity_threshold(Y, P, target=0.9)
    assert t == pytest.approx(0.475)
    assert confusion(Y, P, t).specificity == 0.9
    assert confusion(Y, P, 0.425).specificity < 0.9  # the next smaller candidate fails
    # 100 %: above the highest normal (0.50) the next score is 0.55.
    assert high_specificity_threshold(Y, P, target=1.0) == pytest.approx(0.525)
    assert high_specificity_threshold([1, 0], [0.2, 0.6], target=1.0) == pytest.approx(0.8)


def test_choose_thresholds_keeps_low_below_high() -> None:
    points = choose_thresholds(Y, P, target_sensitivity=0.9, target_specificity=0.9)
    assert (points.low, points.high) == (pytest.approx(0.325), pytest.approx(0.475))
    assert not points.merged
    assert points.sensitivity_at_low == 0.9 and points.specificity_at_high == 0.9


def test_crossed_operating_points_merge_at_their_midpoint() -> None:
    y, p = [0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    # sens 0.6 → 2 fractures ≥ t → 0.75; spec 0.6 → 2 normals < t → 0.25: low > high.
    points = choose_thresholds(y, p, target_sensitivity=0.6, target_specificity=0.6)
    assert points.merged and points.low == points.high == pytest.approx(0.5)
    assert points.sensitivity_at_low == 1.0 and points.specificity_at_high == 1.0


def test_thresholds_need_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        choose_thresholds([1, 1], [0.2, 0.4])


def test_temperature_recovers_a_known_overconfidence() -> None:
    rng = np.random.default_rng(0)
    margin = rng.normal(0.0, 2.0, 6000)  # true log-odds
    y = (rng.random(margin.size) < 1 / (1 + np.exp(-margin))).astype(int)
    logits = np.stack([np.zeros_like(margin), 2.5 * margin], axis=1)  # 2.5x too confident
    t = fit_temperature(logits, y)
    assert t == pytest.approx(2.5, rel=0.08)
    assert negative_log_likelihood(logits, y, t) < negative_log_likelihood(logits, y, 1.0)
    assert TEMPERATURE_RANGE[0] <= fit_temperature(logits[:, ::-1], 1 - y) <= 3.0


def test_calibrated_probability_is_softmax_over_temperature() -> None:
    logits = np.array([[0.0, 2.0], [1.0, -1.0]])
    expected = 1 / (1 + np.exp(-(logits[:, 1] - logits[:, 0]) / 2.0))
    assert calibrated_probability(logits, temperature=2.0) == pytest.approx(expected)
