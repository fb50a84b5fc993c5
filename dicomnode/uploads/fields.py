"""The JSON fields of an analysis result: the prediction, the model, a DICOM header summary.

Shared by single-image and study results (`uploads.analysis`), so both name things the same way.
See `uploads.analysis` for what each prediction field means.
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.uid import UID

from dicomnode.imaging.dicom_errors import VALUE_ERRORS
from dicomnode.model.card import ModelCard
from dicomnode.model.classifier import outcome_for

LABELS = {"positive": "fracture", "doubt": "indeterminate", "negative": "no_fracture"}


def prediction_fields(probability: float, card: ModelCard) -> dict[str, Any]:
    outcome = str(outcome_for(probability, card))
    return {
        "outcome": outcome,
        "label": LABELS[outcome],
        "fracture_probability": probability,
        "normal_probability": 1.0 - probability,
        "confidence": max(probability, 1.0 - probability),
    }


def model_fields(card: ModelCard) -> dict[str, Any]:
    return {
        "model": {
            "name": card.name,
            "display_name": card.display_name,
            "version": card.version,
            "architecture": card.architecture,
            "untrained_demo": not card.trained,
        },
        "untrained_demo": not card.trained,
        "thresholds": {"low": card.threshold_low, "high": card.threshold_high},
    }


_SUMMARY_TEXT = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality", "Manufacturer",
    "ManufacturerModelName", "BodyPartExamined", "ViewPosition", "Laterality",
    "ImageLaterality", "PhotometricInterpretation", "StudyDate", "StudyDescription",
    "SeriesDescription", "SoftwareVersions",
)  # fmt: skip
_SUMMARY_NUMBERS = ("SeriesNumber", "InstanceNumber", "Rows", "Columns", "BitsStored", "KVP")
_SUMMARY_SPACING = ("PixelSpacing", "ImagerPixelSpacing")


def dicom_summary(ds: Dataset) -> dict[str, Any]:
    """The metadata an uploader wants to check (no patient identifiers). Tolerant: a missing
    or malformed value is None."""
    out: dict[str, Any] = {}
    for keyword in _SUMMARY_TEXT:
        value = get_value(ds, keyword)
        out[_snake(keyword)] = str(value).strip() if value not in (None, "") else None
    for keyword in _SUMMARY_NUMBERS:
        value = get_value(ds, keyword)
        try:
            out[_snake(keyword)] = float(value) if keyword == "KVP" else int(value)
        except (TypeError, ValueError):
            out[_snake(keyword)] = None
    for keyword in _SUMMARY_SPACING:
        value = get_value(ds, keyword)
        try:
            out[_snake(keyword)] = [float(v) for v in value] if value else None
        except (TypeError, ValueError):
            out[_snake(keyword)] = None
    sop_class = str(get_value(ds, "SOPClassUID") or "")
    out["sop_class"] = UID(sop_class).name if sop_class else None
    meta = getattr(ds, "file_meta", None)
    syntax = str(get_value(meta, "TransferSyntaxUID") or "") if meta is not None else ""
    out["transfer_syntax"] = UID(syntax).name if syntax else None
    return out


def get_value(ds: Dataset | None, keyword: str) -> Any:
    if ds is None:
        return None
    try:
        return ds.get(keyword)
    except VALUE_ERRORS:
        return None


def _snake(keyword: str) -> str:
    special = {"SOPInstanceUID": "sop_instance_uid", "StudyInstanceUID": "study_instance_uid",
               "SeriesInstanceUID": "series_instance_uid", "KVP": "kvp"}  # fmt: skip
    if keyword in special:
        return special[keyword]
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in keyword).lstrip("_")


def text_value(ds: Dataset | None, keyword: str) -> str | None:
    value = get_value(ds, keyword)
    return str(value).strip() or None if value is not None else None


def distinct(rows: list[dict[str, Any]], key: str) -> list[str]:
    return sorted({str(r["metadata"][key]) for r in rows if r["metadata"].get(key)})
