"""The words burned into the Secondary Capture, per language (`[outputs] language`).

A burned-in overlay cannot follow a reader's browser, so its language is the node's choice.
The middle outcome is "indeterminate" / "невизначено" everywhere a person reads it (pages,
API labels, this banner); the SR states it with the coded CID 240 value "Undetermined".
"""

from __future__ import annotations

from dataclasses import dataclass

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


def captions(language: str) -> Captions:
    """The captions of `language` (ValueError for one the node has none for)."""
    try:
        return CAPTIONS[language]
    except KeyError:
        raise ValueError(f"no overlay captions in language {language!r}") from None
