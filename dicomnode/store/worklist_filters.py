"""What a worklist request asks for: filters, the sort column and the page (validated here, so
the API and the page refuse the same values with the same message)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

MAX_LIMIT = 500


class StudyState(StrEnum):
    WAITING = "waiting"
    PROCESSING = "processing"
    REPORTED = "reported"
    DELIVERED = "delivered"
    FAILED = "failed"


class StudyOutcome(StrEnum):
    POSITIVE = "positive"
    DOUBT = "doubt"
    NEGATIVE = "negative"


class SortKey(StrEnum):
    """Columns the worklist can be sorted by; `triage` is the reading order (the default)."""

    TRIAGE = "triage"
    PROBABILITY = "probability"
    PATIENT = "patient"
    PATIENT_ID = "patient_id"
    ACCESSION = "accession"
    STUDY_DATE = "study_date"
    DESCRIPTION = "description"
    BODY_PART = "body_part"
    IMAGES = "images"
    RECEIVED = "received"
    STATE = "state"
    MODEL = "model"


class FilterError(ValueError):
    """A worklist filter cannot be used; the message says which and why (HTTP 422)."""


@dataclass(frozen=True)
class WorklistFilters:
    outcomes: tuple[StudyOutcome, ...] = ()
    states: tuple[StudyState, ...] = ()
    modality: str | None = None
    #: Inclusive range on the DICOM Study Date.
    date_from: date | None = None
    date_to: date | None = None
    limit: int = 50
    offset: int = 0
    sort: SortKey = SortKey.TRIAGE
    descending: bool = False
    #: Only studies whose results were all made by this model version (the one served now):
    #: "hide results of models no longer served". None: every study.
    model_version: str | None = None

    def __post_init__(self) -> None:
        # Accept plain strings too (validated here, like every other field).
        outcomes = tuple(_enum(StudyOutcome, "outcome", v) for v in self.outcomes)
        states = tuple(_enum(StudyState, "state", v) for v in self.states)
        object.__setattr__(self, "outcomes", outcomes)
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "sort", _enum(SortKey, "sort", self.sort))
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise FilterError("date_from must not be after date_to")
        if self.modality is not None and not (
            0 < len(self.modality) <= 16 and self.modality.isalnum() and self.modality.isupper()
        ):
            raise FilterError("modality must be a DICOM modality code such as CR or DX")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise FilterError(f"limit must be between 1 and {MAX_LIMIT}")
        if self.offset < 0:
            raise FilterError("offset must not be negative")

    @classmethod
    def from_strings(
        cls,
        *,
        outcome: Sequence[str] = (),
        state: Sequence[str] = (),
        modality: str = "",
        date_from: str = "",
        date_to: str = "",
        limit: str = "",
        offset: str = "",
        sort: str = "",
        order: str = "",
        model_version: str | None = None,
    ) -> WorklistFilters:
        """Filters as a web form sends them (empty string: not set)."""
        return cls(
            outcomes=tuple(_enum(StudyOutcome, "outcome", v) for v in outcome if v),
            states=tuple(_enum(StudyState, "state", v) for v in state if v),
            modality=modality.strip().upper() or None,
            date_from=_date("date_from", date_from),
            date_to=_date("date_to", date_to),
            limit=_int("limit", limit, 50),
            offset=_int("offset", offset, 0),
            sort=_enum(SortKey, "sort", sort or SortKey.TRIAGE),
            descending=_order(order),
            model_version=model_version,
        )


def _enum(kind: type[StrEnum], name: str, value: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise FilterError(f"{name} must be one of {allowed}") from None


def _order(value: str) -> bool:
    if value not in ("", "asc", "desc"):
        raise FilterError("order must be asc or desc")
    return value == "desc"


def _date(name: str, value: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{name} must be a date as YYYY-MM-DD") from None


def _int(name: str, value: str, default: int) -> int:
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise FilterError(f"{name} must be a whole number") from None
