"""A patient list for data sets whose images do not say whose they are.

A patient-level split needs to know which images belong to one patient. DICOM files carry a
PatientID; JPEG/PNG exports (FracAtlas, most public sets, a site's anonymised export) do not.
A site that keeps the mapping can give it as a CSV file, named in the training configuration
as `[data] group_by = "patients.csv"` (a path relative to the data folder, or absolute):

    image_id,patient_id          (image_id: the file name, as in FracAtlas's dataset.csv)
    IMG0000019.jpg,P0001
    ...
or
    path,patient_id              (path: relative to the data folder, e.g. fracture/a.png)

Every image of the data set must be listed: an image of unknown patient could share a patient
with another split, so a partial list would not give a patient-level split. Patient ids are
only ever kept as hashes (see `training.data`).
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

#: A `group_by` value naming a file (rather than a mode or a dataset.csv column).
PATIENT_CSV_SUFFIX = ".csv"
PATIENT_COLUMN = "patient_id"
KEY_COLUMNS = ("path", "image_id")


class PatientListError(ValueError):
    """The patient list cannot be read or does not cover the data; the message says why."""


def is_patient_csv(group_by: str) -> bool:
    return group_by.lower().endswith(PATIENT_CSV_SUFFIX)


def patient_csv_path(root: Path, group_by: str) -> Path:
    path = Path(group_by).expanduser()
    return path if path.is_absolute() else root / path


def read_patient_csv(path: Path) -> tuple[str, dict[str, str]]:
    """(key column, {key: patient id}); the key column is `path` or `image_id`."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    except OSError as exc:
        raise PatientListError(f"cannot read patient list {path}: {exc}") from exc
    key = next((c for c in KEY_COLUMNS if c in columns), "")
    if not key or PATIENT_COLUMN not in columns:
        raise PatientListError(
            f"patient list {path.name} needs a '{PATIENT_COLUMN}' column and a 'path' or "
            "'image_id' column"
        )
    mapping: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        image, patient = (row.get(key) or "").strip(), (row.get(PATIENT_COLUMN) or "").strip()
        if not image or not patient:
            raise PatientListError(f"patient list {path.name}, line {number}: empty value")
        if mapping.setdefault(image, patient) != patient:
            raise PatientListError(
                f"patient list {path.name}, line {number}: {image} is listed with two patients"
            )
    return key, mapping


def patients_of(paths: list[str], *, key: str, mapping: dict[str, str], source: str) -> list[str]:
    """The patient of each image path (relative, forward slashes); every one must be listed."""
    found, missing = [], []
    for path in paths:
        lookup = path if key == "path" else PurePosixPath(path).name
        patient = mapping.get(lookup, "")
        if not patient:
            missing.append(path)
        found.append(patient)
    if missing:
        raise PatientListError(
            f"{len(missing)} images are not in the patient list {source} (e.g. {missing[0]}): "
            "a patient-level split needs the patient of every image"
        )
    return found
