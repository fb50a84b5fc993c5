"""How a worklist row reads: patient names as people write them (property-based: any PN value,
however odd, gives a clean name and never raises), waiting time, model badge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomnode.http.i18n import translator
from dicomnode.http.worklist_view import (
    format_duration,
    format_person_name,
    model_badge,
    model_json,
    waiting,
)
from dicomnode.store.worklist import StudyState, WorklistRow


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("DOE^JANE", "Doe, Jane"),
        ("DOE^JANE^MARIE", "Doe, Jane Marie"),
        ("DOE^JANE^^DR^JR", "Doe, Dr Jane, Jr"),
        ("O'BRIEN^MARY ANN", "O'Brien, Mary Ann"),
        ("SMITH-JONES^ANNA", "Smith-Jones, Anna"),
        ("McDonald^Ian", "McDonald, Ian"),  # mixed case is kept as written
        ("DOE", "Doe"),
        ("^JANE", "Jane"),
        ("^^^^JR", "Jr"),
        ("", ""),
        ("^^^^", ""),
        ("  DOE  ^  JANE  ", "Doe, Jane"),
        ("=山田^太郎", "山田, 太郎"),  # only an ideographic group
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada, Tarou"),
        ("ШЕВЧЕНКО^ТАРАС^ГРИГОРОВИЧ", "Шевченко, Тарас Григорович"),
        ("A^B^C^D^E^F", "A, D B C, E F"),  # beyond five components: kept with the suffix
        ("123^456", "123, 456"),
    ],
)
def test_person_names_as_people_write_them(value, expected):
    assert format_person_name(value) == expected


PN_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(PN_TEXT)
def test_any_value_gives_a_clean_name(value):
    name = format_person_name(value)
    assert "^" not in name and "=" not in name
    assert name == name.strip() and "  " not in name
    has_content = any(g.replace("^", "").strip() for g in value.split("="))
    assert bool(name) == has_content


@given(st.from_regex(r"[A-Z]{1,12}", fullmatch=True), st.from_regex(r"[A-Z]{1,12}", fullmatch=True))
def test_capitals_family_and_given(family, given_name):
    assert format_person_name(f"{family}^{given_name}") == (
        f"{family.capitalize()}, {given_name.capitalize()}"
    )


@pytest.mark.parametrize(
    ("seconds", "en", "uk"),
    [
        (0, "< 1 min", "< 1 хв"),
        (59, "< 1 min", "< 1 хв"),
        (60 * 12 + 5, "12 min", "12 хв"),
        (3600 * 3 + 60 * 5, "3 h 05 min", "3 год 05 хв"),
        (86400 * 2 + 3600 * 4 + 59, "2 d 4 h", "2 д 4 год"),
        (-5, "< 1 min", "< 1 хв"),  # clocks of several nodes may disagree a little
    ],
)
def test_durations_in_both_languages(seconds, en, uk):
    assert format_duration(seconds, translator("en")) == en
    assert format_duration(seconds, translator("uk")) == uk


def _row(state: StudyState, received: datetime, reported: datetime | None) -> WorklistRow:
    return WorklistRow(
        study_instance_uid="1.2", study_date="", study_time="", study_description="",
        modalities=(), body_part="", images=1, images_classified=1, outcome=None,
        max_probability=None, state=state, report_version=1 if reported else 0,
        first_received_at=received, patient_name="", patient_id="", accession_number="",
        reported_at=reported,
    )  # fmt: skip


def test_waiting_since_received_until_the_result_then_time_to_result():
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    received = (now - timedelta(minutes=30)).replace(tzinfo=None)  # SQLite gives naive UTC
    assert waiting(_row(StudyState.PROCESSING, received, None), now=now) == (1800.0, False)
    reported = received + timedelta(minutes=4)
    assert waiting(_row(StudyState.REPORTED, received, reported), now=now) == (240.0, True)
    # A failed study (a result could not be delivered) still waits for attention.
    assert waiting(_row(StudyState.FAILED, received, reported), now=now) == (1800.0, False)


def test_model_badges():
    t = translator("en")
    demo = model_json(name="demo", version="d-1", trained=False, served_version="2026.2")
    assert model_badge(demo, t) == {
        "kind": "demo", "text": "DEMO", "old": "old",
        "title": "Result of an UNTRAINED DEMO model: it carries no information. demo · d-1 "
        "(no longer served)",
    }  # fmt: skip
    unknown = model_json(name=None, version="1.0", trained=None, served_version="1.0")
    assert model_badge(unknown, t) == {"kind": "unknown", "text": "model unknown", "old": "",
                                       "title": "1.0"}  # fmt: skip
    trained = model_json(name="BoneNet", version="2026.2", trained=True, served_version="2026.2")
    assert model_badge(trained, t)["text"] == "2026.2"
    assert model_json(name=None, version=None, trained=None, served_version="x", count=0) is None
    assert model_badge(None, t) is None
