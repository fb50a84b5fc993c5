"""What was uploaded, by its content (never its name), and the error every analysis step
raises: `AnalysisError` carries the HTTP status and the message code of the answer."""

from __future__ import annotations

import io
from enum import StrEnum

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomnode.ingest.admission import StoreStatus


class UploadKind(StrEnum):
    DICOM = "dicom"
    PNG = "png"
    JPEG = "jpeg"
    BMP = "bmp"
    TIFF = "tiff"
    ZIP = "zip"


_MAGIC: tuple[tuple[bytes, UploadKind], ...] = (
    (b"\x89PNG\r\n\x1a\n", UploadKind.PNG),
    (b"\xff\xd8\xff", UploadKind.JPEG),
    (b"BM", UploadKind.BMP),
    (b"II*\x00", UploadKind.TIFF),
    (b"MM\x00*", UploadKind.TIFF),
    (b"PK\x03\x04", UploadKind.ZIP),
    (b"PK\x05\x06", UploadKind.ZIP),  # an empty archive
)


class AnalysisError(Exception):
    """The upload cannot be analysed; `status` is the HTTP answer, `code` names the message
    and `params` fill it in (never patient data)."""

    def __init__(self, status: int, code: str, **params: object) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.params = params

    @classmethod
    def refused(cls, status: StoreStatus, reason: str, code: str = "file_refused") -> AnalysisError:
        """Admission refused the file: 413 for a size limit (0xA700), else 422."""
        http = 413 if status == StoreStatus.OUT_OF_RESOURCES else 422
        return cls(http, code, reason=reason)


def sniff(data: bytes) -> UploadKind | None:
    """The kind of upload by its content (never by its name); None if not one we take."""
    if data[128:132] == b"DICM":
        return UploadKind.DICOM
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return UploadKind.DICOM if _raw_dicom(data) is not None else None


def _raw_dicom(data: bytes) -> Dataset | None:
    """A DICOM dataset without the Part 10 preamble and meta header, if `data` is one."""
    try:
        ds = dcmread(io.BytesIO(data), force=True)
        if "PixelData" in ds and "SOPClassUID" in ds and "Rows" in ds:
            return ds
    except Exception:  # pydicom raises many types on garbage: then it is not DICOM
        return None
    return None


def as_part10(data: bytes) -> bytes:
    """`data` as a DICOM Part 10 file (a bare dataset gets a preamble and meta header)."""
    if data[128:132] == b"DICM":
        return data
    ds = _raw_dicom(data)
    if ds is None:
        raise AnalysisError(415, "unsupported_format")
    if getattr(ds.get("PixelData"), "is_undefined_length", False):
        raise AnalysisError(422, "dicom_unreadable",
                            reason="compressed pixel data without a transfer syntax")  # fmt: skip
    implicit, little = ds.original_encoding
    if little is False:
        syntax = ExplicitVRBigEndian
    else:
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except (ValueError, AttributeError, TypeError) as exc:
        raise AnalysisError(422, "dicom_unreadable", reason="incomplete DICOM dataset") from exc
    return buffer.getvalue()
