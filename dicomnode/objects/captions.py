"""The words burned into the Secondary Capture, per language (`[outputs] language`).

A burned-in overlay cannot follow a reader's browser, so its language is the node's choice.
The middle outcome is "indeterminate" / "невизначено" everywhere a person reads it (pages,
API labels, this banner); the SR states it with the coded CID 240 value "Undetermined".
The font is DejaVu Sans, which has Cyrillic; `Captions.drawable` tells whether the fonts found
can draw a language's captions (`sc.drawable_language` falls back to English, `doctor` warns).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ImageFont

from dicomnode import MANUFACTURER
from dicomnode.model.card import UNTRAINED_LABEL


@dataclass(frozen=True)
class Captions:
    prefix: str
    positive: str
    doubt: str
    negative: str
    review: str
    disclaimer: str
    untrained: str
    version: str

    def banner(self, outcome: str, probability: float, *, trained: bool) -> str:
        p = self.number(probability)
        try:
            words = {"positive": self.positive, "doubt": self.doubt, "negative": self.negative}[
                str(outcome)
            ]
        except KeyError:
            raise ValueError(f"unknown outcome {outcome!r}") from None
        review = f" — {self.review}" if str(outcome) == "doubt" else ""
        text = f"{self.prefix}: {words} {p}{review} — {self.disclaimer}"
        return text if trained else f"{self.untrained} — {text}"

    def footer(self, *, display_name: str, version: str) -> str:
        return f"{display_name} · {self.version} {version} · {MANUFACTURER}"

    def drawable(self, fonts: Iterable[FontType]) -> bool:
        """Whether every font has a glyph for every letter of these captions."""
        words = " ".join(str(v) for v in dataclasses.asdict(self).values())
        return all(draws(f, words) for f in fonts)

    def number(self, value: float) -> str:
        text = f"{value:.2f}"
        return text if self is ENGLISH else text.replace(".", ",")


ENGLISH = Captions(
    prefix="AI triage",
    positive="fracture suspected",
    doubt="indeterminate",
    negative="no fracture detected",
    review="review",
    disclaimer="not a diagnosis",
    untrained=UNTRAINED_LABEL,
    version="version",
)
UKRAINIAN = Captions(
    prefix="ШІ-сортування",
    positive="підозра на перелом",
    doubt="невизначено",
    negative="перелом не виявлено",
    review="перегляньте",
    disclaimer="не діагноз",
    untrained="НЕНАВЧЕНА ДЕМО-МОДЕЛЬ",
    version="версія",
)
CAPTIONS = {"en": ENGLISH, "uk": UKRAINIAN}

FontType = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=8)
def font(size: int, *, bold: bool = False) -> FontType:
    """DejaVu Sans (Latin and Cyrillic): Debian's fonts-dejavu (found by Pillow in
    /usr/share/fonts), else the copy matplotlib ships when it is installed, else Pillow's
    built-in scalable font (Latin only)."""
    names = ("DejaVuSans-Bold.ttf",) * bold + ("DejaVuSans.ttf",)
    spec = importlib.util.find_spec("matplotlib")  # located, not imported
    locations = (spec.submodule_search_locations or []) if spec else []
    bundled = [Path(p) / "mpl-data" / "fonts" / "ttf" for p in locations]
    for name in names:
        for candidate in (name, *(str(folder / name) for folder in bundled)):
            try:
                return ImageFont.truetype(candidate, size)
            except OSError:
                continue
    return ImageFont.load_default(size=size)


def draws(font: FontType, text: str) -> bool:
    """Whether `font` has a glyph for every letter of `text` (a missing one is drawn as the
    font's "missing glyph" box, the same as an unassigned code point)."""
    missing = _glyph(font, "\uffff")
    return all(_glyph(font, c) != missing for c in set(text) if c.isalpha())


@lru_cache(maxsize=1024)
def _glyph(font: FontType, character: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(character)
    return mask.size, np.asarray(mask).tobytes()


def captions(language: str) -> Captions:
    """The captions of `language` (ValueError for one the node has none for)."""
    try:
        return CAPTIONS[language]
    except KeyError:
        raise ValueError(f"no overlay captions in language {language!r}") from None
