"""Small real radiographs for operations tests: pydicom-data's RG3 CR, pixels decimated 6×.

Bursts of 50 images and PHI canaries need many distinct instances that the node classifies in
a fraction of a second each; the pixels stay those of a real CR (MONOCHROME1, 10-bit).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pydicom

from tests.support.data import RG3_UNCR, new_uid, testdata


def small_cr(dst: Path, *, study_uid: str, sop_uid: str | None = None, **attrs: Any) -> Path:
    """A 294×294 copy of RG3_UNCR with new UIDs (and any attributes given, by keyword): above
    the model card's default `min_image_size` (256), so the node classifies it."""
    ds = pydicom.dcmread(testdata(RG3_UNCR))
    pixels = ds.pixel_array[::6, ::6].copy()
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = new_uid("small_cr series", study_uid)
    ds.SOPInstanceUID = sop_uid or new_uid("small_cr", dst.resolve())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def cropped_cr(dst: Path, *, side: int, **attrs: Any) -> Path:
    """RG3_UNCR's centre, `side` x `side` px (real pixels at full resolution), new SOP Instance
    UID (and any attributes given, by keyword): e.g. around the model card's min_image_size."""
    ds = pydicom.dcmread(testdata(RG3_UNCR))
    pixels = ds.pixel_array
    top, left = (pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2
    ds.PixelData = pixels[top : top + side, left : left + side].copy().tobytes()
    ds.Rows = ds.Columns = side
    ds.SOPInstanceUID = new_uid("cropped_cr", dst.resolve())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def db_rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a query on a node's SQLite database (read-only use while the node runs)."""
    with sqlite3.connect(db, timeout=30) as conn:
        return list(conn.execute(sql, args))
