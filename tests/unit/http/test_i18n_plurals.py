"""Counts with their nouns follow each language's plural rules: gettext plural forms in the
catalogues (Ukrainian: one/few/many, "1 перелом", "3 переломи", "5 переломів", "11 переломів",
"21 перелом"), checked against CLDR's rules (Babel's `Locale.plural_form`) for every count a
page may show, and on a rendered page."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from babel import Locale
from hypothesis import given
from hypothesis import strategies as st

from dicomnode.http.i18n import LANGUAGES, translator
from dicomnode.http.i18n_catalogue import read_catalogue
from dicomnode.model.evidence import COUNTED, ENGLISH_COUNTS
from tests.unit.http.test_about import AUTH, SMALL, _client

#: The gettext form (msgstr[i]) of each CLDR category of whole numbers, per language.
FORMS = {"en": {"one": 0, "other": 1}, "uk": {"one": 0, "few": 1, "many": 2}}


def _plurals(language: str) -> dict[str, tuple[str, ...]]:
    """The plural messages of a catalogue: key -> its forms."""
    return {
        m.id[0]: tuple(m.string)
        for m in read_catalogue(language)
        if isinstance(m.id, tuple) and isinstance(m.string, tuple | list)
    }


def test_every_plural_message_has_every_form_in_every_language():
    english = _plurals("en")
    assert set(COUNTED.values()) <= set(english)
    assert set(ENGLISH_COUNTS) <= set(english)
    for key, forms in ENGLISH_COUNTS.items():
        assert english[key] == forms  # the API's English is the page's
    for language in LANGUAGES:
        catalogue = read_catalogue(language)
        assert catalogue.num_plurals == len(FORMS[language]), language
        found = _plurals(language)
        assert set(found) == set(english), language
        for key, forms in found.items():
            assert len(forms) == len(FORMS[language]) and all(forms), (language, key)
            assert all("{n}" in form for form in forms), (language, key)


@given(n=st.integers(min_value=0, max_value=200))
def test_the_form_shown_is_the_one_cldr_chooses(n: int):
    for language in LANGUAGES:
        category = Locale(language).plural_form(n)
        t = translator(language)
        for key, forms in _plurals(language).items():
            assert t.count(key, n) == forms[FORMS[language][category]].format(n=n), (key, n)


def test_ukrainian_fractures_agree_with_their_number():
    t = translator("uk")
    shown = {n: t.count("count.fractures", n) for n in (1, 2, 3, 4, 5, 11, 12, 14, 21, 22, 25)}
    assert shown == {
        1: "1 перелом", 2: "2 переломи", 3: "3 переломи", 4: "4 переломи", 5: "5 переломів",
        11: "11 переломів", 12: "12 переломів", 14: "14 переломів", 21: "21 перелом",
        22: "22 переломи", 25: "25 переломів",
    }  # fmt: skip
    assert t.count("count.of_images", 21) == "21 зображення"  # "з 21 зображення"
    assert translator("en").count("count.images", 1) == "1 image"


def test_the_about_page_names_counts_in_their_form(tmp_path: Path):
    one = dataclasses.replace(SMALL, metrics={
        **SMALL.metrics, "validation": {**SMALL.metrics["validation"], "images": 21, "fracture": 1}
    })  # fmt: skip
    uk = _client(tmp_path, one).get("/about-model?lang=uk", headers=AUTH).text
    assert "валідація: 21 зображення (1 перелом); менше ніж 50 переломів" in uk
    en = _client(tmp_path, one).get("/about-model?lang=en", headers=AUTH).text
    assert "validation: 21 images (1 fracture); fewer than 50 fractures" in en
    three = _client(tmp_path, SMALL).get("/about-model?lang=uk", headers=AUTH).text
    assert "9 зображень (3 переломи)" in three and "3 переломів" not in three
