"""How a worklist row reads on the page: the patient's name as people write it, how long the
study has waited, the model badge, the sortable column headers. Pure functions over the
row's API form (`worklist.row_json`), so the page shows what the API says.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dicomnode.http.i18n import Translator
from dicomnode.store.tables import utcnow
from dicomnode.store.worklist import SortKey, StudyState, WorklistFilters, WorklistRow

Translate = Callable[[str], str]

#: Components of a DICOM PN value group, in order (PS3.5 6.2.1.1).
_PN_COMPONENTS = 5
#: Columns of the page (sort key, message key; None: not sortable), in order. The patient's
#: three are left out when identifiers are not shown.
COLUMNS: tuple[tuple[str, SortKey | None, str], ...] = (
    ("outcome", SortKey.TRIAGE, "outcome"),
    ("probability", SortKey.PROBABILITY, "probability_short"),
    ("patient", SortKey.PATIENT, "patient"),
    ("patient-id", SortKey.PATIENT_ID, "patient_id"),
    ("accession", SortKey.ACCESSION, "accession_short"),
    ("study-date", SortKey.STUDY_DATE, "study_date_time"),
    ("description", SortKey.DESCRIPTION, "description"),
    ("body-part", SortKey.BODY_PART, "body_part"),
    ("images", SortKey.IMAGES, "images_short"),
    ("waiting", SortKey.RECEIVED, "waiting"),
    ("state", SortKey.STATE, "state"),
    ("model", SortKey.MODEL, "model"),
    ("open", None, "open"),
)
_IDENTIFIER_COLUMNS = ("patient", "patient-id", "accession")


def format_person_name(value: str) -> str:
    """A DICOM Person Name as people write it: `DOE^JANE^M^DR^JR` → `Doe, Dr Jane M, Jr`.

    The first non-empty of the alphabetic, ideographic and phonetic groups is used; a component
    in capitals only (as most modalities send them) is title-cased, any other kept as written
    (`McDonald`, `山田`). Components beyond the fifth are kept with the suffix. Never raises.
    """
    groups = value.split("=")
    group = next((g for g in groups if g.replace("^", "").strip()), "")
    parts = [" ".join(part.split()) for part in group.split("^")]
    parts += [""] * (_PN_COMPONENTS - len(parts))
    family, given, middle, prefix = (_case(p) for p in parts[:4])
    suffix = " ".join(_case(p) for p in parts[4:] if p)
    first = " ".join(p for p in (prefix, given, middle) if p)
    name = f"{family}, {first}" if family and first else family or first
    if suffix:
        name = f"{name}, {suffix}" if name else suffix
    return name


def _case(component: str) -> str:
    return component.title() if component.isupper() else component


def format_duration(seconds: float, t: Translate) -> str:
    """`< 1 min`, `12 min`, `3 h 05 min`, `2 d 4 h` (units in the page's language)."""
    minutes = int(max(0.0, seconds) // 60)
    if minutes < 1:
        return f"< 1 {t('unit.min')}"
    if minutes < 60:
        return f"{minutes} {t('unit.min')}"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} {t('unit.h')} {minutes:02d} {t('unit.min')}"
    days, hours = divmod(hours, 24)
    return f"{days} {t('unit.d')} {hours} {t('unit.h')}"


def waiting(row: WorklistRow, *, now: datetime | None = None) -> tuple[float, bool]:
    """(seconds, done): how long the study has waited since the node received it, or, once
    its result is reported, how long the result took (done)."""
    received = _aware(row.first_received_at)
    done = row.reported_at is not None and row.state in (StudyState.REPORTED, StudyState.DELIVERED)
    end = _aware(row.reported_at) if done and row.reported_at else (now or utcnow())
    return max(0.0, (end - received).total_seconds()), done


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # SQLite: naive UTC


def model_json(
    *, name: str | None, version: str | None, trained: bool | None, served_version: str | None,
    count: int = 1,
) -> dict[str, Any] | None:  # fmt: skip
    """The model of a result as the API gives it; None when nothing was classified yet.

    `untrained_demo` is true for a result of an untrained model even after a trained one
    replaced it; `trained` null means the node did not record it (results from before database
    revision 0004_model); `served` says whether the model serving now made it.
    """
    if count == 0:
        return None
    return {
        "name": name,
        "version": version,
        "trained": trained,
        "untrained_demo": trained is False,
        "several": count > 1,
        "served": count == 1 and version is not None and version == served_version,
    }


def model_badge(model: dict[str, Any] | None, t: Translate) -> dict[str, str] | None:
    """(kind, text, title) of the model cell: DEMO, unknown, several or the version."""
    if model is None:
        return None
    described = " · ".join(str(v) for v in (model["name"], model["version"]) if v)
    if model["untrained_demo"]:
        kind, text, title = "demo", t("badge.demo"), f"{t('badge.demo_title')} {described}"
    elif model["several"]:
        kind, text, title = "several", t("badge.several"), t("badge.several")
    elif model["trained"] is None:
        kind, text, title = "unknown", t("badge.unknown"), described or t("badge.unknown")
    else:
        kind, text, title = "trained", str(model["version"]), described
    if not model["served"]:
        title = f"{title} ({t('badge.old')})"
    return {"kind": kind, "text": text, "title": title, "old": "" if model["served"] else "old"}


def row_view(row: WorklistRow, data: dict[str, Any], t: Translator) -> dict[str, Any]:
    """The page's values of a row, on top of its API form `data`."""
    view = dict(data)
    probability = row.max_probability
    view["probability_text"] = t.decimal(probability, 2) if probability is not None else "–"
    view["outcome_key"] = row.outcome.value if row.outcome else "none"
    if "patient" in data:
        view["patient_display"] = format_person_name(data["patient"]["name"])
    seconds, done = waiting(row)
    view["waiting_text"] = format_duration(seconds, t)
    view["waiting_done"] = done
    view["waiting_title"] = t("to_result_title" if done else "waiting_title")
    view["badge"] = model_badge(data["model"], t)
    return view


def headers(
    filters: WorklistFilters, *, identifiers: bool, link: Callable[..., str], t: Translate
) -> list[dict[str, Any]]:
    """The column headers: label, link that sorts by the column (again: the other way), and
    `aria-sort` for the current one."""
    out = []
    for css, key, message in COLUMNS:
        if css in _IDENTIFIER_COLUMNS and not identifiers:
            continue
        current = key is not None and filters.sort == key
        descending = current and not filters.descending
        aria = ("descending" if filters.descending else "ascending") if current else None
        order = "desc" if descending else None
        href = link(sort=key.value, order=order, offset=None) if key else None
        title = t(message + ".title")
        title = "" if title.endswith(".title") else title
        out.append({"css": css, "label": t(message), "title": title,
                    "href": href, "aria_sort": aria, "key": key.value if key else ""})  # fmt: skip
    return out
