"""Study dates on the Analyze page: a date in the page's language, never the raw DICOM DA."""

from __future__ import annotations

import datetime

import pytest

from dicomnode.http.analyze_dates import format_date


@pytest.mark.parametrize(
    ("value", "language", "expected"),
    [
        ("20040826", "en", "August 26, 2004"),
        ("20040826", "uk", "26 серпня 2004 р."),
        ("2004-08-26", "en", "August 26, 2004"),  # the worklist API's ISO form
        (datetime.date(2024, 1, 5), "uk", "5 січня 2024 р."),
        ("20241231", "de", "December 31, 2024"),  # an unknown language falls back to English
        ("2004", "en", "2004"),  # not a full date: shown as it is, not hidden
        ("", "en", None),
        (None, "uk", None),
    ],
)
def test_study_dates_are_formatted_in_the_pages_language(value, language, expected) -> None:
    assert format_date(value, language) == expected
