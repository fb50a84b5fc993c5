"""The validation evidence of a model card: small sets and wide intervals are named, with the
numbers; an adequate card gives no warning; the demo says it has no evidence at all."""

from __future__ import annotations

import dataclasses

import pytest

from dicomnode.model.card import ModelCard
from dicomnode.model.evidence import (
    ENGLISH,
    MAX_AUC_CI_WIDTH,
    MIN_POSITIVES,
    assess,
    assess_metrics,
    log_warnings,
    messages,
    significant,
)

TRAINED = ModelCard(name="m", version="v1", architecture="efficientnet_b4", input_size=384,
                    mean=(0.5,) * 3, std=(0.5,) * 3, trained=True)  # fmt: skip
#: The package of issue 19: 9 validation images, 3 fractures, AUC CI 0.33-1.00.
SMALL = {"validation": {"images": 9, "fracture": 3, "auc": 0.833333,
                        "auc_ci95": [0.333333, 1.0], "sensitivity_at_low": 1.0}}  # fmt: skip
LARGE = {
    "validation": {"images": 800, "fracture": 140, "auc": 0.93, "auc_ci95": [0.905, 0.952]},
    "test": {"images": 820, "fracture": 144, "auc": 0.92, "auc_ci95": [0.894, 0.944]},
    "training": {"best_epoch": 12, "epochs_run": 20},
}


def test_the_nine_image_package_is_named_with_its_numbers() -> None:
    card = dataclasses.replace(TRAINED, metrics=SMALL)
    [warning] = assess(card)
    assert warning.problems == ("few_positives", "wide_ci")
    assert warning.data_set is not None and warning.data_set.ci_width == pytest.approx(0.666667)
    assert messages(card) == [
        "validation: 9 images (3 fractures); fewer than 50 fractures; "
        "AUC 0.833, 95 % CI 0.333–1.00 is wider than 0.20"
    ]


def test_a_large_validated_and_tested_card_has_no_warning() -> None:
    assert assess(dataclasses.replace(TRAINED, metrics=LARGE)) == []


def test_each_data_set_is_judged_on_its_own() -> None:
    small_test = {**LARGE, "test": {"images": 60, "fracture": 12, "auc": 0.9,
                                    "auc_ci95": [0.78, 0.99]}}  # fmt: skip
    [warning] = assess_metrics(small_test)
    assert warning.data_set is not None and warning.data_set.split == "test"
    assert warning.message() == (
        "test: 60 images (12 fractures); fewer than 50 fractures; "
        "AUC 0.900, 95 % CI 0.780–0.990 is wider than 0.20"
    )
    # The bounds are parameters: a stricter reviewer gets more warnings from the same card.
    assert len(assess_metrics(LARGE, min_positives=141, max_ci_width=0.01)) == 2


def test_missing_metrics_are_warnings_not_silence() -> None:
    assert messages(dataclasses.replace(TRAINED, metrics={})) == [
        "the model card records no validation or test metrics"
    ]
    only_training = {"training": {"epochs_run": 3}, "onnx_check": {"cam_relative": 0.0}}
    assert [w.code for w in assess_metrics(only_training)] == ["no_evidence"]
    # An older card: an AUC without set sizes or interval.
    [old] = assess_metrics({"validation": {"auc": 0.97}})
    assert old.problems == ("size_unknown", "ci_unknown")
    assert old.message() == (
        "validation: number of images and fractures not recorded; "
        "no confidence interval of the AUC recorded"
    )
    # `training.evaluate --update-card` before it recorded the positives.
    [test] = assess_metrics({**LARGE, "test": {"images": 820, "auc": 0.92,
                                               "auc_ci95": [0.89, 0.94]}})  # fmt: skip
    assert test.message() == "test: 820 images (number of fractures not recorded)"


def test_the_demo_says_it_has_no_evidence() -> None:
    demo = dataclasses.replace(TRAINED, trained=False, metrics=LARGE)
    assert messages(demo) == ["untrained demo model: no validation evidence at all"]


def test_thresholds_and_messages_are_the_documented_ones() -> None:
    assert (MIN_POSITIVES, MAX_AUC_CI_WIDTH) == (50, 0.20)
    assert all(key.startswith("evidence.") for key in ENGLISH)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.30000000000000004, "0.300"), (1.0, "1.00"), (0.95, "0.950"), (0.0123456, "0.0123"),
     (12.345, "12.3"), (0.0, "0.00"), (7, "7"), (float("nan"), "nan")],
)  # fmt: skip
def test_three_significant_digits(value: float, text: str) -> None:
    assert significant(value) == text


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.lines.append((event, fields))


def test_start_up_warnings_name_the_demo_or_each_weak_set() -> None:
    log = _Recorder()
    log_warnings(dataclasses.replace(TRAINED, metrics=SMALL), log)
    [(event, fields)] = log.lines
    assert event == "model validation evidence is weak"
    assert str(fields["warning"]).startswith("validation: 9 images (3 fractures)")
    log = _Recorder()
    log_warnings(dataclasses.replace(TRAINED, trained=False), log)
    assert [e for e, _ in log.lines] == [
        "running the UNTRAINED DEMO model: results are not meaningful"
    ]
    log = _Recorder()
    log_warnings(dataclasses.replace(TRAINED, metrics=LARGE), log)
    assert log.lines == []
