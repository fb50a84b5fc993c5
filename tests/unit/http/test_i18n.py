"""The pages' gettext catalogues (dicomnode/locale) and what the translator does with them:
every key in every language with the same placeholders, reasons read back from their English
sentence, locale dates and numbers, and the step that moves dict messages into the .po files."""

from __future__ import annotations

import shutil
import string
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.http.i18n import LANGUAGES, MESSAGES, translator
from dicomnode.http.i18n_catalogue import (
    LOCALE_DIR,
    dicts_in_source,
    languages,
    main,
    read_catalogue,
)
from dicomnode.imaging.eligibility import eligibility
from dicomnode.imaging.reasons import REASONS, parse_reason, placeholders, reason, reason_code
from tests.support.data import ct_small

ROOT = "1.2.826.0.1.3680043.8.498.4711"


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_message_is_in_every_language_with_the_same_placeholders():
    assert tuple(languages()) == LANGUAGES == ("en", "uk")
    english = MESSAGES["en"]
    for language in LANGUAGES:
        catalogue = read_catalogue(language)
        assert not [m.id for m in catalogue if m.id and (m.fuzzy or not m.string)], language
        assert set(MESSAGES[language]) == set(english), language
    for key, text in english.items():
        assert _fields(MESSAGES["uk"][key]) == _fields(text), key


def test_every_reason_has_its_message_in_english_and_ukrainian():
    for code, template in REASONS.items():
        assert MESSAGES["en"][f"reason.{code}"] == template, code  # `... reasons` copies them
        assert placeholders(MESSAGES["uk"][f"reason.{code}"]) == placeholders(template), code


@pytest.mark.parametrize("code", sorted(REASONS))
def test_a_reason_sentence_is_read_back_to_its_code_and_parameters(code):
    params = {name: str(17 + i) for i, name in enumerate(sorted(placeholders(REASONS[code])))}
    if "reason" in params:
        params["reason"] = reason("modality", modality="CT")
    assert parse_reason(reason(code, **params)) == (code, params)
    uk = translator("uk").reason(reason(code, **params))
    assert uk == translator("uk").format(f"reason.{code}", **{
        k: (translator("uk").reason(v) if k == "reason" else v) for k, v in params.items()
    })  # fmt: skip
    assert uk != reason(code, **params)


def test_eligibility_gives_coded_reasons_the_page_renders_in_ukrainian():
    text = eligibility(dcmread(ct_small()), uid_root=ROOT)
    assert text == "modality CT is not a radiograph"  # English in logs and the API
    assert reason_code(text) == "modality"
    assert translator("uk").reason(text) == "модальність CT не є рентгенограмою"
    assert translator("en").reason(text) == text
    assert translator("uk").reason("something nobody coded") == MESSAGES["uk"]["reason.unknown"]


def test_dates_times_and_numbers_follow_the_page_locale():
    uk, en = translator("uk"), translator("en")
    assert (
        uk.date("20040826") == "26 серп. 2004\u202fр." and en.date("2004-08-26") == "Aug 26, 2004"
    )
    assert uk.time("101530") == "10:15" and uk.decimal(0.8734) == "0,87"
    assert uk.percent(0.871) == "87%" and en.decimal(None) == "–"
    assert uk.date("") == "" and uk.date("garbage") == ""


def test_the_middle_outcome_has_one_name_per_language():
    en, uk = MESSAGES["en"], MESSAGES["uk"]
    assert en["outcome.doubt"] == "indeterminate" and uk["outcome.doubt"] == "невизначено"
    assert en["label.indeterminate"].startswith("indeterminate")
    assert uk["label.indeterminate"].startswith("невизначено")
    every = " ".join([*en.values(), *uk.values()]).lower()
    for other in ("doubtful", "uncertain", "сумнів"):
        assert other not in every


def test_dict_messages_from_another_branch_move_into_the_catalogues(tmp_path: Path):
    locale = tmp_path / "locale"
    shutil.copytree(LOCALE_DIR, locale)
    module = tmp_path / "old_i18n.py"
    module.write_text(
        "MESSAGES: dict[str, dict[str, str]] = {\n"
        "    'en': {'title': 'changed title', 'new.key': 'New {n}'},\n"
        "    'uk': {'new.key': 'Нове {n}'},\n"
        "}\n"
        "OTHER = {'en': {'ignored': 'x'}}\n",
        encoding="utf-8",
    )
    assert dicts_in_source(module.read_text()) == {
        "en": {"title": "changed title", "new.key": "New {n}"}, "uk": {"new.key": "Нове {n}"}
    }  # fmt: skip
    assert main(["merge", str(module), "--locale-dir", str(locale)]) == 0
    en = read_catalogue("en", locale_dir=locale)
    assert en["new.key"].string == "New {n}"  # type: ignore[union-attr]
    assert en["title"].string == MESSAGES["en"]["title"]  # type: ignore[union-attr]  # kept
    assert read_catalogue("uk", locale_dir=locale)["new.key"].string == "Нове {n}"  # type: ignore[union-attr]
    before = (locale / "en/LC_MESSAGES/dicomnode.po").read_bytes()
    main(["merge", str(module), "--locale-dir", str(locale)])  # re-runnable: nothing changes
    assert (locale / "en/LC_MESSAGES/dicomnode.po").read_bytes() == before
    main(["merge", str(module), "--update", "--locale-dir", str(locale)])
    assert read_catalogue("en", locale_dir=locale)["title"].string == "changed title"  # type: ignore[union-attr]
