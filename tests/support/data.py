"""Real DICOM test files (pydicom-data, deid-data, pydicom) and ways to make more of them.

The radiographs are real CR/DX images; their patient names are test values, but tests still
treat them as PHI (never expected in logs).

- `RG3_*`: CR extremity, MONOCHROME1, 10-bit. UNCR uncompressed, J2KR JPEG 2000 lossless
  (pixel-equal to UNCR), J2KI JPEG 2000 lossy, UNCI its decompressed lossy version.
- `RG1_*`: CR chest, 15-bit, same variants.
- `cat_dx()`: a DX For Presentation (deid-data), uncompressed, 12-bit MONOCHROME2.
- `ct_small()`: a CT (not a radiograph: the node must skip it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

# A tiny timm architecture for tests where the network does not matter.
TINY_ARCH = "test_efficientnet"

RG3_UNCR = "RG3_UNCR.dcm"
RG3_J2KR = "RG3_J2KR.dcm"
RG3_J2KI = "RG3_J2KI.dcm"
RG3_UNCI = "RG3_UNCI.dcm"
RG1_UNCR = "RG1_UNCR.dcm"
RG1_J2KR = "RG1_J2KR.dcm"
RG1_J2KI = "RG1_J2KI.dcm"
RG1_UNCI = "RG1_UNCI.dcm"

_INSTALL_HINT = "run `make test`, which installs the test extras (pydicom-data, deid-data)"


def tiny_arch() -> str:
    """Name of the tiny timm architecture (same as `TINY_ARCH`)."""
    return TINY_ARCH


def testdata(name: str) -> Path:
    """Path of a pydicom test file by name (pydicom-data's RG*.dcm, or pydicom's own)."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if not isinstance(found, str):
        raise FileNotFoundError(f"pydicom test file {name!r} not found; {_INSTALL_HINT}")
    return Path(found)


testdata.__test__ = False  # type: ignore[attr-defined]  # not a pytest test function


def cat_dx() -> Path:
    """deid-data's animals/cat.dcm: a real DX For Presentation radiograph."""
    try:
        from deid_data.data import get_dataset
    except ImportError as exc:
        raise FileNotFoundError(f"deid-data is not installed; {_INSTALL_HINT}") from exc
    path = Path(get_dataset("animals")) / "cat.dcm"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; {_INSTALL_HINT}")
    return path


def ct_small() -> Path:
    """pydicom's CT_small.dcm (a CT slice, to check that non-radiographs are skipped)."""
    return testdata("CT_small.dcm")


def new_uid(*seed: object) -> str:
    """A valid UID under pydicom's root, deterministic for the same seed values."""
    return str(generate_uid(PYDICOM_ROOT_UID, entropy_srcs=[str(s) for s in seed]))


def copy_with_new_uids(
    src: str | Path,
    dst: str | Path,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    **attrs: Any,
) -> Path:
    """Write a distinct instance of a real file: same pixels, same transfer syntax.

    `sop_uid` defaults to a new UID derived from the destination path (so it is distinct yet
    reproducible); `study_uid` and `series_uid` are kept unless given. Other keyword
    arguments set DICOM attributes by keyword (`PatientID="X"`, `InstanceNumber=2`); None
    deletes the attribute. Compressed pixel data is copied byte for byte, never re-encoded.
    Returns `dst`.
    """
    dst = Path(dst)
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = sop_uid or new_uid("copy_with_new_uids", dst.resolve())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    if series_uid is not None:
        ds.SeriesInstanceUID = series_uid
    for keyword, value in attrs.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst
