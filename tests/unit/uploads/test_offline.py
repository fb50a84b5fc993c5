"""`dicomnode classify` and uploads (`offline.classify_files`) skip images smaller than the
model card's `min_image_size`, with the threshold the loaded package's card sets."""

from __future__ import annotations

import dataclasses

from dicomnode.config import Settings
from dicomnode.model.card import write_card
from dicomnode.model.classifier import Classifier
from dicomnode.uploads.offline import classify_files
from tests.support.models import tiny_package
from tests.support.smallcr import cropped_cr

ROOT = "1.2.826.0.1.3680043.8.498.4711"


def test_min_image_size_comes_from_the_loaded_card(tmp_path):
    package = tmp_path / "pkg"
    card = tiny_package(package)
    write_card(package, dataclasses.replace(card, min_image_size=300))
    classifier = Classifier.from_package(package, device="cpu")
    assert classifier.card.min_image_size == 300
    files = [cropped_cr(tmp_path / f"{side}.dcm", side=side) for side in (16, 299, 300)]
    results = classify_files(files, classifier=classifier, uid_root=ROOT, out_dir=None,
                             max_dataset_bytes=Settings().node.max_dataset_bytes)  # fmt: skip
    assert [r.state for r in results] == ["skipped", "skipped", "classified"]
    assert results[0].reason == (
        "image too small to be a diagnostic radiograph (16x16 px; the model card's "
        "min_image_size is 300 px per side)"
    )
    assert "299x299 px" in str(results[1].reason) and results[2].reason is None
