"""The overlay's burned-in text in the configured language (`[outputs] language`): Ukrainian
sentences, drawn in a font that has Cyrillic (not boxes), a valid SC (dciodvfy), and the
option reaching the builders through the output registry (`image_outputs`, which the worker,
`dicomnode classify` and HTTP analysis call with `settings.outputs.language`)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import ImageFont
from pydantic import ValidationError

from dicomnode.checks import check_overlay_language
from dicomnode.config import Settings
from dicomnode.imaging.preprocess import to_grayscale
from dicomnode.model.classifier import Outcome, Prediction
from dicomnode.objects.captions import captions
from dicomnode.objects.captions import draws as _draws
from dicomnode.objects.captions import font as _font
from dicomnode.objects.outputs import SC, ClassifiedImage, OutputUIDs, image_outputs
from dicomnode.objects.sc import (
    BANNER_COLOURS,
    BANNER_FONT_SIZE,
    banner_text,
    build_sc,
    drawable_language,
    footer_text,
    render_overlay,
)
from tests.support.data import RG3_UNCR, testdata
from tests.support.results import result_card
from tests.support.smallcr import cropped_cr
from tests.support.validators import run_dciodvfy

ROOT = "1.2.826.0.1.3680043.8.498.4711"


def test_banner_and_footer_in_ukrainian():
    assert banner_text(Outcome.POSITIVE, 0.8712, language="uk") == (
        "ШІ-сортування: підозра на перелом 0,87 — не діагноз"
    )
    assert banner_text(Outcome.DOUBT, 0.5249, language="uk") == (
        "ШІ-сортування: невизначено 0,52 — перегляньте — не діагноз"
    )
    assert banner_text(Outcome.NEGATIVE, 0.04, trained=False, language="uk") == (
        "НЕНАВЧЕНА ДЕМО-МОДЕЛЬ — ШІ-сортування: перелом не виявлено 0,04 — не діагноз"
    )
    card = result_card()
    assert (
        footer_text(card, language="uk") == "dicomnode fracture triage · версія 2.1.0 · dicomnode"
    )
    with pytest.raises(ValueError):
        banner_text(Outcome.POSITIVE, 0.9, language="fr")


def _banner(pixels: np.ndarray, outcome: str) -> np.ndarray:
    """The banner's rows: from the top while the left edge has the banner's background."""
    background = np.array(BANNER_COLOURS[outcome][0])
    edge = np.all(np.abs(pixels[:, 1].astype(int) - background) < 8, axis=-1)
    height = int(np.argmin(edge)) if not edge.all() else len(edge)
    assert height > 20
    return pixels[:height]


def test_the_ukrainian_banner_is_drawn_in_a_font_with_cyrillic():
    image = np.full((600, 500), 0.5, np.float32)
    heat = np.zeros((60, 50), np.float32)
    kwargs = dict(outcome="positive", probability=0.9, card=result_card())
    uk = render_overlay(image, heat, language="uk", **kwargs)  # type: ignore[arg-type]
    en = render_overlay(image, heat, **kwargs)  # type: ignore[arg-type]
    banner = _banner(uk, "positive")
    ink = np.all(banner > 230, axis=-1).sum()  # white letters on red
    assert ink > 500
    text = banner_text("positive", 0.9, language="uk")
    assert _draws(_font(BANNER_FONT_SIZE, bold=True), text)  # every letter has its glyph
    english = _banner(en, "positive")
    assert banner.shape != english.shape or not np.array_equal(banner, english)
    # A font without Cyrillic is recognised (the overlay then falls back to English, and
    # `doctor` warns); here DejaVu Sans is installed.
    latin_only = [ImageFont.load_default(size=20)]
    assert not _draws(latin_only[0], "Ж") and not captions("uk").drawable(latin_only)
    assert captions("en").drawable(latin_only) and drawable_language("uk") == "uk"
    check = check_overlay_language(Settings.model_validate({"outputs": {"language": "uk"}}))
    assert check.status == "ok", check


def test_a_ukrainian_overlay_is_a_valid_secondary_capture(tmp_path):
    source = pydicom.dcmread(testdata(RG3_UNCR))
    image = to_grayscale(source)
    sc = build_sc(source=source, image=image,
                  prediction=Prediction(0.5, Outcome.DOUBT, np.ones((40, 30), np.float32)),
                  card=result_card(), sop_instance_uid=ROOT + ".9.1",
                  series_instance_uid=ROOT + ".9.2", instance_number=1,
                  language="uk")  # fmt: skip
    path = tmp_path / "sc.dcm"
    sc.save_as(path, enforce_file_format=True)
    assert run_dciodvfy(path).errors == []
    assert sc.BurnedInAnnotation == "YES"


def test_the_option_reaches_the_builders(tmp_path):
    assert Settings.model_validate({"outputs": {"language": "uk"}}).outputs.language == "uk"
    assert Settings().outputs.language == "en"
    with pytest.raises(ValidationError):
        Settings.model_validate({"outputs": {"language": "fr"}})
    source = pydicom.dcmread(cropped_cr(tmp_path / "cr.dcm", side=320))
    image = ClassifiedImage(
        source=source, image=to_grayscale(source),
        prediction=Prediction(0.9, Outcome.POSITIVE, np.ones((40, 40), np.float32)),
        sop_instance_uid=source.SOPInstanceUID, study_instance_uid=source.StudyInstanceUID,
    )  # fmt: skip
    uids = OutputUIDs(root=ROOT, model_version="2.1.0")
    pixels = {
        language: dict(image_outputs(image, card=result_card(), uids=uids, language=language))[
            SC
        ].pixel_array
        for language in ("en", "uk")
    }
    top = 40  # the banner
    assert not np.array_equal(pixels["en"][:top], pixels["uk"][:top])
