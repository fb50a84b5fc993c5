"""Dates on the Analyze page and in its API answers, in the page's language.

One function: Babel's "long" date format of the page's locale (through `http/i18n`).
"""

from __future__ import annotations

from datetime import date, datetime

from dicomnode.http.i18n import translator


def format_date(value: str | date | None, language: str) -> str | None:
    """A DICOM date (DA, `YYYYMMDD`; ISO `YYYY-MM-DD` too) as a reader writes it in
    `language`: "August 26, 2004", "26 серпня 2004 р.". None stays None; a value that is no
    date is returned as it is (a damaged header is shown, not hidden)."""
    if value is None or value == "":
        return None
    if isinstance(value, date):
        day = value
    else:
        text = str(value).strip()
        try:
            day = datetime.strptime(text.replace("-", ""), "%Y%m%d").date()
        except ValueError:
            return text
    return translator(language).date(day, style="long")
