"""The classifier's suspected regions: from its own heatmap at the card's `region_threshold`,
for positive and doubt outcomes only; the card refuses a threshold outside (0, 1]."""

from __future__ import annotations

import dataclasses

import pydicom
import pytest

from dicomnode.imaging.preprocess import to_grayscale
from dicomnode.imaging.regions import DEFAULT_REGION_THRESHOLD, find_regions
from dicomnode.model.card import ModelCard, ModelPackageError
from dicomnode.model.classifier import Classifier, Outcome
from tests.support import data


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.demo(architecture=data.TINY_ARCH, device="cpu")


def test_regions_follow_the_outcome_and_the_cards_threshold(classifier: Classifier) -> None:
    image = to_grayscale(pydicom.dcmread(data.testdata(data.RG3_UNCR)))
    card = classifier.card
    assert card.region_threshold == DEFAULT_REGION_THRESHOLD
    try:
        classifier.card = dataclasses.replace(card, threshold_low=0.0, threshold_high=0.0,
                                              region_threshold=0.8)  # fmt: skip
        positive = classifier.predict(image)
        assert positive.outcome == Outcome.POSITIVE
        assert positive.regions and positive.regions == find_regions(positive.heatmap,
                                                                     fraction=0.8)  # fmt: skip
        classifier.card = dataclasses.replace(card, threshold_low=1.0, threshold_high=1.0)
        negative = classifier.predict(image)
        assert negative.outcome == Outcome.NEGATIVE and negative.regions == ()
    finally:
        classifier.card = card


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
def test_card_refuses_a_region_threshold_outside_0_1(value: float) -> None:
    card = ModelCard(name="m", version="1", architecture="a", input_size=32, mean=(0, 0, 0),
                     std=(1, 1, 1))  # fmt: skip
    with pytest.raises(ModelPackageError, match="region_threshold"):
        dataclasses.replace(card, region_threshold=value)
    old = {k: v for k, v in card.to_json().items() if k != "region_threshold"}
    assert ModelCard.from_json(old).region_threshold == DEFAULT_REGION_THRESHOLD
