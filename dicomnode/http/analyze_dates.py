"""Dates on the Analyze page and in its API answers, in the page's language.

One function, so that a locale library (Babel, which `http/i18n` is gaining) can replace the
month tables of `i18n_analyze` here alone; its output mimics Babel's "long" date format.
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
    t = translator(language)
    return t("date.long").format(day=day.day, month=t(f"month.{day.month}"), year=day.year)
