import json

import pytest

from dicomnode.model.card import (
    CARD_FILE,
    DEFAULT_MIN_IMAGE_SIZE,
    WEIGHTS_FILE,
    ModelCard,
    ModelPackageError,
    read_package,
    write_card,
)


def _card(**kw):
    values = dict(
        name="t",
        version="1",
        architecture="a",
        input_size=64,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    values.update(kw)
    return ModelCard(**values)


def test_package_round_trip_and_tamper_detection(tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"weights")
    written = write_card(tmp_path, _card())
    card, weights = read_package(tmp_path)
    assert card == written and weights.name == WEIGHTS_FILE and len(card.weights_sha256) == 64
    (tmp_path / WEIGHTS_FILE).write_bytes(b"other weights")
    with pytest.raises(ModelPackageError, match="does not match"):
        read_package(tmp_path)


def test_untrained_card_says_so_in_its_name():
    assert "UNTRAINED DEMO" in _card(trained=False).display_name
    assert "UNTRAINED" not in _card().display_name


@pytest.mark.parametrize(
    "kw", [dict(threshold_low=0.8, threshold_high=0.2), dict(class_names=("a", "b"))]
)
def test_invalid_cards_are_refused(kw):
    with pytest.raises(ModelPackageError):
        _card(**kw)


def test_unknown_keys_are_refused(tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"w")
    write_card(tmp_path, _card())
    data = json.loads((tmp_path / CARD_FILE).read_text())
    data["surprise"] = 1
    (tmp_path / CARD_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelPackageError, match="unknown keys"):
        read_package(tmp_path)


def test_a_card_without_min_image_size_gets_the_default(tmp_path):
    """Packages exported before the field existed keep loading, with the 256 px minimum."""
    (tmp_path / WEIGHTS_FILE).write_bytes(b"w")
    write_card(tmp_path, _card(min_image_size=64))
    data = json.loads((tmp_path / CARD_FILE).read_text())
    assert data["min_image_size"] == 64  # written by write_card (and so by training.export)
    del data["min_image_size"]
    (tmp_path / CARD_FILE).write_text(json.dumps(data))
    card, _ = read_package(tmp_path)
    assert card.min_image_size == DEFAULT_MIN_IMAGE_SIZE == 256
    with pytest.raises(ModelPackageError, match="min_image_size"):
        _card(min_image_size=-1)
