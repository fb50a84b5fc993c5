"""The spreadsheet report of a zipped study (openpyxl): studies, images, model.

Every cell holding text is stored as text: a DICOM value such as `=HYPERLINK(...)` or
`+cmd|...` must never become a formula when the sheet is opened (CSV/formula injection).
No patient identifiers are written (the upload's own metadata summary has none).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import Cell
from openpyxl.styles import Font
from openpyxl.worksheet.worksheet import Worksheet

DISCLAIMER = "AI triage aid, not a diagnosis. Every image must be read by a radiologist."

#: Every result names the model that made it (an untrained one says so on every row).
MODEL_COLUMNS = (
    ("AI model", "ai_model"), ("AI model version", "ai_model_version"),
    ("UNTRAINED DEMO", "ai_untrained_demo"),
)  # fmt: skip
STUDY_COLUMNS = (
    ("Study Instance UID", "study_instance_uid"), ("Study date", "study_date"),
    ("Study description", "study_description"), ("Outcome", "outcome"), ("Reason", "reason"),
    ("Highest fracture probability", "fracture_probability"), ("Confidence", "confidence"),
    ("Images", "images"), ("Classified", "classified"), ("Skipped", "skipped"),
    ("Failed", "failed"), ("Modalities", "modalities"), ("Manufacturers", "manufacturers"),
    ("Models", "models"), ("Body parts", "body_parts"), ("Views", "views"),
    ("SR SOP Instance UID", "sr_sop_instance_uid"), *MODEL_COLUMNS,
)  # fmt: skip
IMAGE_COLUMNS = (
    ("Archive entry", "entry"), ("State", "state"), ("Reason", "reason"),
    ("Outcome", "outcome"), ("Fracture probability", "fracture_probability"),
    ("Normal probability", "normal_probability"), ("Confidence", "confidence"),
    ("Study Instance UID", "study_instance_uid"), ("Series Instance UID", "series_instance_uid"),
    ("SOP Instance UID", "sop_instance_uid"), ("SOP class", "sop_class"),
    ("Modality", "modality"), ("Manufacturer", "manufacturer"),
    ("Model", "manufacturer_model_name"), ("Body part", "body_part_examined"),
    ("View", "view_position"), ("Laterality", "laterality"),
    ("Pixel spacing (mm)", "pixel_spacing"), ("Imager pixel spacing (mm)", "imager_pixel_spacing"),
    ("Rows", "rows"), ("Columns", "columns"), ("Bits stored", "bits_stored"),
    ("Photometric interpretation", "photometric_interpretation"),
    ("Transfer syntax", "transfer_syntax"), ("Series number", "series_number"),
    ("Instance number", "instance_number"), ("Series description", "series_description"),
    ("SC SOP Instance UID", "sc_sop_instance_uid"), *MODEL_COLUMNS,
)  # fmt: skip


def write_report(path: Path, result: dict[str, Any]) -> list[str]:
    """Write the XLSX for an `analysis.analyze_study` result; returns the sheet names."""
    workbook = Workbook()
    studies = workbook.active
    assert studies is not None
    studies.title = "Studies"
    m = result["model"]
    stamp = {
        "ai_model": m.get("name") or m["display_name"],
        "ai_model_version": m["version"],
        "ai_untrained_demo": "yes" if m["untrained_demo"] else "no",
    }
    _table(studies, STUDY_COLUMNS, [_study_values(s, stamp) for s in result["studies"]])
    images = workbook.create_sheet("Images")
    _table(images, IMAGE_COLUMNS, [_image_values(i, stamp) for i in result["images"]])
    model = workbook.create_sheet("Model")
    rows = [
        ("Model", m["display_name"]), ("Version", m["version"]),
        ("Architecture", m["architecture"]),
        ("UNTRAINED DEMO", "yes: results carry no information" if m["untrained_demo"] else "no"),
        ("Threshold low (below: negative)", result["thresholds"]["low"]),
        ("Threshold high (at or above: positive)", result["thresholds"]["high"]),
        ("Confidence", "max(P, 1 - P): probability of the more likely class"),
        ("Processing time (ms)", result["processing_ms"]), ("Note", DISCLAIMER),
    ]  # fmt: skip
    _table(model, (("Item", "0"), ("Value", "1")), [list(r) for r in rows])
    workbook.save(path)
    return list(workbook.sheetnames)


def _study_values(study: dict[str, Any], stamp: dict[str, Any]) -> list[Any]:
    flat = {**study, **study.get("summary", {}), **stamp}
    flat["study_date"] = _date(flat.get("study_date"))
    return [_plain(flat.get(key)) for _, key in STUDY_COLUMNS]


def _date(value: Any) -> Any:
    """A DICOM date (YYYYMMDD) or an ISO date as a spreadsheet date, shown in the reader's own
    format; anything else as the text it is."""
    for layout in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(str(value), layout).date()
        except ValueError:
            continue
    return value


def _image_values(image: dict[str, Any], stamp: dict[str, Any]) -> list[Any]:
    flat = {**image.get("metadata", {}), **image, **stamp}
    return [_plain(flat.get(key)) for _, key in IMAGE_COLUMNS]


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def _table(sheet: Worksheet, columns: Any, rows: list[list[Any]]) -> None:
    sheet.append([title for title, _ in columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for values in rows:
        sheet.append([None] * len(values))
        for cell, value in zip(sheet[sheet.max_row], values, strict=True):
            _set(cell, value)
    for index, (title, _) in enumerate(columns, start=1):
        letter = sheet.cell(row=1, column=index).column_letter
        sheet.column_dimensions[letter].width = min(60, max(12, len(title) + 2))
    sheet.freeze_panes = "A2"


def _set(cell: Cell, value: Any) -> None:
    cell.value = value
    if isinstance(value, str):
        cell.data_type = "s"  # never a formula, whatever the text starts with
