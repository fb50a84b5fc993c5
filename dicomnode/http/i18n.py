"""The pages' languages: the choice of one, its messages (gettext catalogues read with Babel,
see `i18n_catalogue`), and its dates, times, numbers and skip/fail reasons.

The language is, in order: `?lang=` (the switch on the page, remembered in a cookie), the
cookie, the browser's Accept-Language (highest q first), English.

Templates get `t`, a `Translator`: `t("key")` is the message, `t.format("key", n=1)` fills its
placeholders, `t.count("count.images", 3)` is a number with its noun in the form the language's
plural rules choose (gettext plural forms: Ukrainian has three, "1 перелом", "3 переломи",
"5 переломів"), `t.date(...)`, `t.time(...)`, `t.decimal(...)`, `t.percent(...)` format by the
page's locale (Babel/CLDR), `t.reason(text)` renders an English skip/fail reason in the page's
language.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from functools import cache

from babel import dates, numbers
from babel.support import Translations

from dicomnode.http.i18n_catalogue import messages, read_catalogue, translations
from dicomnode.imaging.reasons import match_template, template_pattern
from dicomnode.model.card import ModelCard

LANG_COOKIE = "dicomnode_lang"
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
DEFAULT_LANGUAGE = "en"
#: The languages with a catalogue under dicomnode/locale (a test checks they agree).
LANGUAGES = ("en", "uk")


@cache
def _translations(language: str) -> Translations:
    return translations(read_catalogue(language))


@cache
def _messages(language: str) -> dict[str, str]:
    return messages(read_catalogue(language))


@cache
def _english_patterns(prefix: str) -> list[tuple[str, re.Pattern[str]]]:
    """The English `<prefix>.*` messages as patterns, literal ones first (more specific)."""
    english = [(k, v) for k, v in _messages(DEFAULT_LANGUAGE).items() if k.startswith(prefix + ".")]
    english.sort(key=lambda item: "{" in item[1])
    return [(key, template_pattern(text)) for key, text in english]


class _Catalogues(Mapping[str, dict[str, str]]):
    """`MESSAGES[language][key]`: the catalogues as dicts, read on first use."""

    def __getitem__(self, language: str) -> dict[str, str]:
        if language not in LANGUAGES:
            raise KeyError(language)
        return _messages(language)

    def __iter__(self) -> Iterator[str]:
        return iter(LANGUAGES)

    def __len__(self) -> int:
        return len(LANGUAGES)


MESSAGES: Mapping[str, dict[str, str]] = _Catalogues()


def _accept_language(header: str) -> list[str]:
    """Language codes of an Accept-Language header, best first (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranked.append((-q, i, tag.split("-")[0].lower()))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(*, query: str | None, cookie: str | None, accept_language: str) -> str:
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    for tag in _accept_language(accept_language):
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE


def _as_date(value: object) -> dt.date | None:
    """A date from a date, a datetime, DICOM `YYYYMMDD` or ISO `YYYY-MM-DD` text."""
    if isinstance(value, dt.date):
        return value
    text = str(value or "").strip()
    for pattern in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text[:10] if "-" in text else text[:8], pattern).date()
        except ValueError:
            continue
    return None


def _as_time(value: object) -> dt.time | None:
    """A time from a time, DICOM `HHMMSS[.ffffff]` or `HH:MM[:SS]` text."""
    if isinstance(value, dt.time):
        return value
    digits = str(value or "").strip().split(".")[0].replace(":", "")
    if len(digits) < 4 or not digits.isdigit():
        return None
    try:
        return dt.time(int(digits[:2]), int(digits[2:4]), int(digits[4:6] or 0))
    except ValueError:
        return None


class Translator:
    """The page's language: messages, locale formats and reasons (see the module docstring)."""

    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else DEFAULT_LANGUAGE
        self._own = _translations(self.language)
        self._english = _translations(DEFAULT_LANGUAGE)

    def __call__(self, key: str) -> str:
        """The message `key`, falling back to English, then to the key itself."""
        for catalogue in (self._own, self._english):
            text = catalogue.gettext(key)
            if text != key:
                return text
        return key

    def format(self, key: str, **params: object) -> str:
        template = self(key)
        try:
            return template.format(**params)
        except (KeyError, IndexError, ValueError):
            return template

    def count(self, key: str, n: int, **params: object) -> str:
        """The plural message `key` (msgid `key`, msgid_plural `key.plural`) in the form the
        page's language uses for `n`, with `{n}` the number in its locale; falls back to
        English, then to the key."""
        plural = f"{key}.plural"
        number = numbers.format_decimal(n, locale=self.language)
        for catalogue in (self._own, self._english):
            text = catalogue.ngettext(key, plural, n)
            if text not in (key, plural):
                try:
                    return text.format(n=number, **params)
                except (KeyError, IndexError, ValueError):
                    return text
        return key

    def has(self, key: str) -> bool:
        return self._own.gettext(key) != key

    def date(self, value: object, style: str = "medium") -> str:
        """A study date (DICOM or ISO text, or a date) in the page's locale; "" if none."""
        day = _as_date(value)
        return dates.format_date(day, format=style, locale=self.language) if day else ""

    def time(self, value: object, style: str = "short") -> str:
        moment = _as_time(value)
        return dates.format_time(moment, format=style, locale=self.language) if moment else ""

    def datetime(self, value: dt.datetime | None, style: str = "medium") -> str:
        if value is None:
            return ""
        return dates.format_datetime(value, format=style, locale=self.language)

    def decimal(self, value: float | None, digits: int = 2) -> str:
        if value is None:
            return "–"
        pattern = "0." + "0" * digits if digits else "0"
        return numbers.format_decimal(value, format=pattern, locale=self.language)

    def percent(self, value: float | None, digits: int = 0) -> str:
        if value is None:
            return "–"
        pattern = "0" + ("." + "0" * digits if digits else "") + "%"
        return numbers.format_percent(value, format=pattern, locale=self.language)

    def numerals(self, text: str) -> str:
        """`text`'s decimal numbers ("0.833 (0.500–1.00)") with the locale's decimal sign."""
        sign = numbers.get_decimal_symbol(self.language)
        return text if sign == "." else _DECIMAL_POINT.sub(sign, text)

    def reason(self, text: str | None) -> str:
        """An English skip/fail reason (`imaging.reasons`) in the page's language; a reason
        that is not one of ours is named as such (its English text stays in the API)."""
        return self.sentence(text, "reason")

    def sentence(self, text: str | None, prefix: str) -> str:
        """An English sentence made from one of the English `<prefix>.<code>` messages
        (a skip reason, a worklist filter error) in the page's language: its code and
        parameters are read back from the English template. A parameter `reason` is a nested
        reason; one `name` that is a message key (a form field) is translated too, and so is
        any parameter that is the English text of a `term.*` message (`reasons.TERMS`).
        Unrecognised: the `<prefix>.unknown` message."""
        if not text:
            return ""
        if self.language == DEFAULT_LANGUAGE:
            return text
        parsed = match_template(text, _english_patterns(prefix))
        if parsed is None or not self.has(parsed[0]):
            return self(f"{prefix}.unknown")
        key, params = parsed
        if "reason" in params:
            params["reason"] = self.reason(params["reason"])
        if "name" in params and self.has(params["name"]):
            params["name"] = self(params["name"])
        terms = _english_texts("term")
        for name, value in params.items():
            term = terms.get(value)
            if name != "reason" and term is not None and self.has(term):
                params[name] = self(term)
        return self.format(key, **params)

    # --- the model card: its texts are the card's own (English), the demo's are known -------

    def card(self, text: str) -> str:
        """A model-card text in the page's language when it is one of the built-in texts
        (the demo card's, the default intended use: `card.*` messages), else the card's own."""
        key = _english_texts("card").get(text.strip())
        return self(key) if key and self.has(key) else text

    def card_language(self, text: str) -> str:
        """The language `card(text)` is in (a card's own texts are English), for `lang=`."""
        key = _english_texts("card").get(text.strip())
        return self.language if key and self.has(key) else DEFAULT_LANGUAGE

    def class_name(self, name: str) -> str:
        return self(f"class.{name}") if self.has(f"class.{name}") else name

    def model_name(self, card: ModelCard) -> str:
        """The card's display name with the UNTRAINED DEMO mark in the page's language."""
        return self.model_label(card.name, trained=card.trained)

    def model_label(self, name: str, *, trained: bool) -> str:
        return name if trained else f"{name} ({self('untrained_label')})"


@cache
def _english_texts(prefix: str) -> dict[str, str]:
    """English text -> key of the `<prefix>.*` messages."""
    english = _messages(DEFAULT_LANGUAGE).items()
    return {text: key for key, text in english if key.startswith(prefix + ".")}


def translator(language: str) -> Translator:
    """`t`: the `Translator` of `language` (English for an unknown one)."""
    return _translator(language if language in LANGUAGES else DEFAULT_LANGUAGE)


@cache
def _translator(language: str) -> Translator:
    return Translator(language)
